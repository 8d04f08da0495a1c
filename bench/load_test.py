"""Load test of the app's `/assess` API: N concurrent gradio_client clients for D seconds (loopback only).

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.load_test [--clients 50] [--duration 120]
        [--fake [--fake-delay 0.05]] [--max-requests 5000] [--drain 150] [--rss-bound-mb 300]
        [--out bench/results/load.md] [--json FILE]

It starts the app itself (`python -m bench.load_test --serve ...`, a subprocess on a free
127.0.0.1 port): with the real scorer loaded through the app's loader (`webapp.scorer.get_scorer()`: apa-mini
and its shipped adapter, or APA_MODEL / APA_ADAPTER), or with `--fake` a fake scorer that sleeps
`--fake-delay` seconds and returns fixed scores. The audio still goes through apa.audio (decode,
checks, VAD) on the server in both modes. It waits for the server and one warm-up request, then:

* each client (a thread with its own `gradio_client.Client`) sends /assess requests one after the
  other until `--duration` seconds have passed or `--max-requests` were sent in all; every client
  uploads its own WAV (the same speech, one sample nudged per client, so the clients' uploads are
  different files as they are for real learners);
* a request is "served" when it returns a result; errors are counted by kind: "queue_full" (the
  queue's clear "Queue is full" answer: allowed) and anything else (not allowed: app errors by
  their code, transport errors by exception type);
* requests still running when the duration ends may finish for up to `--drain` seconds; those
  still unfinished then are cancelled and reported as "cut off" (neither served nor errors);
* the server's RSS (psutil) is read after the warm-up ("start"), every second (peak) and after the
  drain ("end"); the growth end - start must stay under `--rss-bound-mb`;
* the clients' recordings still in Gradio's upload folder after the drain are counted (the app
  deletes each at the end of its request; uploads answered "Queue is full" stay until Gradio's
  cache sweep).

Prints a markdown table (also written to --out with the date, machine and versions) and exits
1 when a non-queue-full error happened or the RSS bound was broken. The server is killed at the
end whatever happens. tests/test_load_test.py runs a short form (--fake, 8 clients, 10 s).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from apa.config import corpus_dir  # noqa: E402

from bench.common import free_port, machine, wait_ready  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CORPUS = corpus_dir()
CLIP = CORPUS / "WAVE" / "SPEAKER0001" / "000010011.opus"
CLIP_TEXT = "WE CALL IT BEAR"
SR = 16000


# ------------------------------------------------------------------------------------------ server side
class FakeScorer:
    """Fixed scores after a fixed delay (for --fake): the app path without the model."""

    name = "fake-scorer"

    def __init__(self, delay: float):
        self.delay = delay

    def assess(self, audio, text):
        from apa.schema import Assessment, Phone, Sentence, Word
        from apa.text import to_words

        time.sleep(self.delay)
        words = tuple(Word(w.text, 8.0, 10.0, 8.0, tuple(Phone(p, 2.0) for p in w.phones)) for w in to_words(text))
        return Assessment(text=text, sentence=Sentence(8.0, 8.0, 8.0, 10.0, 8.0), words=words, model=self.name)

    def assess_batch(self, items):
        return [self.assess(a, t) for a, t in items]


def serve(port: int, fake: bool, fake_delay: float) -> None:
    """Run the app on 127.0.0.1:port until killed (the subprocess side)."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import app
    from webapp import scorer as holder

    if fake:
        holder.set_scorer(FakeScorer(fake_delay))
    t0 = time.perf_counter()
    scorer = holder.get_scorer()
    print(f"scorer {getattr(scorer, 'name', '?')} ready in {time.perf_counter() - t0:.1f} s", flush=True)
    app.demo.launch(server_name="127.0.0.1", server_port=port, quiet=True, **app.launch_kwargs())


# ------------------------------------------------------------------------------------------ client side


def make_clips(n: int, out_dir: Path, source: Path | None = None) -> list[Path]:
    """n WAV files of the same speech, each with one sample nudged (distinct bytes)."""
    import numpy as np
    import soundfile as sf

    src = source or CLIP
    if src.is_file():
        x, sr = sf.read(str(src), dtype="float32", always_2d=False)
    else:
        import shutil

        exe = shutil.which("espeak-ng")
        if exe is None:
            raise SystemExit(f"no speech clip: {src} is missing and espeak-ng is not installed")
        wav = out_dir / "espeak.wav"
        subprocess.run([exe, "-w", str(wav), CLIP_TEXT.lower()], check=True, capture_output=True)
        x, sr = sf.read(str(wav), dtype="float32", always_2d=False)
    if x.ndim > 1:
        x = x.mean(axis=1)
    paths = []
    for i in range(n):
        y = x.copy()
        y[i % len(y)] += 1e-3 * (1 + i // len(y))
        p = out_dir / f"client{i:03d}.wav"
        sf.write(str(p), y, sr, subtype="PCM_16")
        paths.append(p)
    return paths


def classify(exc: BaseException) -> str:
    from gradio_client.exceptions import AppError
    from gradio_client.utils import QueueError

    if isinstance(exc, QueueError) or "queue is full" in str(exc).lower():
        return "queue_full"
    if isinstance(exc, AppError):
        return f"app_error:{exc.title}"
    return f"{type(exc).__module__}.{type(exc).__name__}"


def percentile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))
    return xs[k]


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.served = 0
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.error_examples: dict[str, str] = {}
        self.cut_off = 0

    def take_ticket(self, max_requests: int) -> bool:
        with self.lock:
            if self.sent >= max_requests:
                return False
            self.sent += 1
            return True

    def error(self, kind: str, exc: BaseException) -> None:
        with self.lock:
            self.errors[kind] += 1
            self.error_examples.setdefault(kind, str(exc)[:200])


