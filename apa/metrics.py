"""PCC, SCC and RMSE for the nine Speechocean762 aspects, on the original scales.

Aspects (pairs counted over all phones / words / utterances of a split):

    phone                  0-2     word.accuracy, word.stress, word.total   0-10
    sentence.accuracy, sentence.completeness, sentence.fluency, sentence.prosodic,
    sentence.total         0-10

A pair is skipped when the label is missing (None); a missing prediction is skipped too and
counted in `missing_pred` (the constrained decoder never produces one). When either vector is
constant the correlation is undefined: it is reported as None with a note, never NaN.

    python -m apa.metrics --self-test     # labels vs labels (1.0) and a shuffled baseline (~0)
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from apa.schema import Assessment

ASPECTS = (
    "phone",
    "word.accuracy",
    "word.stress",
    "word.total",
    "sentence.accuracy",
    "sentence.completeness",
    "sentence.fluency",
    "sentence.prosodic",
    "sentence.total",
)

# Published test-set figures (PCC, SCC) for comparison tables; None = not reported.
PAPER_7B = {  # Wang et al. 2025, Qwen2-Audio-7B-Instruct + LoRA
    "phone": (0.38, 0.34),
    "word.accuracy": (0.51, 0.46),
    "sentence.accuracy": (0.69, 0.63),
    "sentence.fluency": (0.74, 0.70),
    "sentence.prosodic": (0.73, 0.67),
    "sentence.total": (0.72, 0.67),
}
GOPT = {  # Gong et al. 2022 (PCC only)
    "phone": (0.612, None),
    "word.accuracy": (0.533, None),
    "word.stress": (0.291, None),
    "word.total": (0.549, None),
    "sentence.accuracy": (0.714, None),
    "sentence.completeness": (0.155, None),
    "sentence.fluency": (0.753, None),
    "sentence.prosodic": (0.760, None),
    "sentence.total": (0.742, None),
}


@dataclass(frozen=True)
class AspectResult:
    aspect: str
    n: int
    pcc: float | None
    scc: float | None
    rmse: float | None
    missing_pred: int = 0
    note: str = ""


def pairs(preds: Sequence[Assessment], labels: Sequence[Assessment]) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """aspect -> (pred vector, label vector, number of missing predictions)."""
    if len(preds) != len(labels):
        raise ValueError(f"{len(preds)} predictions for {len(labels)} labels")
    acc: dict[str, tuple[list[float], list[float], list[int]]] = {a: ([], [], [0]) for a in ASPECTS}

    def add(aspect: str, p: float | None, y: float | None) -> None:
        if y is None:
            return
        if p is None:
            acc[aspect][2][0] += 1
            return
        acc[aspect][0].append(float(p))
        acc[aspect][1].append(float(y))

    for pred, lab in zip(preds, labels):
        for a in ("accuracy", "completeness", "fluency", "prosodic", "total"):
            add(f"sentence.{a}", getattr(pred.sentence, a), getattr(lab.sentence, a))
        if len(pred.words) != len(lab.words):
            raise ValueError(f"{lab.text!r}: {len(pred.words)} predicted words for {len(lab.words)}")
        for pw, lw in zip(pred.words, lab.words):
            for a in ("accuracy", "stress", "total"):
                add(f"word.{a}", getattr(pw, a), getattr(lw, a))
            for pp, lp in zip(pw.phones, lw.phones, strict=True):
                add("phone", pp.score, lp.score)
    return {a: (np.asarray(p), np.asarray(y), m[0]) for a, (p, y, m) in acc.items()}


def _corr(x: np.ndarray, y: np.ndarray) -> tuple[float | None, float | None, str]:
    if len(x) < 2:
        return None, None, "fewer than 2 pairs"
    notes = []
    if np.ptp(y) == 0:
        notes.append(f"labels constant ({y[0]:g})")
    if np.ptp(x) == 0:
        notes.append(f"predictions constant ({x[0]:g})")
    if notes:
        return None, None, "; ".join(notes) + ": correlation undefined"
    return float(stats.pearsonr(x, y)[0]), float(stats.spearmanr(x, y)[0]), ""


def evaluate(preds: Sequence[Assessment], labels: Sequence[Assessment]) -> dict[str, AspectResult]:
    """PCC, SCC and RMSE per aspect."""
    out = {}
    for aspect, (x, y, missing) in pairs(preds, labels).items():
        pcc, scc, note = _corr(x, y)
        rmse = float(math.sqrt(np.mean((x - y) ** 2))) if len(x) else None
        out[aspect] = AspectResult(aspect, len(x), pcc, scc, rmse, missing, note)
    return out


def _fmt(v: float | None, nd: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


def to_markdown(results: dict[str, AspectResult], *, compare: bool = True) -> str:
    """A markdown table; with `compare`, the paper's 7B and GOPT PCC/SCC beside ours."""
    head = "| aspect | n | PCC | SCC | RMSE |"
    sep = "|---|---:|---:|---:|---:|"
    if compare:
        head += " paper 7B PCC/SCC | GOPT PCC |"
        sep += "---:|---:|"
    rows = [head, sep]
    for a in ASPECTS:
        r = results[a]
        row = f"| {a} | {r.n} | {_fmt(r.pcc)} | {_fmt(r.scc)} | {_fmt(r.rmse)} |"
        if compare:
            p = PAPER_7B.get(a)
            g = GOPT.get(a)
            row += f" {'/'.join(_fmt(v, 2) for v in p) if p else '-'} | {_fmt(g[0], 2) if g else '-'} |"
        rows.append(row)
    notes = [f"- {a}: {r.note}" for a, r in results.items() if r.note]
    notes += [f"- {a}: {r.missing_pred} predictions missing" for a, r in results.items() if r.missing_pred]
    return "\n".join(rows + ([""] + notes if notes else []))


