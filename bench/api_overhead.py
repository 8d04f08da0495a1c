"""What the `/assess` API adds to scoring: the same clips scored in-process and through gradio_client.

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.api_overhead [--lengths 2.5 5 10] [--runs 7] [--fake]
        [--out bench/results/api_overhead.md] [--json FILE] [--stages]

The app runs as a server subprocess on a free 127.0.0.1 port (`--serve`), with the real scorer
(webapp.scorer.get_scorer(): apa-mini + shipped adapter, or APA_MODEL / APA_ADAPTER) or with
`--fake` a scorer that returns fixed scores at once (then the figures are the API's own cost).
This process loads the same scorer. Clips are bench.cpu_latency.build_clips's (16 kHz float WAV
cut from Speechocean762 test utterances). For every clip and run, in turn:

* in-process: `webapp.handlers.assess_file(path, text).to_dict()` (load_audio + checks +
  scorer.assess + the result dict: what the /assess handler runs);
* API: `Client.predict(handle_file(path), text, api_name="/assess")` with one Client made
  beforehand (as an API user keeps one), i.e. upload, queue join, the handler, the result stream.

Runs alternate between the two so that both see the same machine load; one warm-up call of each
first. Reported: median (and min) per clip and path, and the difference. `--stages` adds the
median time of each step of an API call as the client sees it (upload, join, first message,
result) and as the server logs it (APA_STAGE_LOG: queue wait, preprocess, handler, postprocess).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from apa import config  # noqa: E402

from bench.common import free_port, machine, wait_ready  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ server side
class InstantScorer:
    """Fixed scores at once (--fake): what is left is the app's and Gradio's own work."""

    name = "instant-fake"

    def assess(self, audio, text):
        from apa.schema import Assessment, Phone, Sentence, Word
        from apa.text import to_words

        words = tuple(Word(w.text, 8.0, 10.0, 8.0, tuple(Phone(p, 2.0) for p in w.phones)) for w in to_words(text))
        return Assessment(text=text, sentence=Sentence(8.0, 8.0, 8.0, 10.0, 8.0), words=words, model=self.name)


class StageLog:
    """ASGI middleware (bench only, with APA_STAGE_LOG): the server time of each HTTP request, by
    route, written as one JSON line per request; the /assess handler is timed apart."""

    def __init__(self, app, path: str):
        self.app, self.path = app, path

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        start = time.time()
        first = {}

        async def timed_send(message):
            if message["type"] == "http.response.start":
                first["t"] = time.perf_counter() - t0
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            route = scope["path"].rsplit("gradio_api/", 1)[-1].split("/")[0] or "/"
            if route in ("upload", "queue"):
                route = scope["path"].rsplit("gradio_api/", 1)[-1][:10]
            with open(self.path, "a") as f:
                f.write(json.dumps({"route": route, "start": start, "first_byte": first.get("t"),
                                    "total": time.perf_counter() - t0}) + "\n")


def serve(port: int, fake: bool, warm_up: bool = True) -> None:
    """As `python app.py` starts (load, warm up, launch); warm_up=False: as it started before the
    warm-up existed (the first request pays for loading the VAD, CMUdict and the scorer's caches)."""
    import app
    from webapp import scorer

    if fake:
        scorer.set_scorer(InstantScorer())
    scorer.get_scorer()
    if warm_up:
        scorer.warm_up()
    kw = app.launch_kwargs()
    stage_log = config.stage_log()
    if stage_log:
        from starlette.middleware import Middleware

        kw["app_kwargs"]["middleware"].insert(0, Middleware(StageLog, path=stage_log))
        fn = next(f for f in app.demo.fns.values() if f.api_name == "assess")
        handler = fn.fn

        def timed(*a, **k):
            t0, start = time.perf_counter(), time.time()
            try:
                return handler(*a, **k)
            finally:
                with open(stage_log, "a") as f:
                    f.write(json.dumps({"route": "handler", "start": start, "total": time.perf_counter() - t0}) + "\n")

        fn.fn = timed
    print("ready", flush=True)
    app.demo.launch(server_name="127.0.0.1", server_port=port, quiet=True, **kw)


# ------------------------------------------------------------------------------------------ client side


def _wait(url: str, proc: subprocess.Popen, timeout: float) -> None:
    """bench.common.wait_ready on /config; a server that fails to start ends this run."""
    try:
        wait_ready(url, proc, timeout, path="config", poll_s=0.3)
    except (RuntimeError, TimeoutError) as exc:
        raise SystemExit(f"server did not start: {exc}") from exc


class ClientStages:
    """Times of the steps of one gradio_client call, by wrapping the httpx calls it makes."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, float]] = []

    def install(self):
        import httpx

        real_post, real_stream = httpx.Client.post, httpx.Client.stream
        real_mod_post = httpx.post
        marks = self.marks

        def label(url: str) -> str:
            url = str(url)
            for key in ("upload", "queue/join", "queue/data"):
                if key in url:
                    return key
            return url.rsplit("/", 1)[-1][:20]

        def post(client, url, *a, **k):
            t0 = time.perf_counter()
            r = real_post(client, url, *a, **k)
            marks.append((f"POST {label(url)}", time.perf_counter() - t0))
            return r

        def mod_post(url, *a, **k):
            t0 = time.perf_counter()
            r = real_mod_post(url, *a, **k)
            marks.append((f"POST {label(url)}", time.perf_counter() - t0))
            return r

        httpx.Client.post = post
        httpx.post = mod_post
        return lambda: (setattr(httpx.Client, "post", real_post), setattr(httpx, "post", real_mod_post),
                        setattr(httpx.Client, "stream", real_stream))


BEFORE_SERVE = """
import sys, time
import app
if sys.argv[2] == "fake":
    from apa.schema import Assessment, Phone, Sentence, Word
    from apa.text import to_words

    class InstantScorer:
        name = "instant-fake"

        def assess(self, audio, text):
            words = tuple(Word(w.text, 8.0, 10.0, 8.0, tuple(Phone(p, 2.0) for p in w.phones)) for w in to_words(text))
            return Assessment(text=text, sentence=Sentence(8.0, 8.0, 8.0, 10.0, 8.0), words=words, model=self.name)

    app.set_scorer(InstantScorer())
app.get_scorer()
app.demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]), quiet=True, **app.launch_kwargs())
"""


def start_before_server(tree: Path, port: int, fake: bool, work: Path) -> subprocess.Popen:
    """The app as it was before (a `git archive` of an earlier commit in `tree`, whose app.py has
    get_scorer/set_scorer/demo/launch_kwargs): the same clips through its /assess, in the same run."""
    env = dict(os.environ, GRADIO_TEMP_DIR=str(work / "gradio-before"), PYTHONPATH=str(tree))
    log = open(work / "server-before.log", "wb")  # noqa: SIM115 - the server's life
    cmd = [sys.executable, "-c", BEFORE_SERVE, str(port), "fake" if fake else "real"]
    return subprocess.Popen(cmd, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def run(args: argparse.Namespace) -> dict:
    import certifi

    from bench.cpu_latency import build_clips

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    work = Path(tempfile.mkdtemp(prefix="apa-api-overhead-"))
    stage_log = work / "stages.jsonl"
    env = dict(os.environ, GRADIO_TEMP_DIR=str(work / "gradio"))
    if args.stages:
        env["APA_STAGE_LOG"] = str(stage_log)
    cmd = [sys.executable, "-m", "bench.api_overhead", "--serve", "--port", str(port)]
    cmd += (["--fake"] if args.fake else []) + (["--no-warm-up"] if args.no_warm_up else [])
    log = open(work / "server.log", "wb")  # noqa: SIM115 - the server's life
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    before = None
    if args.before_tree:
        before_url = f"http://127.0.0.1:{(before_port := free_port())}/"
        before = start_before_server(Path(args.before_tree).resolve(), before_port, args.fake, work)
    try:
        from gradio_client import Client, handle_file

        from webapp import handlers, scorer

        if args.fake:
            scorer.set_scorer(InstantScorer())
        t0 = time.perf_counter()
        scorer.get_scorer()
        load_s = time.perf_counter() - t0
        clips = build_clips(args.lengths, work)
        _wait(url, proc, args.ready_timeout)
        client = Client(url, verbose=False)
        # gradio_client builds a new TLS context (loading the CA bundle) for each HTTP call it makes,
        # even to http:// URLs; given one, it reuses it (certificates are still verified)
        tls = ssl.create_default_context(cafile=certifi.where())
        client_tls = Client(url, verbose=False, ssl_verify=tls)
        client_before = None
        if before is not None:
            _wait(before_url, before, args.ready_timeout)
            client_before = Client(before_url, verbose=False)

        def in_process(c: dict) -> float:
            t = time.perf_counter()
            res = handlers.assess_file(c["path"], c["text"]).to_dict()
            dt_s = time.perf_counter() - t
            assert res["text"] == c["text"]
            return dt_s

        def api(c: dict, via=client) -> float:
            t = time.perf_counter()
            res = via.predict(handle_file(c["path"]), c["text"], api_name="/assess")
            dt_s = time.perf_counter() - t
            assert res["text"] == c["text"], res
            return dt_s

        # first calls (VAD and CMUdict loaded, caches built) are reported apart, not in the medians
        first = {"in_process": in_process(clips[0]), "api": api(clips[0])}
        api(clips[0], client_tls)
        if client_before is not None:
            first["api_before"] = api(clips[0], client_before)
        stages = ClientStages()
        undo = stages.install() if args.stages else None
        rows = []
        for c in clips:
            t_in, t_api, t_tls, t_before, client_steps = [], [], [], [], []
            for _ in range(args.runs):
                t_in.append(in_process(c))
                if client_before is not None:
                    t_before.append(api(c, client_before))
                stages.marks.clear()
                t_api.append(api(c))
                client_steps.append(list(stages.marks))
                t_tls.append(api(c, client_tls))
            rows.append({"seconds": c["seconds"], "text_words": len(c["text"].split()), "in_process": t_in,
                         "api": t_api, "api_one_tls": t_tls, "api_before": t_before, "client_steps": client_steps})
        if undo:
            undo()
    finally:
        for p in (proc, before):
            if p is None:
                continue
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()
    server_stages = []
    if stage_log.exists():
        server_stages = [json.loads(line) for line in stage_log.read_text().splitlines() if line.strip()]
    return {"date": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine(), "fake": args.fake,
            "runs": args.runs, "scorer": getattr(scorer.current(), "name", "?"), "load_s": load_s, "rows": rows,
            "first": first, "server_warm_up": not args.no_warm_up,
            "server_stages": server_stages, "omp_threads": config.omp_threads() or ""}


def _median_steps(steps_per_run: list[list[tuple[str, float]]]) -> dict[str, float]:
    by: dict[str, list[float]] = {}
    for steps in steps_per_run:
        seen: dict[str, float] = {}
        for name, t in steps:
            seen[name] = seen.get(name, 0.0) + t
        for name, t in seen.items():
            by.setdefault(name, []).append(t)
    return {k: statistics.median(v) for k, v in by.items()}


PATHS = {
    "in_process": "in-process",
    "api_before": "API, app before (client defaults)",
    "api": "API (client defaults)",
    "api_one_tls": "API, client with one TLS context",
}


def table(result: dict) -> str:
    keys = [k for k in PATHS if any(r.get(k) for r in result["rows"])]
    lines = [
        "| clip | words | " + " | ".join(PATHS[k] for k in keys) + " |",
        "|---|---|" + "---|" * len(keys),
    ]
    for r in result["rows"]:
        cells = [f"{statistics.median(r['in_process']):.3f} s"]
        for k in keys[1:]:
            d = statistics.median([y - x for x, y in zip(r["in_process"], r[k])])
            cells.append(f"{statistics.median(r[k]):.3f} s ({d:+.3f})")
        lines.append(f"| {r['seconds']:g} s | {r['text_words']} | " + " | ".join(cells) + " |")
    first = ", ".join(f"{PATHS[k]} {v:.2f} s" for k, v in result["first"].items())
    lines += [
        "",
        "Medians of the runs; in brackets the median of the per-run differences from in-process (the API's cost).",
        f"First call after start (not in the medians): {first} "
        f"(this commit's server {'warmed up at start' if result['server_warm_up'] else 'not warmed up'}; "
        "the app before had no warm-up).",
    ]
    if any(r["client_steps"] and r["client_steps"][0] for r in result["rows"]):
        lines += ["", "API call as the client sees it (median seconds per run; POSTs by route):", ""]
        for r in result["rows"]:
            med = _median_steps(r["client_steps"])
            lines.append(f"- {r['seconds']:g} s clip: " + ", ".join(f"{k} {v:.3f}" for k, v in med.items()))
    if result["server_stages"]:
        by: dict[str, list[float]] = {}
        for s in result["server_stages"]:
            by.setdefault(s["route"], []).append(s["total"])
        lines += ["", "Server side: time per request by route (median seconds, count; APA_STAGE_LOG):", ""]
        lines.append(", ".join(f"{k} {statistics.median(v):.4f} (n={len(v)})" for k, v in sorted(by.items())))
    return "\n".join(lines)


def shown_args(argv: list[str]) -> str:
    """The command line for the results file, without the --note text (printed apart)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--note":
            skip = True
            continue
        out.append(a)
    return " ".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--fake", action="store_true", help="a scorer that answers at once (the API's own cost)")
    p.add_argument("--lengths", type=float, nargs="+", default=[2.5, 5.0, 10.0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--stages", action="store_true", help="also time the steps of each API call")
    p.add_argument("--no-warm-up", action="store_true", help="start the server without webapp.scorer.warm_up()")
    p.add_argument("--before-tree", default=None, help="also time the app of an earlier commit unpacked here "
                   "(git archive REV | tar -x -C DIR); its server runs in the same run")
    p.add_argument("--ready-timeout", type=float, default=300)
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "api_overhead.md"))
    p.add_argument("--json", default=None)
    p.add_argument("--note", default="", help="a line for the results file (e.g. 'before' / 'after')")
    p.add_argument("--append", action="store_true", help="add to --out instead of replacing it")
    args = p.parse_args(argv)
    if args.serve:
        serve(args.port, args.fake, warm_up=not args.no_warm_up)
        return 0
    result = run(args)
    text = table(result)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.out:
        head = (
            f"# /assess API overhead ({result['date']})\n\n"
            f"{result['machine']}; OMP_NUM_THREADS={result['omp_threads'] or 'unset'}; scorer {result['scorer']}; "
            f"{result['runs']} runs per clip and path, alternating; server and client on one machine (loopback).\n"
            f"`python -m bench.api_overhead {shown_args(sys.argv[1:])}`"
            + (f"\n\n{args.note}" if args.note else "")
            + "\n\n"
        )
        out = Path(args.out)
        old = out.read_text(encoding="utf-8") + "\n" if args.append and out.exists() else ""
        out.write_text(old + head + text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
