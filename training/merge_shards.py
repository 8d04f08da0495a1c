"""Metrics of one evaluation run in shards (`training.evaluate --shard K/N`), from their predictions.

    python -m training.merge_shards runs/eval-0 runs/eval-1 --out results/apa-mini-v2
    python -m training.merge_shards runs/eval-0 runs/eval-1 --out DIR --gopt-blend 0.5 --adapter A --evidence-features F
    python -m training.merge_shards runs/eval --out DIR --gopt-blend adapter --adapter A --evidence-features F  # its blend.json

Reads each shard's predictions.jsonl and metrics.json, checks that together they cover the split
once, and writes predictions.jsonl.gz, metrics.json and metrics.md in the format of
training.evaluate (decode seconds: the shards' sum; the deaf control is not merged).
"""

from __future__ import annotations

import argparse
import gzip
import json
from dataclasses import asdict
from pathlib import Path

from apa import config
from apa.data import LABEL_SNAPSHOT, load_split
from apa.gopt import BLEND_FILE, BlendWeights
from apa.metrics import ASPECTS, evaluate, to_dict, to_markdown
from apa.schema import Assessment

MODES = ("expected", "greedy")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m training.merge_shards", description=__doc__.split("\n")[0])
    ap.add_argument("shards", nargs="+", help="output dirs of training.evaluate --shard K/N")
    ap.add_argument("--data", default=None, help="Speechocean762 root (default: $APA_SO762_DIR, else ../shared/speechocean762)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--gopt-blend", default="0",
                    help="blend the shards' scores with a GOPT helper's predictions at this weight (apa.gopt.blend), "
                         "or 'adapter': the weights fitted with the adapter (blend.json), for shards evaluated "
                         "without (--gopt-blend 0); needs --adapter and --evidence-features")
    ap.add_argument("--adapter", default=None, help="adapter dir holding the GOPT helper (gopt.json)")
    ap.add_argument("--evidence-features", default=None, help="the split's alignment features (training.align_corpus)")
    ap.add_argument("--word-evidence", default=None,
                    help="the split's Whisper word evidence (training.word_evidence), for a helper with word columns")
    ap.add_argument("--tower-states", default=None,
                    help="the split's pooled audio-tower states (training.tower_states), for a helper that reads them")
    args = ap.parse_args(argv)
    metas = [json.loads((Path(d) / "metrics.json").read_text()) for d in args.shards]
    rows = [json.loads(line) for d in args.shards for line in (Path(d) / "predictions.jsonl").read_text().splitlines() if line]
    split = metas[0]["split"]
    records = load_split(config.corpus_dir(args.data), split)
    by_id = {r["utt_id"]: r for r in rows}
    if len(by_id) != len(rows) or set(by_id) != {r.utt_id for r in records}:
        raise SystemExit(f"the shards hold {len(rows)} rows for {len(by_id)} utterances; the {split} split has {len(records)}")
    labels = [r.labels for r in records]
    weights = blend_weights(args.gopt_blend, args.adapter)
    if weights:
        blend_rows(by_id, records, args.adapter, args.evidence_features, weights, args.tower_states, args.word_evidence)
    seconds = sum(m["decode_seconds"] for m in metas)
    result = {k: metas[0][k] for k in ("model", "decoder", "batch_size", "device")}
    result.update(labels=LABEL_SNAPSHOT, split=split, n=len(records), decode_seconds=round(seconds, 1),
                  aspects=list(ASPECTS), shards=[m.get("shard") for m in metas],
                  gopt_blend=asdict(weights) if isinstance(weights, BlendWeights) else weights)
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


def blend_weights(value: str, adapter: str | None) -> float | BlendWeights:
    """--gopt-blend's value: a weight in [0, 1], or 'adapter' for the adapter's blend.json."""
    if value == "adapter":
        weights = BlendWeights.load(adapter) if adapter else None
        if weights is None:
            raise SystemExit(f"--gopt-blend adapter: no {BLEND_FILE} in {adapter}")
        return weights
    try:
        weight = float(value)
    except ValueError:
        raise SystemExit(f"--gopt-blend takes a number in [0, 1] or 'adapter', not {value!r}") from None
    if not 0.0 <= weight <= 1.0:
        raise SystemExit(f"--gopt-blend must be within [0, 1], not {weight}")
    return weight


def blend_rows(by_id: dict, records, adapter: str | None, features: str | None, weight: float | BlendWeights,
               tower_states: str | None = None, word_evidence: str | None = None) -> None:
    """Replace each row's readings by `apa.gopt.blend` of them with the adapter's GOPT helper's
    predictions from the clip's alignment features (and pooled tower states and Whisper word
    evidence, for a helper that reads them; rows without features are left as they are)."""
    from apa.align import load_corpus_features
    from apa.gopt import OUTPUT_NAMES, GOPTEnsemble, append_predictions, blend

    gopt = GOPTEnsemble.load(adapter) if adapter else None
    if gopt is None or not features:
        raise SystemExit("--gopt-blend needs --adapter (with a GOPT helper) and --evidence-features")
    table = load_corpus_features(features)
    tower = None
    if gopt.config.tower_layers:
        if not tower_states:
            raise SystemExit("this adapter's GOPT helper reads the audio tower: give --tower-states (training.tower_states)")
        from training.tower_states import load_tower_states

        tower = load_tower_states(tower_states)
    words = None
    if gopt.config.word_columns:
        if not word_evidence:
            raise SystemExit("this adapter's GOPT helper reads Whisper's word evidence: give --word-evidence (training.word_evidence)")
        from training.word_evidence import load_word_evidence

        words = load_word_evidence(word_evidence)
    for r in records:
        if r.utt_id not in table or (tower is not None and r.utt_id not in tower) or (words is not None and r.utt_id not in words):
            continue
        pred = append_predictions(gopt, table[r.utt_id].features, r.reference, None if tower is None else tower[r.utt_id],
                                  None if words is None else words[r.utt_id])[:, -len(OUTPUT_NAMES):]
        row = by_id[r.utt_id]
        for m in MODES:
            row[m] = blend(Assessment.from_dict(row[m]), pred, weight).to_dict()


if __name__ == "__main__":
    main()
