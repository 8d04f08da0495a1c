"""Where the audio LMM's phone readings go wrong: clips whose phones all read low, and the split of
phone PCC into between clips and within clips.

    # test split: the LMM's unblended readings against the helper's ensemble on the same clips
    python -m bench.phone_collapse --predictions results/apa-mini-v6-lmm/predictions.jsonl.gz --split test \
        --features runs/feat/test.npz --tower-states runs/tower/test.npz --gopt runs/gopt6
    # a held-out train fold: against the helper's out-of-fold predictions
    python -m bench.phone_collapse --predictions results/blend-fit-v6/heldout-lmm/predictions.jsonl.gz --split train \
        --oof runs/gopt6

Inputs: `training.evaluate` predictions made with `--gopt-blend 0` (the LMM's own reading), and the
GOPT helper's phone predictions for the same clips (its ensemble run on the split's features and
tower states, or its out-of-fold predictions for train clips). For every phone with a label:

- PCC of the LMM and of the helper over all phones, between clips (each phone given its clip's
  mean) and within clips (each phone minus its clip's mean);
- collapsed clips: the LMM's mean phone score more than COLLAPSE below the helper's. Their share,
  their label mean (are they poor readings?), and the speaker groups (first three digits of the
  id) they come from.

Prints a markdown report (and writes it to --out).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

COLLAPSE = 0.5  # phone-score points (0-2) the LMM's clip mean lies below the helper's


def read_rows(path: str) -> list[dict]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def helper_phones(args: argparse.Namespace) -> dict[str, np.ndarray]:
    """utt_id -> (n_phones,) the helper's phone predictions (label scale 0-2)."""
    from training.fit_gopt import load_oof, utterances

    if args.oof:
        return {u: p[:, 0] for u, p in load_oof(args.oof).items()}
    from apa.gopt import GOPTEnsemble

    ens = GOPTEnsemble.load(args.gopt)
    if ens is None:
        raise SystemExit(f"no GOPT helper in {args.gopt}")
    ids, _, utts = utterances(args.features, args.data, args.split, args.tower_states)
    return {u: p[:, 0] for u, p in zip(ids, ens.predict(utts))}


def per_clip(rows: Sequence[dict], helper: dict[str, np.ndarray], records: dict) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(utt_id, LMM, helper, label) phone scores of each clip, labelled and finite phones only."""
    out = []
    for row in rows:
        h, rec = helper.get(row["utt_id"]), records.get(row["utt_id"])
        if h is None or rec is None:
            continue
        lmm = np.array([p["score"] if p["score"] is not None else np.nan for w in row["expected"]["words"] for p in w["phones"]], float)
        lab = np.array([p.score if p.score is not None else np.nan for w in rec.labels.words for p in w.phones], float)
        if not len(lmm) == len(lab) == len(h):
            continue
        keep = np.isfinite(lmm) & np.isfinite(lab) & np.isfinite(h)
        if keep.any():
            out.append((row["utt_id"], lmm[keep], np.asarray(h, float)[keep], lab[keep]))
    return out


def split_pcc(pred: Sequence[np.ndarray], label: Sequence[np.ndarray]) -> tuple[float, float, float]:
    """(all, between clips, within clips) PCC over the phones of the clips."""
    x, y = np.concatenate(pred), np.concatenate(label)
    xm = np.concatenate([np.full(len(p), p.mean()) for p in pred])
    ym = np.concatenate([np.full(len(t), t.mean()) for t in label])
    r = lambda a, b: float(np.corrcoef(a, b)[0, 1])  # noqa: E731
    return r(x, y), r(xm, ym), r(x - xm, y - ym)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.phone_collapse", description=__doc__.split("\n")[0])
    ap.add_argument("--predictions", required=True, help="training.evaluate predictions.jsonl(.gz), --gopt-blend 0")
    ap.add_argument("--split", default="test")
    ap.add_argument("--data", default="")
    ap.add_argument("--oof", default="", help="training.fit_gopt dir: its out-of-fold predictions (train clips)")
    ap.add_argument("--gopt", default="", help="a dir with gopt.json + gopt.safetensors (fit_gopt's or an adapter)")
    ap.add_argument("--features", default="", help="the split's alignment features (with --gopt)")
    ap.add_argument("--tower-states", default="", help="the split's pooled tower states (with --gopt)")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    if not args.oof and not (args.gopt and args.features):
        ap.error("give --oof, or --gopt with --features (and --tower-states for a helper that reads them)")

    from apa.config import corpus_dir
    from apa.data import LABEL_SNAPSHOT, load_split

    records = {r.utt_id: r for r in load_split(corpus_dir(args.data or None), args.split)}
    clips = per_clip(read_rows(args.predictions), helper_phones(args), records)
    if not clips:
        raise SystemExit("no clip has both readings and labels")
    lmm, hlp, lab = ([c[i] for c in clips] for i in (1, 2, 3))
    gap = np.array([h.mean() - m.mean() for m, h in zip(lmm, hlp)])
    down = np.flatnonzero(gap > COLLAPSE)
    groups = collections.Counter(clips[i][0][:3] for i in down)
    lines = [f"# Phone readings per clip: {Path(args.predictions).parent.name}, {args.split} split ({LABEL_SNAPSHOT})\n",
             f"- {len(clips)} clips, {sum(len(x) for x in lab)} labelled phones; helper: "
             f"{'out-of-fold ' + args.oof if args.oof else args.gopt}\n",
             "| reading | PCC all | between clips | within clips | mean |", "|---|---:|---:|---:|---:|"]
    for name, pred in (("LMM", lmm), ("helper", hlp), ("label", lab)):
        a, b, w = split_pcc(pred, lab) if name != "label" else (1.0, 1.0, 1.0)
        lines.append(f"| {name} | {a:.3f} | {b:.3f} | {w:.3f} | {np.mean(np.concatenate(pred)):.3f} |")
    lines += ["", f"Collapsed clips (LMM clip mean > {COLLAPSE} below the helper's): {len(down)} of {len(clips)} "
              f"({len(down) / len(clips):.1%}); their label mean {np.mean([lab[i].mean() for i in down]) if len(down) else float('nan'):.2f}, "
              f"LMM mean {np.mean([lmm[i].mean() for i in down]) if len(down) else float('nan'):.2f}, "
              f"helper mean {np.mean([hlp[i].mean() for i in down]) if len(down) else float('nan'):.2f} (0-2)",
              "", "Speaker groups of the collapsed clips (first three digits of the id): "
              + ", ".join(f"{g} {n}" for g, n in groups.most_common(8))]
    if len(down) < len(clips):
        rest = np.setdiff1d(np.arange(len(clips)), down)
        a, b, w = split_pcc([lmm[i] for i in rest], [lab[i] for i in rest])
        lines += ["", f"Without the collapsed clips, the LMM: PCC {a:.3f} (between {b:.3f}, within {w:.3f})"]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        Path(args.out).write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
