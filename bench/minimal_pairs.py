"""Minimal pairs: does the scorer hear which sound was said?

    python -m bench.minimal_pairs [--adapter DIR|none] [--model ID|DIR] [--device cpu] [--limit N]
                                  [--cache DIR] [--verbose] [--out results.md] [--json results.json]
                                  [--gopt-blend W]   # 0: the LMM alone, 1: the GOPT helper alone

Every pair of `apa.minimal_pairs.PAIRS` is synthesised twice with espeak-ng from phoneme mnemonics
(see that module): the canonical reading of the sentence, and a reading with one phone of one word
replaced (R->L, TH->S, IH->IY, ...) or dropped. Both are scored against the canonical text. A
scorer that hears phones gives the changed word a lower accuracy and the changed phone a lower
score on the altered reading, and leaves the other words about where they were.

Reported (over the pairs that synthesised; pairs that failed are listed, never scored):
- word lower: share of pairs where the changed word's accuracy (0-10) is lower on the altered reading;
  phone lower: the same for the changed phone's score (0-2); a dropped phone is read at its slot in
  the reference, which still has it;
- "clearly" lower: lower by at least WORD_MARGIN / PHONE_MARGIN;
- mean drop: canonical minus altered, of the changed word's accuracy and of the changed phone's score;
- changed word |d| and other words |d|: mean absolute change of the accuracy of the changed word, and of
  the words that were not changed (a scorer that hears the change moves the first far more).
Also per substitution kind, and with --verbose one row per pair. Exit code 0 unless nothing scored.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apa.minimal_pairs import SynthesizedPair
    from apa.model import Scorer
    from apa.schema import Assessment

REPO = Path(__file__).resolve().parents[1]
WORD_MARGIN = 0.5  # accuracy points (0-10) for a "clearly lower" changed word
PHONE_MARGIN = 0.1  # score points (0-2) for a "clearly lower" changed phone


@dataclass(frozen=True)
class PairResult:
    """Scores of one pair: the changed word and phone on both readings, and the other words."""

    text: str
    word: str
    word_index: int
    phone: str
    phone_index: int
    change: str
    kind: str
    canonical_phonemes: str
    altered_phonemes: str
    word_canonical: float
    word_altered: float
    phone_canonical: float
    phone_altered: float
    others_abs_change: float | None  # mean over the other words; None for a one-word sentence

    @property
    def word_drop(self) -> float:
        """Canonical minus altered accuracy of the changed word."""
        return self.word_canonical - self.word_altered

    @property
    def phone_drop(self) -> float:
        """Canonical minus altered score of the changed phone."""
        return self.phone_canonical - self.phone_altered


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarize(results: list[PairResult]) -> dict[str, float | int | None]:
    """The report's figures over `results` (shares in [0, 1], means in score points)."""
    n = len(results)
    others = [r.others_abs_change for r in results if r.others_abs_change is not None]
    return {
        "pairs": n,
        "word_lower": sum(r.word_drop > 0 for r in results) / n if n else None,
        "word_clearly_lower": sum(r.word_drop >= WORD_MARGIN for r in results) / n if n else None,
        "phone_lower": sum(r.phone_drop > 0 for r in results) / n if n else None,
        "phone_clearly_lower": sum(r.phone_drop >= PHONE_MARGIN for r in results) / n if n else None,
        "word_drop_mean": _mean([r.word_drop for r in results]),
        "word_abs_change_mean": _mean([abs(r.word_drop) for r in results]),
        "phone_drop_mean": _mean([r.phone_drop for r in results]),
        "others_abs_change_mean": _mean(others),
    }


