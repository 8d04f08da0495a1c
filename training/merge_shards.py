"""Metrics of one evaluation run in shards (`training.evaluate --shard K/N`), from their predictions.

    python -m training.merge_shards runs/eval-0 runs/eval-1 --out results/apa-mini-v2

Reads each shard's predictions.jsonl and metrics.json, checks that together they cover the split
once, and writes predictions.jsonl.gz, metrics.json and metrics.md in the format of
training.evaluate (decode seconds: the shards' sum; the deaf control is not merged).
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

from apa import config
from apa.data import LABEL_SNAPSHOT, load_split
from apa.metrics import ASPECTS, evaluate, to_dict, to_markdown
from apa.schema import Assessment

MODES = ("expected", "greedy")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m training.merge_shards", description=__doc__.split("\n")[0])
    ap.add_argument("shards", nargs="+", help="output dirs of training.evaluate --shard K/N")
    ap.add_argument("--data", default=None, help="Speechocean762 root (default: $APA_SO762_DIR, else ../shared/speechocean762)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    metas = [json.loads((Path(d) / "metrics.json").read_text()) for d in args.shards]
    rows = [json.loads(line) for d in args.shards for line in (Path(d) / "predictions.jsonl").read_text().splitlines() if line]
    split = metas[0]["split"]
    records = load_split(config.corpus_dir(args.data), split)
    by_id = {r["utt_id"]: r for r in rows}
    if len(by_id) != len(rows) or set(by_id) != {r.utt_id for r in records}:
        raise SystemExit(f"the shards hold {len(rows)} rows for {len(by_id)} utterances; the {split} split has {len(records)}")
    labels = [r.labels for r in records]
    seconds = sum(m["decode_seconds"] for m in metas)
    result = {k: metas[0][k] for k in ("model", "decoder", "batch_size", "device")}
    result.update(labels=LABEL_SNAPSHOT, split=split, n=len(records), decode_seconds=round(seconds, 1),
                  aspects=list(ASPECTS), shards=[m.get("shard") for m in metas])
    md = [f"# {result['model']} on {LABEL_SNAPSHOT}, {split} split ({len(records)} utterances)\n",
          f"Decoding: {seconds:.1f} s in all, {len(metas)} shards ({result['decoder']} decoder, batch "
          f"{result['batch_size']}, {result['device']})\n"]
    for m in MODES:
        res = evaluate([Assessment.from_dict(by_id[r.utt_id][m]) for r in records], labels)
        result[m] = to_dict(res)
        md += [f"\n## {m} scores\n", to_markdown(res)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with gzip.open(out / "predictions.jsonl.gz", "wt") as f:
        for r in records:
            f.write(json.dumps(by_id[r.utt_id]) + "\n")
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    (out / "metrics.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return result


if __name__ == "__main__":
    main()