def to_dict(results: dict[str, AspectResult]) -> dict[str, dict]:
    return {a: asdict(r) for a, r in results.items()}


def report(preds: Sequence[Assessment], labels: Sequence[Assessment], *, title: str = "") -> dict[str, dict]:
    """Print the markdown table and return the results as a dict."""
    results = evaluate(preds, labels)
    if title:
        print(f"### {title}\n")
    print(to_markdown(results))
    return to_dict(results)


def _shuffled(labels: Sequence[Assessment], seed: int) -> dict[str, AspectResult]:
    """A chance baseline: each aspect's label vector against a permutation of itself."""
    rng = np.random.default_rng(seed)
    out = {}
    for aspect, (_, y, _) in pairs(labels, labels).items():
        x = rng.permutation(y)
        pcc, scc, note = _corr(x, y)
        out[aspect] = AspectResult(aspect, len(y), pcc, scc, float(math.sqrt(np.mean((x - y) ** 2))), 0, note)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    from apa.data import LABEL_SNAPSHOT, load_split

    ap = argparse.ArgumentParser(prog="python -m apa.metrics", description=__doc__.split("\n")[0])
    ap.add_argument("--self-test", action="store_true", help="labels vs labels and a shuffled baseline")
    ap.add_argument("--data", default=None, help="Speechocean762 root (default: ../shared/speechocean762 beside the repo)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--json", default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    if not args.self_test:
        ap.error("nothing to do: use --self-test (model evaluation is `python -m training.evaluate`)")
    from pathlib import Path

    from apa.config import corpus_dir

    root = corpus_dir(args.data)
    labels = [r.labels for r in load_split(root, args.split)]
    print(f"{LABEL_SNAPSHOT}, {args.split} split, {len(labels)} utterances\n")
    print("### labels vs labels\n")
    same = evaluate(labels, labels)
    print(to_markdown(same, compare=False))
    print("\n### shuffled baseline (seed 0)\n")
    shuf = _shuffled(labels, 0)
    print(to_markdown(shuf, compare=False))
    if args.json:
        Path(args.json).write_text(json.dumps({"labels": to_dict(same), "shuffled": to_dict(shuf)}, indent=2))


if __name__ == "__main__":
    main()
