"""Time of the GOPT helper's predictions (apa.gopt) per clip: one clip at a time (the app) and a
whole split in batches (evaluation), on the shipped adapter's fold models.

    python -m bench.gopt_speed [--adapter assets/apa-mini-adapter] [--features runs/align/so762.npz] [--out FILE]

The features file is what training.align_corpus writes; only its features are used (no audio).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import publish


def main(argv: list[str] | None = None) -> None:
    from apa.align import load_corpus_features
    from apa.config import DEFAULT_ADAPTER
    from apa.gopt import GOPTEnsemble, Utterance

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", default=None, help="adapter dir holding gopt.json (default: the shipped one)")
    ap.add_argument("--features", required=True)
    ap.add_argument("--clips", type=int, default=200, help="clips timed one at a time")
    ap.add_argument("--out", default="bench/results/gopt_speed.md")
    args = ap.parse_args(argv)
    ens = GOPTEnsemble.load(args.adapter or DEFAULT_ADAPTER)
    if ens is None:
        raise SystemExit("no GOPT helper in that adapter")
    utts = [Utterance(c.features, c.symbols, np.asarray(c.word, np.int64)) for c in load_corpus_features(args.features).values()]
    ens.predict(utts[:4])  # warm-up
    t0 = time.perf_counter()
    for u in utts[: args.clips]:
        ens.predict([u])
    one = (time.perf_counter() - t0) / min(args.clips, len(utts))
    t0 = time.perf_counter()
    ens.predict(utts)
    whole = time.perf_counter() - t0
    lines = [
        "# GOPT helper: prediction time",
        "",
        f"{len(ens.models)} fold models, {len(utts)} clips of `{args.features}`, one CPU thread (`GOPTEnsemble.predict`).",
        "",
        "| how | time |",
        "|---|---:|",
        f"| one clip at a time (mean of {min(args.clips, len(utts))}) | {1000 * one:.1f} ms per clip |",
        f"| all {len(utts)} clips in batches of 64 | {whole:.2f} s |",
    ]
    publish(lines, args.out)


if __name__ == "__main__":
    main()
