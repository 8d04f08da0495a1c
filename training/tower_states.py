"""The audio tower's states pooled per aligned phone, for a split: what a GOPT helper with
`GOPTConfig.tower_layers` reads beside the alignment features (`apa.scorer.tower_inputs`).

    python -m training.tower_states --features runs/feat/train.npz --split train --out runs/tower/train.npz
    python -m training.tower_states --features runs/feat/test.npz --split test --out runs/tower/test.npz

The phones' times come from the alignment features file (training/align_corpus.py), so the states
are pooled over the same frames the features were. Writes one .npz: utt_ids, offsets (per clip,
its rows are offsets[i]:offsets[i + 1]), states (n_phones_total, len(layers) * d_model) float16,
layers, model. Clips the file does not hold are skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_LAYERS = (3, 6)  # a middle layer of Whisper-base's encoder and its (normed) output


@dataclass(frozen=True)
class TowerArguments:
    features: str
    split: str
    out: str
    data: str = ""
    model: str = ""  # default: apa-mini (assembled offline); the tower must be the scored model's
    layers: tuple[int, ...] = field(default=DEFAULT_LAYERS)
    device: str = ""
    batch_size: int = 8


def load_tower_states(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{utt_id: (n_phones, D) float32} from a file `main` wrote."""
    with np.load(path, allow_pickle=False) as z:
        o, s = z["offsets"], z["states"]
        return {u: s[o[i] : o[i + 1]].astype(np.float32) for i, u in enumerate(z["utt_ids"].tolist())}


def tower_layers_of(path: str | os.PathLike) -> tuple[int, ...]:
    with np.load(path, allow_pickle=False) as z:
        return tuple(int(v) for v in z["layers"])


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", required=True)
    ap.add_argument("--split", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default="")
    ap.add_argument("--model", default="")
    ap.add_argument("--layers", type=int, nargs="+", default=list(DEFAULT_LAYERS))
    ap.add_argument("--device", default="")
    ap.add_argument("--batch-size", type=int, default=8)
    a = vars(ap.parse_args(argv))
    args = TowerArguments(**{k.replace("-", "_"): (tuple(v) if k == "layers" else v) for k, v in a.items()})
    import torch
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    from apa import config
    from apa.align import load_corpus_features
    from apa.data import load_split
    from apa.mini import assemble_apa_mini
    from apa.scorer import tower_inputs

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    # 1. the model (its audio tower) and the aligned clips
    model_dir = args.model or str(assemble_apa_mini())
    device = config.pick_device(args.device or None)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    fe = AutoProcessor.from_pretrained(model_dir).feature_extractor
    table = load_corpus_features(args.features)
    records = [r for r in load_split(config.corpus_dir(args.data or None), args.split) if r.utt_id in table]

    # 2. pooled states, clip by clip in batches
    t0, rows = time.perf_counter(), []
    for i in range(0, len(records), 200):
        chunk = records[i : i + 200]
        spans = [(table[r.utt_id].start, table[r.utt_id].end) for r in chunk]
        rows += tower_inputs(model, fe, [r.audio() for r in chunk], spans, args.layers, args.batch_size)
        print(f"{len(rows)}/{len(records)} clips, {time.perf_counter() - t0:.0f} s", flush=True)

    # 3. one file
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    offsets = np.cumsum([0] + [len(r) for r in rows])
    np.savez(out, utt_ids=np.array([r.utt_id for r in records]), offsets=offsets,
             states=np.concatenate(rows).astype(np.float16), layers=np.array(args.layers), model=np.array(Path(model_dir).name))
    print(f"{out}: {len(records)} clips, {offsets[-1]} phones, width {rows[0].shape[1] if rows else 0}")


if __name__ == "__main__":
    sys.exit(main())