def client_address(i: int) -> str:
    """A distinct documentation address per client, sent as X-Forwarded-For (the server trusts it,
    as behind the Spaces proxy): each client is its own learner for the per-client caps."""
    return f"198.51.{100 + i // 250}.{i % 250 + 1}"


def client_loop(
    url: str, clip: Path, text: str, deadline: float, hard_stop: float, max_requests: int, st: Stats, i: int = 0
) -> None:
    from gradio_client import Client, handle_file

    try:
        client = Client(url, verbose=False, headers={"X-Forwarded-For": client_address(i)})
    except Exception as exc:  # noqa: BLE001
        st.error(f"connect:{type(exc).__name__}", exc)
        return
    while time.monotonic() < deadline and st.take_ticket(max_requests):
        t0 = time.monotonic()
        job = client.submit(handle_file(str(clip)), text, api_name="/assess")
        try:
            res = job.result(timeout=max(1.0, hard_stop - time.monotonic()))
        except TimeoutError:
            job.cancel()
            with st.lock:
                st.cut_off += 1
            return
        except Exception as exc:  # noqa: BLE001
            kind = classify(exc)
            st.error(kind, exc)
            if kind == "queue_full":
                time.sleep(0.5)  # a polite client backs off
            continue
        dt_s = time.monotonic() - t0
        ok = isinstance(res, dict) and res.get("text") == text and len(res.get("words", [])) == len(text.split())
        with st.lock:
            if ok:
                st.served += 1
                st.latencies.append(dt_s)
            else:
                st.errors["wrong_result"] += 1
                st.error_examples.setdefault("wrong_result", repr(res)[:200])


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("gradio", "gradio_client", "torch", "transformers", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def run(args: argparse.Namespace) -> dict:
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}/"
    work = Path(tempfile.mkdtemp(prefix="apa-load-"))
    log_path = Path(args.server_log) if args.server_log else work / "server.log"
    cmd = [sys.executable, "-m", "bench.load_test", "--serve", "--port", str(port)]
    if args.fake:
        cmd += ["--fake", "--fake-delay", str(args.fake_delay)]
    env = dict(os.environ)
    env.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    env["APA_TRUST_FORWARDED"] = "1"  # clients are told apart by X-Forwarded-For (client_address)
    if args.gradio_temp_dir:
        env["GRADIO_TEMP_DIR"] = args.gradio_temp_dir
    upload_dir = Path(env.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")
    t_start = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True)
    result: dict = {}
    try:
        wait_ready(url, proc, args.ready_timeout)
        clips = make_clips(args.clients, work, Path(args.clip) if args.clip else None)
        t_ready = time.monotonic()
        # warm-up: first request (lazy imports, VAD model) is not measured
        from gradio_client import Client, handle_file

        warm = Client(url, verbose=False, headers={"X-Forwarded-For": "192.0.2.1"}).predict(handle_file(str(clips[0])), args.text, api_name="/assess")
        assert warm["text"] == args.text, warm
        rss_start = rss_mb(proc.pid)
        st = Stats()
        peak = [rss_start]
        stop_sampling = threading.Event()

        def sample() -> None:
            while not stop_sampling.wait(1.0):
                try:
                    peak[0] = max(peak[0], rss_mb(proc.pid))
                except Exception:  # noqa: BLE001
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.monotonic()
        deadline = t0 + args.duration
        hard_stop = deadline + args.drain
        threads = [
            threading.Thread(
                target=client_loop,
                args=(url, clips[i], args.text, deadline, hard_stop, args.max_requests, st, i),
                daemon=True,
            )
            for i in range(args.clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(0.0, hard_stop + 30 - time.monotonic()))
        t_end = time.monotonic()
        stop_sampling.set()
        time.sleep(1.0)  # let the server finish cancelled jobs and release their uploads
        # before the server stops (Gradio empties its cache on shutdown): recordings still there
        uploads_left = sum(1 for _ in upload_dir.rglob("client*.wav")) if upload_dir.is_dir() else 0
        rss_end = rss_mb(proc.pid)
        peak[0] = max(peak[0], rss_end)
        lat = st.latencies
        bad = {k: v for k, v in st.errors.items() if k != "queue_full"}
        growth = rss_end - rss_start
        result = {
            "scorer": f"fake (sleeps {args.fake_delay:g} s)" if args.fake else "real (webapp.scorer.get_scorer(): apa-mini)",
            "clients": args.clients,
            "duration_s": args.duration,
            "drain_s": args.drain,
            "startup_s": round(t_ready - t_start, 1),
            "wall_s": round(t_end - t0, 1),
            "sent": st.sent,
            "served": st.served,
            "errors": dict(st.errors),
            "error_examples": st.error_examples,
            "cut_off": st.cut_off,
            "uploads_left": uploads_left,
            "stuck_client_threads": sum(t.is_alive() for t in threads),
            "throughput_rps": round(st.served / max(1e-9, t_end - t0), 2),
            "latency_p50_s": None if not lat else round(statistics.median(lat), 2),
            "latency_p95_s": None if not lat else round(percentile(lat, 95), 2),
            "latency_max_s": None if not lat else round(max(lat), 2),
            "rss_start_mb": round(rss_start, 1),
            "rss_end_mb": round(rss_end, 1),
            "rss_peak_mb": round(peak[0], 1),
            "rss_growth_mb": round(growth, 1),
            "rss_bound_mb": args.rss_bound_mb,
            "ok_errors": not bad,
            "ok_rss": growth < args.rss_bound_mb,
            "server_log": str(log_path),
        }
        result["ok"] = result["ok_errors"] and result["ok_rss"] and result["stuck_client_threads"] == 0
        return result
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)


