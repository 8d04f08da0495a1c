"""Render the README's results tables from metrics.json files written by training.evaluate.

    python -m training.report results/apa-mini-v2/metrics.json results/apa-mini/metrics.json \
        --names "apa-mini v2" "apa-mini v1" [--greedy]

Columns: each model's PCC / SCC (expected-value scores; greedy beside the first with --greedy),
the paper's fine-tuned Qwen2-Audio-7B (PCC / SCC) and GOPT (PCC). Bold marks where a model beats
the paper. A metrics file with a deaf control (`evaluate --control silence`) adds a second
table: the same clips with silence, and the share of each correlation the recording earns.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from apa.metrics import ASPECTS, GOPT, PAPER_7B


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _cells(m: dict, paper: tuple | None) -> str:
    cells = []
    for i, k in enumerate(("pcc", "scc")):
        ref = paper[i] if paper else None
        s = _f(m[k])
        cells.append(f"**{s}**" if m[k] is not None and ref is not None and m[k] > ref else s)
    return " / ".join(cells)


def table(metrics: list[dict], names: list[str], greedy: bool = False) -> str:
    """aspect | each model's PCC / SCC | (greedy of the first) | paper 7B | GOPT."""
    head = "| aspect |" + "".join(f" {n} PCC / SCC |" for n in names)
    sep = "|---|" + "---:|" * len(names)
    if greedy:
        head += f" {names[0]} greedy PCC / SCC |"
        sep += "---:|"
    head += " paper 7B PCC / SCC | GOPT PCC |"
    sep += "---:|---:|"
    rows = [head, sep]
    for a in ASPECTS:
        paper = PAPER_7B.get(a)
        row = f"| {a} |" + "".join(f" {_cells(m['expected'][a], paper)} |" for m in metrics)
        if greedy:
            g = metrics[0]["greedy"][a]
            row += f" {_f(g['pcc'])} / {_f(g['scc'])} |"
        row += f" {' / '.join(_f(v) for v in paper) if paper else '-'} | {_f(GOPT[a][0]) if a in GOPT else '-'} |"
        rows.append(row)
    return "\n".join(rows)


def control_table(metrics: dict) -> str:
    """aspect | with the recording | with silence of the same length | share the recording earns."""
    def share(a, b):
        return "n/a" if a is None or b is None or a <= 0 else f"{1 - b / a:.0%}"

    rows = ["| aspect | recording PCC / SCC | silence PCC / SCC | earned by the recording (PCC / SCC) |",
            "|---|---:|---:|---:|"]
    for a in ASPECTS:
        r, c = metrics["expected"][a], metrics["control"][a]
        rows.append(f"| {a} | {_f(r['pcc'])} / {_f(r['scc'])} | {_f(c['pcc'])} / {_f(c['scc'])} | "
                    f"{share(r['pcc'], c['pcc'])} / {share(r['scc'], c['scc'])} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(prog="python -m training.report")
    ap.add_argument("metrics", nargs="+", help="metrics.json files from python -m training.evaluate")
    ap.add_argument("--names", nargs="+", default=None, help="column names (default: each file's model)")
    ap.add_argument("--greedy", action="store_true", help="add the first model's greedy-decoding column")
    args = ap.parse_args(argv)
    metrics = [json.loads(Path(p).read_text()) for p in args.metrics]
    names = args.names or [m["model"] for m in metrics]
    if len(names) != len(metrics):
        ap.error("--names needs one name per metrics file")
    first = metrics[0]
    out = f"{first['labels']}, {first['split']} split, {first['n']} utterances\n\n" + table(metrics, names, args.greedy)
    for name, m in zip(names, metrics):
        if "control" in m:
            out += f"\n\nDeaf control, {name}: every clip again with its audio replaced by silence of the same length\n\n"
            out += control_table(m)
    print(out)
    return out


if __name__ == "__main__":
    main()
