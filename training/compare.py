"""Compare several runs' predictions on the utterances they all scored.

    python -m training.compare --out results/extra-runs NAME=predictions.jsonl[.gz] ...

Useful when an evaluation was cut short: predictions.jsonl is written as utterances are
scored, so partial files can still be compared fairly on their common subset.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

from apa.config import corpus_dir
from apa.data import LABEL_SNAPSHOT, load_split
from apa.metrics import evaluate, to_dict, to_markdown
from apa.schema import Assessment


def read_predictions(path: str | Path, mode: str = "expected") -> dict[str, Assessment]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {r["utt_id"]: Assessment.from_dict(r[mode]) for r in rows}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m training.compare", description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="NAME=path/to/predictions.jsonl[.gz]")
    ap.add_argument("--data", default=None, help="Speechocean762 root (default ../shared/speechocean762)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--mode", default="expected", choices=["expected", "greedy"])
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    root = corpus_dir(args.data)
    labels = {r.utt_id: r.labels for r in load_split(root, args.split)}
    preds = {name: read_predictions(path, args.mode) for name, path in (r.split("=", 1) for r in args.runs)}
    common = [u for u in labels if all(u in p for p in preds.values())]
    md = [f"# {len(preds)} runs on the {len(common)} {args.split} utterances they all scored ({args.mode} scores; labels: {LABEL_SNAPSHOT})\n"]
    result = {"n": len(common), "mode": args.mode}
    for name, p in preds.items():
        res = evaluate([p[u] for u in common], [labels[u] for u in common])
        md += [f"\n## {name}\n", to_markdown(res, compare=False)]
        result[name] = to_dict(res)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.md").write_text("\n".join(md) + "\n")
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    print("\n".join(md))
    return result


if __name__ == "__main__":
    main()