def table(r: dict) -> str:
    def fmt(v):
        return "–" if v is None else v

    errs = ", ".join(f"{k}: {v}" for k, v in sorted(r["errors"].items())) or "none"
    rows = [
        ("scorer", r["scorer"]),
        ("clients × duration", f"{r['clients']} × {r['duration_s']} s (then up to {r['drain_s']} s to finish)"),
        ("requests sent", r["sent"]),
        ("served (correct result)", r["served"]),
        ("errors by kind", errs),
        ("cut off at the end (still queued, cancelled)", r["cut_off"]),
        ("recordings left in Gradio's upload folder after the run", r["uploads_left"]),
        ("throughput", f"{r['throughput_rps']} req/s over {r['wall_s']} s"),
        ("latency p50 / p95 / max (served)", f"{fmt(r['latency_p50_s'])} / {fmt(r['latency_p95_s'])} / {fmt(r['latency_max_s'])} s"),
        ("server RSS start → end (peak)", f"{r['rss_start_mb']} → {r['rss_end_mb']} MB ({r['rss_peak_mb']} MB)"),
        ("RSS growth (bound)", f"{r['rss_growth_mb']:+} MB (< {r['rss_bound_mb']} MB: {'ok' if r['ok_rss'] else 'BROKEN'})"),
        ("verdict", "pass" if r["ok"] else "FAIL"),
    ]
    out = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    if r["error_examples"]:
        out.append("")
        out += [f"- `{k}`: {v}" for k, v in sorted(r["error_examples"].items())]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--duration", type=float, default=120.0, help="seconds of load")
    p.add_argument("--drain", type=float, default=150.0, help="seconds the last requests may take after it")
    p.add_argument("--max-requests", type=int, default=5000)
    p.add_argument("--fake", action="store_true", help="fake scorer with a fixed delay instead of the model")
    p.add_argument("--fake-delay", type=float, default=0.05)
    p.add_argument("--rss-bound-mb", type=float, default=300.0)
    p.add_argument("--ready-timeout", type=float, default=900.0, help="seconds for the server to load and start")
    p.add_argument("--clip", default=None, help=f"speech clip (default {CLIP})")
    p.add_argument("--text", default=CLIP_TEXT)
    p.add_argument("--out", default=None, help="also write the table (markdown, with date/machine/versions) here")
    p.add_argument("--json", default=None, help="write the raw numbers here")
    p.add_argument("--server-log", default=None)
    p.add_argument("--gradio-temp-dir", default=None, help="GRADIO_TEMP_DIR for the server")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(args.port, args.fake, args.fake_delay)
        return 0
    r = run(args)
    text = table(r)
    print(text, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2), encoding="utf-8")
    if args.out:
        v = versions()
        head = [
            "# Load test: /assess under concurrent clients",
            "",
            f"- date: {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
            f"- machine: {machine()}; server started in {r['startup_s']} s",
            "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
            "- command: `python -m bench.load_test " + " ".join(argv if argv is not None else sys.argv[1:]) + "`",
            "",
        ]
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(head) + "\n" + text + "\n", encoding="utf-8")
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
