"""Word times: do the alignment's word starts and ends agree with an independent second aligner?

    python -m bench.word_times [--n 20] [--out bench/results/word_times.md]

On N Speechocean762 test clips spread evenly over the split, the word times that the app shows
(`apa.align.align` -> `apa.annotate`) against those of Whisper-base (the same CTranslate2 weights
as apa-mini's encoder, `requirements-weights.txt`, run whole through `faster_whisper` with
`word_timestamps=True`: its cross-attention alignment of the words it transcribes; an acoustic
model and method that share nothing with pocketsphinx). Whisper's words are matched to the
reference words by text (difflib, exact after normalising); only matched words are compared.
Reported: share of word starts, of word ends, and of words (both edges) within 0.1 s; median
absolute differences; and the same shares after removing the median signed difference of starts
and of ends (a constant lead of Whisper's times, two numbers fitted on these words). Also, from bench.gop_check, the first start / last end against Silero
VAD's speech span and the pauses found from frame energy (silence gaps between words).
Needs `faster_whisper` (pip install faster-whisper; not a dependency of the app).
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import os
import re
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from bench.common import publish  # noqa: E402

TOL_S = 0.1
REPO = Path(__file__).resolve().parents[1]


def _norm(w: str) -> str:
    return re.sub(r"[^a-z']", "", w.lower())


def whisper_words(model, audio: np.ndarray, text: str) -> list[tuple[str, float, float]]:
    segments, _info = model.transcribe(
        audio, language="en", beam_size=1, word_timestamps=True, condition_on_previous_text=False,
        vad_filter=False, initial_prompt=None,
    )  # fmt: skip
    return [(_norm(w.word), float(w.start), float(w.end)) for s in segments for w in (s.words or ())]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "word_times.md"))
    args = ap.parse_args(argv)

    from faster_whisper import WhisperModel

    from apa.align import align, pocketsphinx_version
    from apa.config import corpus_dir
    from apa.data import load_split
    from apa.mini.sources import joined_whisper_ct2
    from bench.gop_check import word_time_check

    records = load_split(corpus_dir(), "test")
    step = max(len(records) // args.n, 1)
    chosen = records[::step][: args.n]
    starts, ends, both, rows, items = [], [], [], [], []
    n_words = n_matched = 0
    with joined_whisper_ct2() as d:
        model = WhisperModel(str(d), device="cpu", compute_type="int8", cpu_threads=1)
        for r in chosen:
            audio = r.audio()
            ref = r.reference
            al = align(audio, ref)
            items.append((audio, al))
            if not al.ok:
                rows.append(f"| {r.utt_id} | {r.text} | not aligned | |")
                continue
            mine = [(_norm(w.text), w.start, w.end) for w in al.words]
            theirs = whisper_words(model, audio, r.text)
            n_words += len(mine)
            sm = difflib.SequenceMatcher(a=[m[0] for m in mine], b=[t[0] for t in theirs], autojunk=False)
            k = 0
            for block in sm.get_matching_blocks():
                for i in range(block.size):
                    m, t = mine[block.a + i], theirs[block.b + i]
                    ds, de = m[1] - t[1], m[2] - t[2]
                    starts.append(ds)
                    ends.append(de)
                    both.append(max(abs(ds), abs(de)) <= TOL_S)
                    k += 1
            n_matched += k
            rows.append(f"| {r.utt_id} | {r.text} | {k}/{len(mine)} | "
                        f"{np.mean([b for b in both[-k:]]) if k else float('nan'):.2f} |")
    s, e = np.abs(starts), np.abs(ends)
    # Whisper's word times carry a constant lead (its median offset): the same figures with it removed
    cs, ce = np.abs(np.array(starts) - np.median(starts)), np.abs(np.array(ends) - np.median(ends))
    vad = word_time_check(items)
    out = {
        "clips": len(chosen), "words": n_words, "matched": n_matched,
        "start_within": float(np.mean(s <= TOL_S)), "end_within": float(np.mean(e <= TOL_S)),
        "word_within": float(np.mean(both)), "start_median_abs": float(np.median(s)),
        "end_median_abs": float(np.median(e)), "start_median_signed": float(np.median(starts)),
        "end_median_signed": float(np.median(ends)),
        "start_within_offset": float(np.mean(cs <= TOL_S)), "end_within_offset": float(np.mean(ce <= TOL_S)),
        "word_within_offset": float(np.mean(np.maximum(cs, ce) <= TOL_S)),
    }  # fmt: skip
    lines = [
        "# Word times against a second aligner (Whisper-base cross-attention)",
        "",
        f"`python -m bench.word_times --n {args.n}`, {dt.date.today().isoformat()}, pocketsphinx "
        f"{pocketsphinx_version()}; {len(chosen)} Speechocean762 test clips spread evenly over the split; "
        f"{n_matched} of {n_words} words matched by text to Whisper's words.",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| words with start and end both within {TOL_S} s | {out['word_within']:.2f} |",
        f"| word starts within {TOL_S} s | {out['start_within']:.2f} |",
        f"| word ends within {TOL_S} s | {out['end_within']:.2f} |",
        f"| median abs start difference (s) | {out['start_median_abs']:.3f} |",
        f"| median abs end difference (s) | {out['end_median_abs']:.3f} |",
        f"| median signed start difference, ours - Whisper (s) | {out['start_median_signed']:.3f} |",
        f"| median signed end difference, ours - Whisper (s) | {out['end_median_signed']:.3f} |",
        f"| after removing those two median offsets: words with both edges within {TOL_S} s | "
        f"{out['word_within_offset']:.2f} |",
        f"| after removing them: starts / ends within {TOL_S} s | {out['start_within_offset']:.2f} / "
        f"{out['end_within_offset']:.2f} |",
        "",
        "Against silence (bench.gop_check.word_time_check: Silero VAD's speech span, frame-energy pauses):",
        "",
        "```",
        *[f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}" for k, v in vad.items()],
        "```",
        "",
        "| clip | text | words matched | both edges within 0.1 s |",
        "|---|---|---:|---:|",
        *rows,
    ]
    publish(lines, args.out)
    return out


if __name__ == "__main__":
    main()
