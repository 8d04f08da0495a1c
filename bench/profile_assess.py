"""Where does the time of one `assess` go? Stage timings (median of --runs) for the reference and the fast path on
one corpus clip, plus a cProfile listing of one call.

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.profile_assess [--utt 003060306] [--runs 3] [--modes reference fast]
                                                               [--cprofile fast] [--top 25]

Stages are timed by wrapping the functions that do them (the wrappers cost microseconds):
reference: processor (features padded to 30 s + tokenisation), audio encoder (30 s, padding masked), first model
forward without the encoder (LLM prefill + LM head over every prompt position), decode steps (count, time);
fast: load_audio is outside `assess` and timed apart; features, encoder (real length), LLM passes (count,
tokens, time); the rest is Python (plans, slot probabilities, assembling the result).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import time
import types
from collections import defaultdict

from apa import config

REPO = config.REPO_ROOT
CORPUS = config.corpus_dir()


class Timers:
    def __init__(self):
        self.t = defaultdict(float)
        self.n = defaultdict(int)
        self.calls = defaultdict(list)

    def wrap(self, owner, name: str, label: str):
        fn = getattr(owner, name)

        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                d = time.perf_counter() - t0
                self.t[label] += d
                self.n[label] += 1
                self.calls[label].append(d)

        setattr(owner, name, timed)
        return fn

    def reset(self):
        self.t.clear()
        self.n.clear()
        self.calls.clear()


def stage_times(scorer, audio, text: str, runs: int, fast: bool) -> dict[str, tuple[float, int]]:
    import apa.scorer as M  # the names the scorer calls

    timers = Timers()
    undo = []
    if fast:
        undo.append((M, "log_mel_features", timers.wrap(M, "log_mel_features", "features (real length)")))
        undo.append((M, "encode_audio_fast", timers.wrap(M, "encode_audio_fast", "audio encoder (real length)")))
        dec = scorer.decoder
        undo.append((dec, "forward", timers.wrap(dec, "forward", "LLM passes")))
    else:
        proc = scorer.processor
        cls = type(proc)
        orig_call = cls.__call__

        def call(self, *a, **k):
            t0 = time.perf_counter()
            try:
                return orig_call(self, *a, **k)
            finally:
                timers.t["processor (30 s features, tokens)"] += time.perf_counter() - t0
                timers.n["processor (30 s features, tokens)"] += 1

        cls.__call__ = call
        undo.append((cls, "__call__", orig_call))
        tower = scorer.model.model.audio_tower
        undo.append((tower, "forward", timers.wrap(tower, "forward", "audio encoder (30 s, masked)")))
        undo.append((scorer.model, "forward", timers.wrap(scorer.model, "forward", "model forwards (all)")))
    per_run = []
    try:
        scorer.assess(audio, text)  # warm-up
        for _ in range(runs):
            timers.reset()
            t0 = time.perf_counter()
            scorer.assess(audio, text)
            total = time.perf_counter() - t0
            row = {k: (v, timers.n[k]) for k, v in timers.t.items()}
            if fast:
                c = timers.calls["LLM passes"]
                row["  first pass (prompt + first slot)"] = (c[0], 1)
                row["  later passes"] = (sum(c[1:]), len(c) - 1)
            else:
                c = timers.calls["model forwards (all)"]
                enc = timers.t["audio encoder (30 s, masked)"]
                row["prefill: LLM + LM head on all rows"] = (c[0] - enc, 1)
                row["decode steps (forced text + probes)"] = (sum(c[1:]), len(c) - 1)
            row["assess total"] = (total, 1)
            per_run.append(row)
    finally:
        for owner, name, fn in reversed(undo):
            if isinstance(owner, (type, types.ModuleType)):
                setattr(owner, name, fn)
            else:
                delattr(owner, name)  # the instance attribute that shadowed the method
    keys = per_run[0].keys()
    out = {k: (statistics.median(r[k][0] for r in per_run), per_run[0][k][1]) for k in keys}
    if not fast:
        out.pop("model forwards (all)")
    out["python and other"] = (out["assess total"][0] - sum(v for k, (v, _) in out.items()
                                                           if k != "assess total" and not k.startswith("  ")), 0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--utt", default="003060306", help="test-split utterance id (default: a 5.5 s clip)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--modes", nargs="+", default=["reference", "fast"], choices=["reference", "fast"])
    ap.add_argument("--cprofile", choices=["reference", "fast", "none"], default="fast")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()

    import os

    import torch

    from apa.audio import load_audio
    from apa.data import read_kaldi
    from apa.scorer import AudioLMMScorer, DecodeOptions, load_scorer

    rec = next(r for r in read_kaldi(CORPUS, "test") if r.utt_id == args.utt)
    t = time.perf_counter()
    base = load_scorer()
    print(f"model load {time.perf_counter() - t:.2f} s ({base.name}); torch threads {torch.get_num_threads()}; "
          f"load avg {os.getloadavg()[0]:.2f}")
    audio = load_audio(str(rec.audio_source))
    times = []
    for _ in range(5):
        t = time.perf_counter()
        load_audio(str(rec.audio_source))
        times.append(time.perf_counter() - t)
    print(f"clip {rec.utt_id}: {len(audio) / 16000:.2f} s after trimming, {rec.text!r}; "
          f"load_audio (decode + VAD + trim) {statistics.median(times) * 1e3:.0f} ms")
    scorers = {m: AudioLMMScorer(base.model, base.processor, name=base.name, options=DecodeOptions(fast=m == "fast"))
               for m in args.modes}
    for m in args.modes:
        res = stage_times(scorers[m], audio, rec.text, args.runs, fast=m == "fast")
        st = scorers[m].stats
        print(f"\n{m}: {st}")
        for k, (v, n) in res.items():
            print(f"  {k:45s} {v * 1e3:8.1f} ms" + (f"  ({n} calls, {v / n * 1e3:.1f} ms each)" if n > 1 else ""))
    if args.cprofile != "none":
        s = scorers.get(args.cprofile) or AudioLMMScorer(base.model, base.processor,
                                                         options=DecodeOptions(fast=args.cprofile == "fast"))
        prof = cProfile.Profile()
        prof.enable()
        s.assess(audio, rec.text)
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(args.top)
        print(f"\ncProfile of one {args.cprofile} assess (sorted by own time):\n" + buf.getvalue())


if __name__ == "__main__":
    main()
