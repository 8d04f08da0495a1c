"""Render the README's results table from metrics.json files written by training.evaluate.

    python -m training.report results/apa-mini/metrics.json [--greedy]

Columns: ours (PCC/SCC, expected-value scores; greedy beside them with --greedy), the paper's
fine-tuned Qwen2-Audio-7B (PCC/SCC) and GOPT (PCC). Bold marks where ours beats the paper.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from apa.metrics import ASPECTS, GOPT, PAPER_7B


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def table(metrics: dict, greedy: bool = False) -> str:
    head = "| aspect | apa-mini PCC / SCC |"
    sep = "|---|---:|"
    if greedy:
        head += " apa-mini greedy PCC / SCC |"
        sep += "---:|"
    head += " paper 7B PCC / SCC | GOPT PCC |"
    sep += "---:|---:|"
    rows = [head, sep]
    for a in ASPECTS:
        m = metrics["expected"][a]
        paper = PAPER_7B.get(a)
        cells = []
        for k, v in (("pcc", m["pcc"]), ("scc", m["scc"])):
            ref = paper[0 if k == "pcc" else 1] if paper else None
            s = _f(v)
            cells.append(f"**{s}**" if v is not None and ref is not None and v > ref else s)
        row = f"| {a} | {' / '.join(cells)} |"
        if greedy:
            g = metrics["greedy"][a]
            row += f" {_f(g['pcc'])} / {_f(g['scc'])} |"
        row += f" {' / '.join(_f(v) for v in paper) if paper else '-'} | {_f(GOPT[a][0]) if a in GOPT else '-'} |"
        rows.append(row)
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(prog="python -m training.report")
    ap.add_argument("metrics", help="metrics.json from python -m training.evaluate")
    ap.add_argument("--greedy", action="store_true", help="add the greedy-decoding column")
    args = ap.parse_args(argv)
    metrics = json.loads(Path(args.metrics).read_text())
    out = f"{metrics['model']} on {metrics['labels']}, {metrics['split']} split, {metrics['n']} utterances\n\n" + table(metrics, args.greedy)
    print(out)
    return out


if __name__ == "__main__":
    main()
