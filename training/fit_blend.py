"""Blend weights of the audio LMM and its GOPT helper, fitted per aspect on a held-out train fold.

    # 1. the helper's fold K of the train split (the speakers its fold-K model did not see)
    python -m training.fit_blend ids --gopt runs/gopt --features runs/feat/train.npz --fold 0 --out runs/blend/heldout.txt
    # 2. (GPU) an LMM trained without them (training.train --exclude_ids), scored on them, unblended,
    #    with the helper's out-of-fold columns (training.evaluate --split train --ids ... --evidence-oof runs/gopt
    #    --gopt-blend 0 --control none)
    # 3. the weight per aspect that maximises PCC on those clips (several folds' predictions: pooled)
    python -m training.fit_blend fit --predictions DIR/predictions.jsonl [DIR1/predictions.jsonl ...] --gopt runs/gopt --out runs/blend

`fit` writes blend.json (apa.gopt.BlendWeights: copy it into the adapter, where the scorer reads
it) and blend.md: PCC of each aspect over the weight grid on the held-out clips. Neither the
LMM nor the helper saw those clips' labels (the helper's columns there are its out-of-fold
predictions), so the weights are chosen without the test split.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from apa.gopt import BLEND_ASPECTS

GRID = tuple(np.round(np.arange(0.0, 1.0001, 0.05), 2))


def heldout_ids(gopt_dir: str, features: str, data: str, fold: int) -> list[str]:
    """The train utterances in fold `fold` of the helper's cross-fit (same speakers, folds and seed)."""
    from apa.gopt import GOPTConfig, fold_assignment
    from training.fit_gopt import utterances

    config = GOPTConfig.load(gopt_dir)
    resolved = Path(gopt_dir) / "resolved_config.json"
    seed = json.loads(resolved.read_text())["args"]["seed"] if resolved.is_file() else 0
    ids, speakers, _ = utterances(features, data, "train")
    folds = fold_assignment(speakers, config.folds, seed)
    return [u for u, f in zip(ids, folds) if f == fold]


def read_text(path: str) -> str:
    """A predictions file's text, gzipped or not."""
    import gzip

    return gzip.open(path, "rt").read() if str(path).endswith(".gz") else Path(path).read_text()


def aspect_pairs(rows: Sequence[dict], oof: dict[str, np.ndarray], records: dict) -> dict[str, tuple[np.ndarray, ...]]:
    """{aspect: (lmm, helper, label)} over the held-out clips, one entry per phone / word / clip."""
    from apa.gopt import SENTENCE_TARGETS, WORD_TARGETS

    out: dict[str, list[list[float]]] = {a: [[], [], []] for a in BLEND_ASPECTS}
    for row in rows:
        rec, pred = records[row["utt_id"]], oof.get(row["utt_id"])
        if pred is None:
            continue
        a = row["expected"]
        k = 0
        for w, lw in zip(a["words"], rec.labels.words):
            for ph, lp in zip(w["phones"], lw.phones):
                add(out["phone"], ph["score"], pred[k, 0], lp.score)
                k += 1
            first = pred[k - len(w["phones"])]
            for j, t in enumerate(WORD_TARGETS):
                add(out[f"word_{t}"], w[t], first[1 + j], getattr(lw, t))
        for j, t in enumerate(SENTENCE_TARGETS):
            add(out[f"sentence_{t}"], a["sentence"][t], pred[0, 1 + len(WORD_TARGETS) + j], getattr(rec.labels.sentence, t))
    return {k: tuple(np.asarray(v, np.float64) for v in vals) for k, vals in out.items()}


def add(bucket: list[list[float]], lmm, helper, label) -> None:
    if lmm is not None and label is not None and np.isfinite(helper):
        for b, v in zip(bucket, (lmm, helper, label)):
            b.append(float(v))


def fit_weights(pairs: dict[str, tuple[np.ndarray, ...]]) -> tuple[dict[str, float], dict[str, list[float]]]:
    """({aspect: weight with the highest PCC}, {aspect: PCC at each GRID weight})."""
    best, curves = {}, {}
    for aspect, (lmm, helper, label) in pairs.items():
        curve = [float(np.corrcoef((1 - w) * lmm + w * helper, label)[0, 1]) for w in GRID]
        curves[aspect] = curve
        best[aspect] = float(GRID[int(np.nanargmax(curve))])
    return best, curves


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m training.fit_blend", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    ids = sub.add_parser("ids", help="write the held-out fold's utterance ids")
    ids.add_argument("--gopt", required=True)
    ids.add_argument("--features", required=True, help="the train split's alignment features")
    ids.add_argument("--data", default="")
    ids.add_argument("--fold", type=int, default=0)
    ids.add_argument("--out", required=True)
    fit = sub.add_parser("fit", help="fit the weights from the held-out clips' unblended predictions")
    fit.add_argument("--predictions", required=True, nargs="+",
                     help="training.evaluate predictions.jsonl (--gopt-blend 0; .gz too), one per held-out fold")
    fit.add_argument("--gopt", required=True, help="the helper's training.fit_gopt dir (oof.npz)")
    fit.add_argument("--data", default="")
    fit.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    if args.command == "ids":
        chosen = heldout_ids(args.gopt, args.features, args.data, args.fold)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(chosen) + "\n")
        print(f"{len(chosen)} utterances in fold {args.fold} -> {args.out}")
        return

    from apa.config import corpus_dir
    from apa.data import load_split
    from apa.gopt import BlendWeights
    from training.fit_gopt import load_oof

    rows = [json.loads(line) for path in args.predictions for line in read_text(path).splitlines() if line]
    if len({r["utt_id"] for r in rows}) != len(rows):
        raise SystemExit("a clip appears in more than one predictions file: give each held-out fold once")
    records = {r.utt_id: r for r in load_split(corpus_dir(args.data or None), "train")}
    pairs = aspect_pairs(rows, load_oof(args.gopt), records)
    best, curves = fit_weights(pairs)
    weights = BlendWeights(**best)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights.save(out)
    md = [f"# Blend weights fitted on {len(rows)} held-out train clips\n",
          "PCC of (1 - w) * LMM + w * helper on the held-out clips; the chosen weight is the best.\n",
          "| aspect | n | w = 0 (LMM) | w = 0.5 | w = 1 (helper) | chosen w | PCC at chosen |", "|---|---:|---:|---:|---:|---:|---:|"]
    half = GRID.index(0.5)
    for a, c in curves.items():
        md.append(f"| {a} | {len(pairs[a][0])} | {c[0]:.3f} | {c[half]:.3f} | {c[-1]:.3f} | {best[a]:.2f} | {max(c):.3f} |")
    (out / "blend.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))

if __name__ == "__main__":
    sys.exit(main())
