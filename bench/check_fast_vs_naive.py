"""Do the fast decoder and the reference decoder give the same scores? Corpus clips through both, with apa-mini.

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.check_fast_vs_naive [--n 12] [--seed 0]     # clip by clip
    python -m bench.check_fast_vs_naive --n 256 --batch 128 --dtype float32 --data DIR       # GPU: clips together

Clip by clip: per clip, slots, greedy values identical?, max |expected-value difference| over all slots, max
|probability difference|, the fast decoder's passes and LLM tokens and the reference decoder's steps and
tokens. --batch N: the clips through `read_many` in batches of N with both (the fast one decoding a batch's
clips together), one summary line. Exits with status 1 if any greedy value differs or an expected value
differs by more than --tol. (The file keeps its old name, "naive" = the reference decoder, for the
commands and result files that use it.)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from apa import config

REPO = config.REPO_ROOT


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=None, help="Speechocean762 root (default: $APA_SO762_DIR, else ../shared/speechocean762)")
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--device", default=None, help="default: cuda when available")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on a GPU, float32 on a CPU")
    ap.add_argument("--batch", type=int, default=0,
                    help="> 0: score the n clips in batches of this size through read_many (clips decoded together), one summary line")
    ap.add_argument("--out", type=Path, default=None, help="default: bench/results/fast_vs_naive[_batched].md")
    args = ap.parse_args()

    import numpy as np

    from apa.data import read_kaldi
    from apa.mini import assemble_apa_mini
    from apa.scorer import AudioLMMScorer, DecodeOptions

    out = args.out or REPO / "bench" / "results" / ("fast_vs_naive_batched.md" if args.batch else "fast_vs_naive.md")
    recs = read_kaldi(config.corpus_dir(args.data), "test")
    pick = np.random.default_rng(args.seed).choice(len(recs), args.n, replace=False)
    fast = AudioLMMScorer.from_pretrained(assemble_apa_mini(), config.DEFAULT_ADAPTER, device=args.device, dtype=args.dtype,
                                          options=DecodeOptions(fast=True, batch_size=max(args.batch, 1), batch_clips=bool(args.batch)))
    reference = AudioLMMScorer(fast.model, fast.processor, name=fast.name, options=DecodeOptions(fast=False, batch_size=max(args.batch, 1)))
    dev = str(fast.device) + (f" ({torch.cuda.get_device_name()})" if fast.device.type == "cuda" else "")
    where = f"{dev}, {str(fast.model.dtype).removeprefix('torch.')}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}"
    if args.batch:
        sel = [recs[int(i)] for i in pick]
        audios = [r.audio() for r in sel]
        refs = [r.reference for r in sel]
        t = time.perf_counter()
        rf = fast.read_many(audios, refs)
        tf = time.perf_counter() - t
        t = time.perf_counter()
        rn = reference.read_many(audios, refs)
        tn = time.perf_counter() - t
        n_slots = sum(len(a) for a in rf)
        differ = sum(a.greedy != b.greedy for x, y in zip(rf, rn) for a, b in zip(x, y))
        de = max(abs(a.expected - b.expected) for x, y in zip(rf, rn) for a, b in zip(x, y))
        lines = [
            f"# Fast (clips decoded together) vs reference decoder, {args.n} Speechocean762 test clips ({fast.name}; {where})",
            "",
            f"`python -m bench.check_fast_vs_naive --n {args.n} --batch {args.batch}"
            + (f" --device {args.device}" if args.device else "") + (f" --dtype {args.dtype}" if args.dtype else "") + "`",
            "",
            "| clips | slots | batch | greedy values differing | max abs(d expected) | fast (s) | reference (s) |",
            "|---|---|---|---|---|---|---|",
            f"| {args.n} | {n_slots} | {args.batch} | {differ} | {de:.1e} | {tf:.1f} | {tn:.1f} |",
        ]
        bad = int(differ > 0 or de > args.tol)
    else:
        lines = [
            f"# Fast vs reference decoder on {args.n} Speechocean762 test clips ({fast.name}; {where})",
            "",
            "| utterance | seconds | slots | greedy identical | max abs(d expected) | max abs(d prob) | fast passes / tokens | reference steps / tokens |",
            "|---|---|---|---|---|---|---|---|",
        ]
        worst_e, bad = 0.0, 0
        for i in pick:
            r = recs[int(i)]
            audio = r.audio()
            rf = fast.read_slots([audio], [r.reference])[0]
            sf = dict(fast.stats)
            rn = reference.read_slots([audio], [r.reference])[0]
            sn = dict(reference.stats)
            same = all(a.greedy == b.greedy for a, b in zip(rf, rn)) and len(rf) == len(rn)
            de = max(abs(a.expected - b.expected) for a, b in zip(rf, rn))
            dp = max(float(np.abs(a.probs - b.probs).max()) for a, b in zip(rf, rn))
            worst_e = max(worst_e, de)
            bad += (not same) or de > args.tol
            lines.append(f"| {r.utt_id} | {len(audio) / 16000:.2f} | {len(rf)} | {'yes' if same else 'NO'} | {de:.1e} | {dp:.1e} "
                         f"| {sf['passes']} / {sf['llm_tokens']} | {sn['forwards']} / {sn['llm_tokens']} |")
            print(lines[-1], flush=True)
        lines += ["", f"worst abs(d expected) {worst_e:.1e}; clips failing (greedy differs or abs(dE) > {args.tol:g}): {bad}"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-3:]))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
