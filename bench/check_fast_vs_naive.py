"""Do the fast and the naive (stock) paths give the same scores? Corpus clips through both, with apa-mini.

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.check_fast_vs_naive [--n 12] [--seed 0] [--out bench/results/fast_vs_naive.md]

Per clip: slots, greedy values identical?, max |expected-value difference| over all slots, max |probability
difference|, and the fast path's passes and LLM tokens. Exits with status 1 if any greedy value differs or an
expected value differs by more than --tol.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "speechocean762"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "fast_vs_naive.md")
    args = ap.parse_args()

    import numpy as np

    from apa.data import read_kaldi
    from apa.model import AudioLMMScorer, DecodeOptions, load_scorer

    recs = read_kaldi(CORPUS, "test")
    pick = np.random.default_rng(args.seed).choice(len(recs), args.n, replace=False)
    fast = load_scorer(options=DecodeOptions(fast=True))
    naive = AudioLMMScorer(fast.model, fast.processor, name=fast.name, options=DecodeOptions(fast=False))
    lines = [
        f"# Fast vs naive path on {args.n} Speechocean762 test clips ({fast.name}, CPU float32)",
        "",
        "| utterance | seconds | slots | greedy identical | max abs(d expected) | max abs(d prob) | fast passes / tokens | naive steps / tokens |",
        "|---|---|---|---|---|---|---|---|",
    ]
    worst_e, bad = 0.0, 0
    for i in pick:
        r = recs[int(i)]
        audio = r.audio()
        rf = fast.read_slots([audio], [r.reference])[0]
        sf = dict(fast.stats)
        rn = naive.read_slots([audio], [r.reference])[0]
        sn = dict(naive.stats)
        same = all(a.greedy == b.greedy for a, b in zip(rf, rn)) and len(rf) == len(rn)
        de = max(abs(a.expected - b.expected) for a, b in zip(rf, rn))
        dp = max(float(np.abs(a.probs - b.probs).max()) for a, b in zip(rf, rn))
        worst_e = max(worst_e, de)
        bad += (not same) or de > args.tol
        lines.append(f"| {r.utt_id} | {len(audio) / 16000:.2f} | {len(rf)} | {'yes' if same else 'NO'} | {de:.1e} | {dp:.1e} "
                     f"| {sf['passes']} / {sf['llm_tokens']} | {sn['forwards']} / {sn['llm_tokens']} |")
        print(lines[-1], flush=True)
    lines += ["", f"worst abs(d expected) {worst_e:.1e}; clips failing (greedy differs or abs(dE) > {args.tol:g}): {bad}"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(lines[-1])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
