"""End-to-end CPU latency of `assess` (audio file -> Assessment, model already loaded), fast vs reference.

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.cpu_latency [--runs 5] [--lengths 2 5 10 20]
                                                          [--modes fast reference] [--out bench/results/cpu_latency.md]

Clips are built from the Speechocean762 test split (../shared/speechocean762, or APA_SO762_DIR), see
build_clips: a recorded utterance of the target length, else whole utterances concatenated as recorded and cut to
the length, written as 16 kHz WAV files; the reference text is the texts of the utterances used (at most 40
words, apa.text's limit). Each mode runs in its own process (so the peak memory is that mode's): it loads the scorer
(apa.scorer.load_scorer, the default apa-mini; timed), scores one clip to warm up, then times `--runs` times per
clip `apa.audio.load_audio(path)` + `scorer.assess(audio, text)`, the path app.py's /assess takes. Modes:
"fast" = DecodeOptions(fast=True) (the default), "reference" = DecodeOptions(fast=False) (the reference decoder: 30 s
encoder, one decode step per slot plus probe steps), "transcribe" = the fast decoder with the transcriber beside it
(apa.reading.assess_reading, what the app runs). Also reported: LLM forward calls ("steps") and tokens per
assessment, and whether fast and reference agree (greedy values identical, max |expected difference|).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from apa import config

REPO = config.REPO_ROOT
CORPUS = config.corpus_dir()
MAX_WORDS = 40


# ------------------------------------------------------------------------------------------ clips
def build_clips(lengths: list[float], out_dir: Path, seed: int = 0) -> list[dict]:
    """One WAV per length: a test-split utterance of that length (cut to it; the cut falls in its trailing
    silence), or, when none is that long, whole utterances concatenated as recorded (pauses included) and cut
    to the length; the text is the texts of the utterances used (at most MAX_WORDS words)."""
    import numpy as np
    import soundfile as sf

    from apa.audio import SAMPLE_RATE
    from apa.data import read_kaldi

    recs = read_kaldi(CORPUS, "test")
    dur = {r.utt_id: sf.info(str(r.audio_source)).duration for r in recs if isinstance(r.audio_source, Path)}
    rng = np.random.default_rng(seed)
    clips = []
    for seconds in lengths:
        need = int(round(seconds * SAMPLE_RATE))
        singles = [r for r in recs if seconds <= dur.get(r.utt_id, 0) <= seconds + 0.6]
        if singles:
            chosen = [singles[int(rng.integers(len(singles)))]]
        else:
            chosen, total, words = [], 0.0, 0
            for i in rng.permutation(len(recs)):
                r = recs[i]
                if words + len(r.text.split()) > MAX_WORDS or r.utt_id not in dur:
                    continue
                chosen.append(r)
                total += dur[r.utt_id]
                words += len(r.text.split())
                if total >= seconds:
                    break
        audio = np.concatenate([r.audio() for r in chosen])[:need].astype(np.float32)
        path = out_dir / f"clip_{seconds:g}s.wav"
        sf.write(str(path), audio, SAMPLE_RATE, subtype="FLOAT")
        clips.append({"seconds": seconds, "path": str(path), "text": " ".join(r.text for r in chosen),
                      "utts": [r.utt_id for r in chosen], "file_s": len(audio) / SAMPLE_RATE})
    return clips


# ----------------------------------------------------------------------------------------- worker
def worker(mode: str, clips: list[dict], runs: int, adapter: str | None = None) -> dict:
    t_import = time.perf_counter()
    import numpy as np
    import torch

    from apa.audio import load_audio
    from apa.scorer import DecodeOptions, load_scorer
    from apa.text import to_words

    t_import = time.perf_counter() - t_import
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    # "baseline": the fast decoder with another adapter (e.g. the previous model), in the same run, as
    # that model ran: without the alignment a model taking no evidence needs only for feedback
    scorer = load_scorer(adapter=adapter if mode == "baseline" else None,
                         options=DecodeOptions(fast=mode != "reference", feedback=mode != "baseline"))
    transcriber = None
    if mode == "transcribe":  # the fast decoder with what was said (apa.reading): Whisper on a thread beside it
        from apa.transcribe import load_transcriber

        transcriber = load_transcriber(threads=1)
    load_s = time.perf_counter() - t
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def once(clip: dict):
        t0 = time.perf_counter()
        audio = load_audio(clip["path"])
        if transcriber is not None:
            from apa.reading import assess_reading

            result = assess_reading(scorer, audio, clip["text"], transcriber, on_mismatch="text")
        else:
            result = scorer.assess(audio, clip["text"])
        return time.perf_counter() - t0, audio, result

    once(clips[0])  # warm-up (first call loads the VAD, builds caches)
    out = []
    for clip in clips:
        times = []
        load0 = os.getloadavg()[0]
        for _ in range(runs):
            dt_s, audio, _ = once(clip)
            times.append(dt_s)
        stats = dict(scorer.stats)
        ref = tuple((w.text, w.phones) for w in to_words(clip["text"]))
        readings = scorer.read_slots([audio], [ref])[0]
        out.append({
            "seconds": clip["seconds"], "scored_s": len(audio) / 16000, "words": len(ref),
            "phones": sum(len(p) for _, p in ref), "times": times, "median": statistics.median(times),
            "stats": stats, "load_avg": [load0, os.getloadavg()[0]],
            "greedy": [r.greedy for r in readings], "expected": [r.expected for r in readings],
        })
    return {
        "mode": mode, "adapter": adapter if mode == "baseline" else None, "import_s": t_import, "load_s": load_s, "threads": torch.get_num_threads(),
        "rss_before_load_mb": rss_before / 1024, "rss_loaded_mb": rss_loaded / 1024,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "clips": out,
        "numpy": np.__version__,
    }


# ------------------------------------------------------------------------------------------ table
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _git() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        return rev + ("+uncommitted changes" if dirty else "")
    except OSError:
        return "unknown"


def render(results: dict[str, dict], runs: int, first_load: float) -> str:
    import torch
    import transformers

    fast, reference = results.get("fast"), results.get("reference")
    any_mode = fast or reference
    lines = [
        "# CPU latency of `assess` (apa-mini): audio file -> result, model loaded",
        "",
        f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {_cpu_name()}, {os.cpu_count()} logical CPUs, torch threads {any_mode['threads']}, "
        f"{platform.system()} {platform.release()}",
        f"- versions: python {platform.python_version()}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, numpy {any_mode['numpy']}; repo {_git()}",
        f"- load average (1 min) while measuring: "
        + ", ".join(f"{m} {min(c['load_avg'][0] for c in r['clips']):.2f}-{max(c['load_avg'][1] for c in r['clips']):.2f}"
                    for m, r in results.items()),
        f"- latency: median of {runs} runs of `load_audio(path)` + `scorer.assess(audio, text)` after one warm-up; "
        "clips are Speechocean762 test utterances (one of the length, or several concatenated) cut to length; "
        "'scored' = length after load_audio's silence trim",
        "- fast = `DecodeOptions(fast=True)` (default); reference = `DecodeOptions(fast=False)` (the reference decoder)",
        "",
        "| clip | scored | words / phones | reference median (s) | fast median (s) | speed-up | fast min-max (s) "
        "| reference steps / tokens | fast passes / tokens (side) | greedy same | max abs(dE) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    clips = (fast or reference)["clips"]
    for i, c in enumerate(clips):
        f = fast["clips"][i] if fast else None
        n = reference["clips"][i] if reference else None
        same = dE = ratio = "-"
        if f and n:
            ratio = f"{n['median'] / f['median']:.1f}x"
            diff = sum(a != b for a, b in zip(f["greedy"], n["greedy"]))
            same = "yes" if diff == 0 else f"NO ({diff} differ)"
            dE = f"{max(abs(a - b) for a, b in zip(f['expected'], n['expected'])):.1e}"
        cells = [
            f"{c['seconds']:g} s", f"{c['scored_s']:.2f} s", f"{c['words']} / {c['phones']}",
            f"{n['median']:.3f}" if n else "-", f"**{f['median']:.3f}**" if f else "-", ratio,
            f"{min(f['times']):.3f}-{max(f['times']):.3f}" if f else "-",
            f"{n['stats']['forwards']} / {n['stats']['llm_tokens']}" if n else "-",
            f"{f['stats']['passes']} / {f['stats']['llm_tokens']} ({f['stats']['side_tokens']})" if f else "-",
            same, dE,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    base = results.get("baseline")
    if fast and base:
        lines += ["", f"Shipped model (fast) against the baseline adapter ({base.get('adapter')}), same clips, same run; "
                  "the shipped model's time includes its phone alignment:", "",
                  "| clip | baseline median (s) | shipped median (s) | shipped / baseline |", "|---|---|---|---|"]
        for f, b in zip(fast["clips"], base["clips"]):
            lines.append(f"| {f['seconds']:g} s | {b['median']:.3f} | {f['median']:.3f} | {f['median'] / b['median']:.2f}x |")
    tr = results.get("transcribe")
    if fast and tr:
        lines += ["", "With transcription (`apa.reading.assess_reading`: Whisper base, int8, one thread, on a worker thread "
                  "while the scorer scores; then miscues), same clips, same run:", "",
                  "| clip | fast median (s) | fast + transcription median (s) | ratio |", "|---|---|---|---|"]
        for f, b in zip(fast["clips"], tr["clips"]):
            lines.append(f"| {f['seconds']:g} s | {f['median']:.3f} | {b['median']:.3f} | {b['median'] / f['median']:.2f}x |")
    lines += ["", "| mode | import (s) | model load (s) | RSS after load (MB) | peak RSS (MB) |", "|---|---|---|---|---|"]
    for m, r in results.items():
        lines.append(f"| {m} | {r['import_s']:.2f} | {r['load_s']:.2f} | {r['rss_loaded_mb']:.0f} | {r['peak_rss_mb']:.0f} |")
    lines += [
        "",
        "steps = LLM forward calls per assessment (reference: 1 prefill + 1 per forced stretch + 1 probe per 0-10 slot; "
        "fast: speculative passes); tokens = tokens through the LLM per assessment, side = probe tokens read off the "
        "sequence. Model load is measured in the mode's own process, after a throwaway process loaded the model once "
        f"(page cache warm); that first load took {first_load:.2f} s.",
    ]
    return "\n".join(lines) + "\n"


def warm_up_process() -> float:
    """Load the model once in a throwaway process and return its load time (s), so that every
    mode's own load measures the same steady state (model files and the libraries' bytecode in
    the page cache) rather than which mode happened to run first on a cold machine."""
    code = ("import time; from apa.scorer import load_scorer; t = time.perf_counter(); load_scorer(); "
            "print('LOAD', time.perf_counter() - t)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("LOAD ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit("warm-up load failed:\n" + proc.stderr[-3000:])
    return float(line.split()[1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--lengths", type=float, nargs="+", default=[2, 5, 10, 20])
    ap.add_argument("--modes", nargs="+", default=["fast", "reference"], choices=["fast", "reference", "baseline", "transcribe"])
    ap.add_argument("--baseline-adapter", default=None,
                    help="adapter dir of the 'baseline' mode (fast decoder), e.g. the previous shipped adapter")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cpu_latency.md")
    ap.add_argument("--worker", choices=["fast", "reference", "baseline", "transcribe"], help=argparse.SUPPRESS)
    ap.add_argument("--clips", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if "baseline" in args.modes and not args.baseline_adapter:
        ap.error("--modes baseline needs --baseline-adapter")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.worker:
        clips = json.loads(args.clips.read_text())
        print("RESULT " + json.dumps(worker(args.worker, clips, args.runs, args.baseline_adapter)))
        return
    first_load = warm_up_process()
    with tempfile.TemporaryDirectory(prefix="apa-bench-") as tmp:
        clips = build_clips(args.lengths, Path(tmp))
        spec = Path(tmp) / "clips.json"
        spec.write_text(json.dumps(clips))
        results = {}
        for mode in args.modes:
            print(f"[{mode}] running ...", file=sys.stderr, flush=True)
            proc = subprocess.run(
                [sys.executable, "-m", "bench.cpu_latency", "--worker", mode, "--clips", str(spec), "--runs", str(args.runs)]
                + (["--baseline-adapter", args.baseline_adapter] if args.baseline_adapter else []),
                capture_output=True, text=True, cwd=REPO,
            )
            line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
                raise SystemExit(f"{mode} worker failed")
            results[mode] = json.loads(line[len("RESULT "):])
    table = render(results, args.runs, first_load)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    print(f"saved {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
