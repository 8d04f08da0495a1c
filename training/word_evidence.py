"""Whisper's forced reading of each reference word, for a split: what a GOPT helper with
`GOPTConfig.word_columns` reads beside the alignment features
(`apa.transcribe.WhisperTranscriber.word_evidence`).

    python -m training.word_evidence --split train --out runs/words/train.npz --workers 2
    python -m training.word_evidence --split test --out runs/words/test.npz --workers 2

The transcriber is CTranslate2 int8 on the CPU, one thread per worker process, as the scorer
runs it. Writes one .npz: utt_ids, offsets (per clip, its rows are offsets[i]:offsets[i + 1], one
row per word), values (n_words_total, len(WORD_EVIDENCE_NAMES)) float32, names, model.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class WordEvidenceArguments:
    split: str
    out: str
    data: str = ""
    model: str = ""  # a transcriber choice ("whisper-base", a CTranslate2 directory or Hub id); default "whisper-base"
    workers: int = 1
    limit: int = 0  # the split's first N clips only (0: all)


def load_word_evidence(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{utt_id: (n_words, len(WORD_EVIDENCE_NAMES)) float32} from a file `main` wrote (its
    columns checked against today's names)."""
    from apa.transcribe import WORD_EVIDENCE_NAMES

    with np.load(path, allow_pickle=False) as z:
        if tuple(z["names"].tolist()) != WORD_EVIDENCE_NAMES:
            raise ValueError(f"{path}: columns {z['names'].tolist()}, not {WORD_EVIDENCE_NAMES}")
        o, v = z["offsets"], z["values"]
        return {u: v[o[i] : o[i + 1]].astype(np.float32) for i, u in enumerate(z["utt_ids"].tolist())}


_WORKER: dict = {}


def _init(model: str, data: str) -> None:
    from apa import config
    from apa.transcribe import load_word_scorer

    # not $APA_TRANSCRIBER: a helper is fitted on one model, and the scorer loads that one the same way
    _WORKER["transcriber"] = load_word_scorer(model or config.DEFAULT_TRANSCRIBER)
    _WORKER["data"] = config.corpus_dir(data or None)


def _score(job: tuple[str, str]) -> tuple[str, np.ndarray]:
    from apa.data import load_split

    split, utt_id = job
    records = _WORKER.setdefault("records", {})
    if split not in records:
        records[split] = {r.utt_id: r for r in load_split(_WORKER["data"], split)}
    r = records[split][utt_id]
    return utt_id, _WORKER["transcriber"].word_evidence(r.audio(), [w for w, _ in r.reference])


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default="")
    ap.add_argument("--model", default="")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0)
    args = WordEvidenceArguments(**vars(ap.parse_args(argv)))
    from apa import config
    from apa.data import load_split
    from apa.transcribe import WORD_EVIDENCE_NAMES

    # 1. the split's clips
    ids = [r.utt_id for r in load_split(config.corpus_dir(args.data or None), args.split)]
    ids = ids[: args.limit] if args.limit > 0 else ids

    # 2. each clip's words, in worker processes (one CTranslate2 thread each)
    t0, rows = time.perf_counter(), {}
    with ProcessPoolExecutor(max(1, args.workers), initializer=_init, initargs=(args.model, args.data)) as pool:
        for n, (utt_id, values) in enumerate(pool.map(_score, [(args.split, u) for u in ids], chunksize=16), 1):
            rows[utt_id] = values
            if n % 500 == 0 or n == len(ids):
                print(f"{n}/{len(ids)} clips, {time.perf_counter() - t0:.0f} s", flush=True)

    # 3. one file
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    offsets = np.cumsum([0] + [len(rows[u]) for u in ids])
    values = np.concatenate([rows[u] for u in ids]) if ids else np.zeros((0, len(WORD_EVIDENCE_NAMES)), np.float32)
    model = args.model or config.DEFAULT_TRANSCRIBER
    np.savez(out, utt_ids=np.array(ids), offsets=offsets, values=values.astype(np.float32),
             names=np.array(WORD_EVIDENCE_NAMES), model=np.array(model))
    bad = int(np.isnan(values).any(axis=1).sum()) if len(values) else 0
    print(f"{out}: {len(ids)} clips, {offsets[-1]} words ({bad} without evidence)")


if __name__ == "__main__":
    sys.exit(main())
