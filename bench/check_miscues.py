"""Transcription word error rate, miscue detection and the "does not match" guard on Speechocean762.

    nice -n 10 python -m bench.check_miscues [--n 200] [--edited 100]
        -> bench/results/miscues.md (+ bench/results/transcripts_so762_test.jsonl)

Clips: `--n` test-split utterances, every (2500 // n)-th in corpus order, loaded as the app loads a
recording (`apa.audio.load_audio`: silence trimmed). Each clip is transcribed once by the default
transcriber (`apa.transcribe.load_transcriber`, one CPU thread) and the transcripts are kept in
the JSONL file beside the results (given again with `--transcripts`, nothing is transcribed).

Checks, all through `apa.miscues.find_miscues` (what `apa.reading` applies to results):

* WER of the transcripts against the reference texts (both normalised by `apa.text.normalize`),
  over all n clips: (substitutions + deletions + insertions) / reference words.
* On the first `--edited` clips, each reference text edited three ways (seeded):
  - "word removed": one word taken out of the text, so the speaker says one word more: the
    check expects exactly that word as an insertion at its position. Recall = expected insertions
    found; precision = expected insertions found / all insertions reported on these texts.
  - "word added": a word (from another clip's text) put into the text, which the speaker did
    not say: the check expects that word reported omitted. Recall and precision likewise.
* On all n clips, the text of another clip with another sentence: the guard (`Miscues.mismatch`)
  should fire.
* The guard on the clips with their true texts (all n): it should never fire. Also reported: the
  insertions and omissions found with the true texts (all of them false alarms, or real miscues
  of the speaker, which Speechocean762 does not label).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import statistics
import time
from pathlib import Path

from apa import config

REPO = config.REPO_ROOT
RESULTS = REPO / "bench" / "results"


def pick_records(n: int, offset: int = 0) -> list:
    """Every (2500 // n)-th test utterance from `offset` on."""
    from apa.data import read_kaldi

    recs = read_kaldi(config.corpus_dir(), "test")
    step = max(1, len(recs) // n)
    return recs[offset::step][:n]


def transcribe_all(recs: list, out: Path) -> list[dict]:
    """Transcribe each record once (resuming from `out`), one JSON line per clip."""
    from apa.audio import load_audio
    from apa.transcribe import load_transcriber

    done = {}
    if out.is_file():
        for line in out.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            done[d["utt_id"]] = d
    todo = [r for r in recs if r.utt_id not in done]
    if todo:
        tr = load_transcriber(threads=1)
        with out.open("a", encoding="utf-8") as f:
            for k, r in enumerate(todo):
                audio = load_audio(str(r.audio_source), check=False)
                t0 = time.perf_counter()
                h = tr.transcribe(audio)
                d = {"utt_id": r.utt_id, "text": r.text, "audio_s": round(len(audio) / 16000, 3),
                     "transcribe_s": round(time.perf_counter() - t0, 4), "heard": h.text,
                     "words": [[w.text, w.start, w.end, w.probability] for w in h.words],
                     "no_speech_prob": round(h.no_speech_prob, 4), "avg_logprob": round(h.avg_logprob, 4),
                     "model": h.model}
                f.write(json.dumps(d) + "\n")
                f.flush()
                done[r.utt_id] = d
                if k % 20 == 0:
                    print(f"transcribed {k + 1}/{len(todo)}", flush=True)
    return [done[r.utt_id] for r in recs]


def heard_words(d: dict) -> list:
    from apa.transcribe import HeardWord

    return [HeardWord(w, s, e, p) for w, s, e, p in d["words"]]


def wer(items: list[dict]) -> tuple[float, int, int]:
    from rapidfuzz.distance import Levenshtein

    from apa.text import normalize

    errors = words = 0
    for d in items:
        ref = d["text"].split()
        errors += Levenshtein.distance(ref, normalize(d["heard"]))
        words += len(ref)
    return errors / words, errors, words


def prf(tp: int, reported: int, expected: int) -> str:
    p = tp / reported if reported else float("nan")
    r = tp / expected if expected else float("nan")
    return f"{p:.2f} ({tp}/{reported}) | {r:.2f} ({tp}/{expected})"


def run_checks(items: list[dict], n_edited: int, seed: int) -> dict:
    from apa.miscues import find_miscues

    rng = random.Random(seed)
    out: dict = {"n": len(items), "n_edited": min(n_edited, len(items))}
    # true texts: the guard must not fire
    true = [find_miscues(d["text"].split(), heard_words(d)) for d in items]
    out["true_fired"] = sum(m.mismatch for m in true)
    out["true_ratio"] = sorted(m.match_ratio for m in true)[:5]
    out["true_ins"] = sum(len(m.insertions) for m in true)
    out["true_omi"] = sum(len(m.omitted) for m in true)
    out["true_empty"] = sum(not m.heard for m in true)
    edited = items[: out["n_edited"]]
    all_words = sorted({w for d in items for w in d["text"].split()})
    # word removed from the text -> an insertion of that word at its position
    tp = reported = expected = 0
    for d in edited:
        ref = d["text"].split()
        if len(ref) < 2:
            continue
        k = rng.randrange(len(ref))
        m = find_miscues(ref[:k] + ref[k + 1:], heard_words(d))
        expected += 1
        reported += len(m.insertions)
        tp += any(i.text == ref[k] and i.position == k for i in m.insertions)
    out["removed"] = (tp, reported, expected)
    # word added to the text -> that word omitted
    tp = reported = expected = 0
    for d in edited:
        ref = d["text"].split()
        w = rng.choice([x for x in all_words if x not in ref])
        k = rng.randrange(len(ref) + 1)
        m = find_miscues(ref[:k] + [w] + ref[k:], heard_words(d))
        expected += 1
        reported += len(m.omitted)
        tp += k in m.omitted
    out["added"] = (tp, reported, expected)
    # a different sentence
    fired = 0
    ratios = []
    for d in items:
        other = rng.choice([e for e in items if e["text"] != d["text"]])
        m = find_miscues(other["text"].split(), heard_words(d))
        fired += m.mismatch
        ratios.append(m.match_ratio)
    out["different_fired"] = fired
    out["different_ratio_max"] = sorted(ratios)[-5:]
    return out


def render(items: list[dict], res: dict, seed: int, offset: int = 0) -> str:
    import platform

    import ctranslate2

    from apa.miscues import MISMATCH_BELOW
    from bench.common import machine

    w, errors, words = wer(items)
    secs = [d["transcribe_s"] for d in items]
    audio_s = [d["audio_s"] for d in items]
    ne = res["n_edited"]
    lines = [
        "# Transcription, miscues and the mismatch guard on Speechocean762 (test split)",
        "",
        f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}; machine: {machine()}; "
        f"python {platform.python_version()}, ctranslate2 {ctranslate2.__version__}",
        f"- transcriber: {items[0]['model']} (apa.transcribe, int8, 1 thread); clips: {len(items)} test utterances "
        f"(every {2500 // len(items)}-th from {offset}), silence trimmed as the app does; edited-text checks on the first {ne}; seed {seed}",
        f"- command: `python -m bench.check_miscues --n {len(items)} --edited {ne}{f' --offset {offset}' if offset else ''}`",
        "",
        "| check | result |",
        "|---|---|",
        f"| transcription WER vs reference texts ({len(items)} clips) | **{w:.3f}** ({errors} errors / {words} words) |",
        f"| transcription time per clip, 1 thread (median / max) | {statistics.median(secs):.3f} s / {max(secs):.3f} s "
        f"(clips {statistics.median(audio_s):.1f} s median, {max(audio_s):.1f} s max) |",
        f"| mismatch guard fired, true texts ({len(items)} clips) | **{res['true_fired']}** "
        f"(lowest match ratios {', '.join(f'{r:.2f}' for r in res['true_ratio'])}; guard below {MISMATCH_BELOW:.2f}) |",
        f"| mismatch guard fired, a different sentence ({len(items)} clips) | **{res['different_fired']} / {len(items)}** "
        f"({100 * res['different_fired'] / len(items):.1f}%; highest match ratios {', '.join(f'{r:.2f}' for r in res['different_ratio_max'])}) |",
        f"| nothing heard (no words in the transcript) | {res['true_empty']} of {len(items)} |",
        "",
        "| edit of the reference text | what should be found | precision | recall |",
        "|---|---|---|---|",
        f"| one word removed ({ne} clips) | that word inserted, at its position | {prf(*res['removed'])} |",
        f"| one word added ({ne} clips) | that word omitted | {prf(*res['added'])} |",
        "",
        f"With the true texts the {len(items)} clips gave {res['true_ins']} insertions and {res['true_omi']} omissions "
        "(transcription errors, or the speakers' own miscues, which the corpus does not label). Precision counts every "
        "other insertion (omission) reported on the edited texts as a false one, so it is bounded by those.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--edited", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--offset", type=int, default=0, help="first utterance (another offset: other clips)")
    ap.add_argument("--transcripts", type=Path, default=RESULTS / "transcripts_so762_test.jsonl")
    ap.add_argument("--out", type=Path, default=RESULTS / "miscues.md")
    args = ap.parse_args(argv)
    items = transcribe_all(pick_records(args.n, args.offset), args.transcripts)
    res = run_checks(items, args.edited, args.seed)
    table = render(items, res, args.seed, args.offset)
    print(table)
    args.out.write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
