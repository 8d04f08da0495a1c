"""Align every utterance of a Speechocean762 split with pocketsphinx and save the phone features.

    python -m training.align_corpus --split all --workers 16 --out results/align/so762.npz   # 5,000 utts
    python -m training.align_corpus --split test --workers 1 --limit 50 --out /tmp/test50.npz

One compressed .npz (read it with `apa.align.load_corpus_features`), no pickles. Phones of all
utterances are concatenated in corpus order; utterance i owns rows phone_offsets[i]:phone_offsets[i+1]
(words: word_offsets likewise):

    utt_ids (U,) str, utt_split (U,) str ("train"/"test"), ok (U,) bool, reason (U,) str
    phone_offsets (U+1,) int64, word_offsets (U+1,) int64
    symbols (P,) str (reference phones with stress digits), word (P,) int16 (index within the utterance)
    start, end (P,) float32 seconds; features (P, F) float32, columns feature_names
    heard (P, 3) int8 indices into `phones` (-1: none), heard_p (P, 3) float32
    word_start, word_end (W,) float32 seconds
    feature_names (F,) str, phones (40,) str, pocketsphinx_version, split ("train", "test" or
    "train+test"), created (str scalars)

Failed alignments are kept (ok False; their rows are the documented fallback of apa.align).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def _align_one(args: tuple[str, object, tuple]) -> tuple[str, object]:
    from apa.align import align
    from apa.audio import decode, to_mono_16k

    utt, source, reference = args
    try:
        samples, sr = decode(source)
        audio = to_mono_16k(samples, sr)
    except Exception as e:  # unreadable file: still one fallback entry
        audio = np.zeros(0, np.float32)
        result = align(audio, reference)
        return utt, pack(result, f"audio not readable: {e}")
    return utt, pack(align(audio, reference))


def pack(al, reason: str | None = None) -> dict:
    from apa.align import PHONE_INDEX

    heard = np.full((len(al.phones), 3), -1, np.int8)
    heard_p = np.full((len(al.phones), 3), np.nan, np.float32)
    for i, p in enumerate(al.phones):
        for k, (sym, prob) in enumerate(p.heard[:3]):
            heard[i, k], heard_p[i, k] = PHONE_INDEX[sym], prob
    return {
        "ok": al.ok,
        "reason": reason or al.reason,
        "symbols": [p.symbol for p in al.phones],
        "word": np.array([p.word for p in al.phones], np.int16),
        "start": np.array([p.start for p in al.phones], np.float32),
        "end": np.array([p.end for p in al.phones], np.float32),
        "features": al.features(),
        "heard": heard,
        "heard_p": heard_p,
        "word_start": np.array([w.start for w in al.words], np.float32),
        "word_end": np.array([w.end for w in al.words], np.float32),
    }


def save(path: str | os.PathLike, results: dict[str, dict], split: str, utt_split: list[str] | None = None) -> Path:
    """Write {utt_id: pack(...)} (in the dict's order) as the .npz described in the module doc."""
    from apa.align import FEATURE_NAMES, N_FEATURES, PHONES, pocketsphinx_version

    utts = list(results)
    rows = [results[u] for u in utts]
    po = np.cumsum([0] + [len(r["symbols"]) for r in rows]).astype(np.int64)
    wo = np.cumsum([0] + [len(r["word_start"]) for r in rows]).astype(np.int64)

    def cat(key, dtype, shape=()):
        parts = [np.asarray(r[key], dtype).reshape((-1,) + shape) for r in rows]
        return np.concatenate(parts) if parts else np.zeros((0,) + shape, dtype)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        utt_ids=np.array(utts, dtype=str),
        utt_split=np.array(utt_split if utt_split is not None else [split] * len(utts), dtype=str),
        ok=np.array([r["ok"] for r in rows], bool),
        reason=np.array([r["reason"] for r in rows], dtype=str),
        phone_offsets=po,
        word_offsets=wo,
        symbols=np.array([s for r in rows for s in r["symbols"]], dtype=str),
        word=cat("word", np.int16),
        start=cat("start", np.float32),
        end=cat("end", np.float32),
        features=cat("features", np.float32, (N_FEATURES,)),
        heard=cat("heard", np.int8, (3,)),
        heard_p=cat("heard_p", np.float32, (3,)),
        word_start=cat("word_start", np.float32),
        word_end=cat("word_end", np.float32),
        feature_names=np.array(FEATURE_NAMES, dtype=str),
        phones=np.array(PHONES, dtype=str),
        pocketsphinx_version=np.array(pocketsphinx_version()),
        split=np.array(split),
        created=np.array(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
    )
    return path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m training.align_corpus", description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="Speechocean762 root (default ../shared/speechocean762)")
    ap.add_argument("--split", default="test", choices=["train", "test", "all"], help="all: train then test")
    ap.add_argument("--limit", type=int, default=None, help="only the first N utterances")
    ap.add_argument("--workers", type=int, default=1, help="processes (one core each)")
    ap.add_argument("--out", required=True, help="output .npz")
    args = ap.parse_args(argv)

    from apa.config import corpus_dir
    from apa.data import load_split

    splits = ["train", "test"] if args.split == "all" else [args.split]
    records = [r for sp in splits for r in load_split(corpus_dir(args.data), sp)]
    if args.limit:
        records = records[: args.limit]
    jobs = [(r.utt_id, r.audio_source, r.reference) for r in records]
    t0 = time.perf_counter()
    results: dict[str, dict] = {}
    if args.workers <= 1:
        it = map(_align_one, jobs)
        pool = None
    else:
        pool = ProcessPoolExecutor(args.workers)
        it = pool.map(_align_one, jobs, chunksize=4)
    try:
        for i, (utt, packed) in enumerate(it, 1):
            results[utt] = packed
            if i % 100 == 0 or i == len(jobs):
                el = time.perf_counter() - t0
                print(f"{i}/{len(jobs)} utterances, {el:.0f} s, {el / i * args.workers:.2f} s/utt/worker", file=sys.stderr)
    finally:
        if pool is not None:
            pool.shutdown()
    elapsed = time.perf_counter() - t0
    path = save(args.out, {r.utt_id: results[r.utt_id] for r in records}, "+".join(splits), [r.split for r in records])
    failed = [u for u, r in results.items() if not r["ok"]]
    summary = {
        "out": str(path),
        "utterances": len(results),
        "phones": int(sum(len(r["symbols"]) for r in results.values())),
        "failed": failed,
        "seconds": round(elapsed, 1),
        "seconds_per_utt_per_worker": round(elapsed / max(len(results), 1) * args.workers, 3),
    }
    print(f"wrote {path}: {summary['utterances']} utterances, {summary['phones']} phones, "
          f"{len(failed)} not aligned {failed[:10]}, {elapsed:.1f} s ({summary['seconds_per_utt_per_worker']} s/utt/worker)")
    return summary


if __name__ == "__main__":
    main()