def _fmt(value: float | int | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def summary_table(results: list[PairResult]) -> str:
    """Markdown table: all pairs, then one row per substitution kind."""
    head = (
        "| pairs | n | word lower | word clearly lower | phone lower | phone clearly lower "
        "| word drop (mean) | phone drop (mean) | changed word abs(d) (mean) | other words abs(d) (mean) |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    by_kind: dict[str, list[PairResult]] = defaultdict(list)
    for r in results:
        by_kind[r.kind].append(r)
    rows = [("**all**", results)] + sorted(by_kind.items())
    lines = []
    for name, rs in rows:
        s = summarize(rs)
        lines.append(
            f"| {name} | {s['pairs']} | {_fmt(s['word_lower'])} | {_fmt(s['word_clearly_lower'])} "
            f"| {_fmt(s['phone_lower'])} | {_fmt(s['phone_clearly_lower'])} | {_fmt(s['word_drop_mean'])} "
            f"| {_fmt(s['phone_drop_mean'], 3)} | {_fmt(s['word_abs_change_mean'])} "
            f"| {_fmt(s['others_abs_change_mean'])} |"
        )
    return head + "\n".join(lines) + "\n"


def pair_table(results: list[PairResult]) -> str:
    """Markdown table, one row per pair."""
    head = (
        "| sentence | word | change | espeak (altered word) | word acc canonical / altered | "
        "phone canonical / altered | other words abs(d) |\n|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for r in results:
        altered_word = r.altered_phonemes.strip("[]").split(" ")[r.word_index]
        rows.append(
            f"| {r.text} | {r.word} ({r.phone}) | {r.change} | `{altered_word}` "
            f"| {r.word_canonical:.2f} / {r.word_altered:.2f} | {r.phone_canonical:.3f} / {r.phone_altered:.3f} "
            f"| {_fmt(r.others_abs_change)} |"
        )
    return head + "\n".join(rows) + "\n"


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()


def _git_rev() -> str:
    """The commit the report was made at, marked when the work tree has uncommitted changes."""
    try:
        rev, dirty = _git("rev-parse", "--short", "HEAD"), _git("status", "--porcelain")
    except OSError:
        return "unknown"
    return rev + ("+uncommitted changes" if dirty else "")


def score_pairs(scorer: Scorer, synthesized: list[SynthesizedPair]) -> list[PairResult]:
    """Score both readings of each `SynthesizedPair` against its canonical text (canonical readings
    shared by several pairs are scored once)."""
    first: dict[str, SynthesizedPair] = {}
    for s in synthesized:
        first.setdefault(s.canonical_phonemes, s)
    assessed = scorer.assess_batch([(s.canonical, s.pair.text) for s in first.values()])
    canonical_scores: dict[str, Assessment] = dict(zip(first, assessed))
    altered_scores = scorer.assess_batch([(s.altered, s.pair.text) for s in synthesized])
    results = []
    for s, alt in zip(synthesized, altered_scores):
        can = canonical_scores[s.canonical_phonemes]
        p = s.pair
        wc, wa = can.words[p.word_index], alt.words[p.word_index]
        others = [
            abs(a.accuracy - c.accuracy) for i, (c, a) in enumerate(zip(can.words, alt.words)) if i != p.word_index
        ]
        results.append(PairResult(
            text=p.text, word=wc.text, word_index=p.word_index, phone=wc.phones[p.phone_index].phone,
            phone_index=p.phone_index, change=p.change, kind=p.kind,
            canonical_phonemes=s.canonical_phonemes, altered_phonemes=s.altered_phonemes,
            word_canonical=float(wc.accuracy), word_altered=float(wa.accuracy),
            phone_canonical=float(wc.phones[p.phone_index].score), phone_altered=float(wa.phones[p.phone_index].score),
            others_abs_change=_mean(others),
        ))
    return results


def main(argv: list[str] | None = None) -> int:
    """Synthesise the pairs, score them, print (and optionally write) the report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="Hub id or local dir (default: apa-mini)")
    ap.add_argument("--adapter", default=None, help='PEFT adapter dir, or "none" (default: the shipped adapter)')
    ap.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    ap.add_argument("--batch-size", type=int, default=8, help="clips per scorer batch")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--limit", type=int, default=None, help="only the first N pairs")
    ap.add_argument("--gopt-blend", type=float, default=None,
                    help="the GOPT helper's weight in the scores (0: the LMM alone, 1: the helper alone; "
                         "default: the adapter's fitted weights)")
    ap.add_argument("--history", default=None, help="the word and phone slots' history (apa.scorer.DecodeOptions.history; "
                    "default: the scorer's default)")
    ap.add_argument("--cache", type=Path, default=None, help="directory for the synthesised WAVs (default: a temp dir)")
    ap.add_argument("--verbose", action="store_true", help="also print one row per pair")
    ap.add_argument("--out", type=Path, default=None, help="write the report (markdown) here")
    ap.add_argument("--json", type=Path, default=None, help="write the figures and per-pair rows (JSON) here")
    args = ap.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    from apa.minimal_pairs import PAIRS, SynthesisError, espeak_available, espeak_version, synthesize_pair
    from apa.model import DecodeOptions, load_scorer

    torch.set_num_threads(args.threads)
    if not espeak_available():
        print("espeak-ng is not installed; nothing to measure", file=sys.stderr)
        return 1
    pairs = PAIRS[: args.limit] if args.limit is not None else PAIRS

    t0 = time.perf_counter()
    synthesized, failed = [], []
    for pair in pairs:
        try:
            synthesized.append(synthesize_pair(pair, args.cache))
        except SynthesisError as exc:
            failed.append(str(exc))
            print(f"skipped: {exc}", file=sys.stderr)
    t_synth = time.perf_counter() - t0
    if not synthesized:
        print("no pair synthesised", file=sys.stderr)
        return 1

    t0 = time.perf_counter()
    options = DecodeOptions(batch_size=args.batch_size, gopt_blend=args.gopt_blend,
                            **({"history": args.history} if args.history else {}))
    scorer = load_scorer(args.model, args.adapter, device=args.device, options=options)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = score_pairs(scorer, synthesized)
    t_score = time.perf_counter() - t0

    figures = summarize(results)
    header = (
        f"# Minimal pairs: {scorer.name}\n\n"
        f"- date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}; repo {_git_rev()}\n"
        f"- scorer: {scorer.name} on {scorer.device}, torch threads {args.threads}; {espeak_version()}, voice en-us; "
        f"helper blend: {scorer.blend_weights}; history: {scorer.options.history}\n"
        f"- pairs: {len(results)} scored of {len(pairs)} (failed to synthesise: {len(failed)}); "
        f"synthesis {t_synth:.1f} s, model load {t_load:.1f} s, scoring {t_score:.1f} s "
        f"({len({r.canonical_phonemes for r in results}) + len(results)} clips)\n"
        f"- lower = altered reading scored below the canonical one; clearly lower = by at least "
        f"{WORD_MARGIN} (word accuracy, 0-10) / {PHONE_MARGIN} (phone score, 0-2); drop = canonical - altered\n\n"
    )
    report = header + summary_table(results)
    if failed:
        report += "\nFailed to synthesise:\n\n" + "\n".join(f"- {f}" for f in failed) + "\n"
    per_pair = "\n## Per pair\n\n" + pair_table(results)
    print(report + (per_pair if args.verbose else ""))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + per_pair)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "scorer": scorer.name, "device": str(scorer.device), "espeak": espeak_version(),
            "python": platform.python_version(), "repo": _git_rev(), "summary": figures,
            "by_kind": {k: summarize([r for r in results if r.kind == k]) for k in sorted({r.kind for r in results})},
            "failed": failed,
            "pairs": [asdict(r) | {"word_drop": r.word_drop, "phone_drop": r.phone_drop} for r in results],
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
