"""A public Space that cannot be turned against others and answers promptly (webapp/security.py).

* No URL is fetched on the server's behalf through any route (files, proxy, API, queue): every
  request naming a URL is refused, and no outside host name is even resolved. Gradio's safe HTTP
  client resolves names itself (and ignores proxies), so `socket.getaddrinfo` is patched in this
  process, where the app runs: any lookup of a name that is not local is recorded and fails.
* One client flooding the queue does not keep a second client out (per-session and per-address
  caps on unfinished scorings, answered at once with HTTP 429).
* Started as `python app.py` with the embedded model, the app resolves no outside host name from
  start-up to its first scored request (in a subprocess under tests/netguard.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

import app
from webapp import security

pytestmark = [
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

REPO = Path(__file__).resolve().parents[1]
CANARY = "apa-canary.example.com"  # any lookup of it means something tried to fetch the URL
URL = f"https://{CANARY}/clip.wav"
LOCAL = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
CLIP_TEXT = "WE CALL IT BEAR"  # what the `clip` fixture says


@pytest.fixture()
def lookups(monkeypatch):
    """Every host name resolved in this process meanwhile; outside names fail."""
    seen: list[str] = []
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else str(host)
        seen.append(name)
        if name not in LOCAL and not name.startswith("127."):
            raise socket.gaierror(socket.EAI_NONAME, f"test: lookup of {name} refused")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    return seen


def outside(names: list[str]) -> list[str]:
    return [n for n in names if n not in LOCAL and not n.startswith("127.")]


@pytest.fixture(scope="module")
def guarded_app(launch_app, fake_scorer_class):
    fake = fake_scorer_class(delay=0.2)
    with launch_app(fake) as (url, demo):
        yield url, demo, fake


def fn_index(demo, api_name: str) -> int:
    return next(i for i, f in demo.fns.items() if f.api_name == api_name)


def file_data(path: str) -> dict:
    return {"path": path, "url": path, "orig_name": "clip.wav", "meta": {"_type": "gradio.FileData"}}


# ------------------------------------------------------------------------------ no fetching


def test_the_canary_detects_a_fetch(lookups, free_port):
    """Without the guard, Gradio's /file= route does resolve (and would fetch) a public URL: the
    check below is not vacuous."""
    import gradio as gr

    with gr.Blocks(analytics_enabled=False) as bare:
        gr.Markdown("bare")
    port = free_port()
    bare.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        httpx.get(f"http://127.0.0.1:{port}/gradio_api/file={URL}", timeout=10)
    finally:
        bare.close()
    assert CANARY in lookups


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(
    "path",
    [
        f"gradio_api/file={URL}",
        f"file={URL}",
        f"gradio_api/file/{URL}",
        f"gradio_api/file={quote(URL, safe='')}",
        f"gradio_api/file={quote(quote(URL, safe=''), safe='')}",
        f"gradio_api/file=//{CANARY}/clip.wav",
        f"gradio_api/file=HTTPS://{CANARY}/clip.wav",
        f"gradio_api/proxy={URL}",
        f"proxy={URL}",
    ],
)
def test_file_and_proxy_routes_fetch_no_url(guarded_app, lookups, method, path):
    r = httpx.request(method, guarded_app[0] + path, timeout=10)
    assert r.status_code == 403, (path, r.status_code, r.text[:200])
    assert outside(lookups) == []


def _payloads(demo) -> dict[str, tuple[str, dict]]:
    audio = file_data(URL)
    learner = fn_index(demo, "learner_score")
    teacher = fn_index(demo, "teacher_score")
    session = {"session_hash": "flood-test-url", "event_data": None, "trigger_id": None}
    return {
        "call": ("gradio_api/call/assess", {"data": [audio, CLIP_TEXT]}),
        "call_v2": ("gradio_api/call/v2/assess", {"audio": audio, "text": CLIP_TEXT}),
        "run": ("gradio_api/run/assess", {"data": [audio, CLIP_TEXT]}),
        "api": ("gradio_api/api/assess", {"data": [audio, CLIP_TEXT]}),
        "join_api": ("gradio_api/queue/join", {"data": [audio, CLIP_TEXT], "fn_index": fn_index(demo, "assess"), **session}),
        "join_learner": ("gradio_api/queue/join", {"data": [audio, CLIP_TEXT, []], "fn_index": learner, **session}),
        "join_teacher": ("gradio_api/queue/join", {"data": [[audio], file_data(URL)], "fn_index": teacher, **session}),
        "join_path_only": ("gradio_api/queue/join", {"data": [{"path": URL}, CLIP_TEXT], "fn_index": learner, **session}),
        "encoded": ("gradio_api/call/assess", {"data": [file_data(quote(URL, safe="")), CLIP_TEXT]}),
        "no_scheme": ("gradio_api/call/assess", {"data": [file_data(f"//{CANARY}/clip.wav"), CLIP_TEXT]}),
    }


@pytest.mark.parametrize(
    "route",
    ["call", "call_v2", "run", "api", "join_api", "join_learner", "join_teacher", "join_path_only", "encoded", "no_scheme"],
)
def test_api_routes_fetch_no_url(guarded_app, lookups, route):
    url, demo, fake = guarded_app
    path, body = _payloads(demo)[route]
    calls = fake.calls
    r = httpx.post(url + path, json=body, timeout=10)
    assert r.status_code == 403, (route, r.status_code, r.text[:300])
    assert r.json()["detail"] == security.URL_MESSAGE
    time.sleep(0.2)
    assert outside(lookups) == [] and fake.calls == calls


def test_odd_bodies_are_refused_not_crashing(guarded_app, lookups):
    url = guarded_app[0]
    deep = "[" * 5000 + "]" * 5000
    r = httpx.post(url + "gradio_api/call/assess", content=deep, headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = httpx.post(url + "gradio_api/call/assess", content=f"data={URL}", headers={"content-type": "text/plain"})
    assert r.status_code == 403
    big = b'{"data": ["' + b"x" * (security.MAX_JSON_BODY_BYTES + 10) + b'"]}'
    r = httpx.post(url + "gradio_api/call/assess", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert outside(lookups) == []


def test_gradio_client_with_a_url_is_refused(guarded_app, lookups, client_as):
    """handle_file(URL) sends the URL for the server to download: refused, nothing resolved."""
    from gradio_client import handle_file

    c = client_as(guarded_app[0], 77)
    with pytest.raises(httpx.HTTPStatusError) as ei:
        c.predict(handle_file(URL), CLIP_TEXT, api_name="/assess")
    assert ei.value.response.status_code == 403
    assert outside(lookups) == []


def test_guard_helpers():
    assert security.looks_like_url("https://x.org/a") and security.looks_like_url(" //x.org/a")
    assert security.looks_like_url("https%3A%2F%2Fx.org") and security.looks_like_url("FTP://x")
    assert not security.looks_like_url("/tmp/gradio/abc/clip.wav") and not security.looks_like_url("WE CALL IT")
    assert security.names_remote_file("/gradio_api/file=https://x.org/a")
    assert security.names_remote_file("/gradio_api/proxy=/anything")
    assert not security.names_remote_file("/gradio_api/file=/tmp/gradio/abc/clip.wav")
    # the browser's own file records carry this server's URL under "url": not a fetch
    own = {"path": "/tmp/gradio/abc/clip.wav", "url": "http://127.0.0.1:7860/gradio_api/file=/tmp/x"}
    assert list(security.payload_urls({"data": [own, "HI"]})) == []
    assert list(security.payload_urls({"data": [[{"path": URL}]]})) == [URL]


# ------------------------------------------------------------------------------ fair queue


def _outcome(job) -> str:
    try:
        job.result(timeout=60)
        return "ok"
    except httpx.HTTPStatusError as exc:
        assert exc.response.json()["detail"] == security.BUSY_MESSAGE
        return f"http_{exc.response.status_code}"


def test_one_flooding_client_does_not_keep_another_out(guarded_app, clip, client_as):
    """A client (one address, several sessions) sends 12 scorings at once; a second client then
    sends one. The flood is cut at the per-address cap, the refusals come at once with the busy
    message, and the second client is scored right after the flood's admitted requests."""
    from gradio_client import handle_file

    url, _, fake = guarded_app
    second = client_as(url, 2)
    second.predict(handle_file(str(clip)), CLIP_TEXT, api_name="/assess")  # warm-up
    t0 = time.perf_counter()
    second.predict(handle_file(str(clip)), CLIP_TEXT, api_name="/assess")
    alone = time.perf_counter() - t0  # one request on an idle server (decoding, VAD, fake scoring)
    flood = [client_as(url, 1) for _ in range(4)]  # same address, four sessions
    jobs = [c.submit(handle_file(str(clip)), CLIP_TEXT, api_name="/assess") for c in flood for _ in range(3)]
    time.sleep(0.5)  # the flood has joined the queue
    t0 = time.perf_counter()
    res = second.predict(handle_file(str(clip)), CLIP_TEXT, api_name="/assess")
    waited = time.perf_counter() - t0
    assert res["text"] == CLIP_TEXT
    with ThreadPoolExecutor(len(jobs)) as ex:
        outcomes = list(ex.map(_outcome, jobs))
    admitted = outcomes.count("ok")
    assert 1 <= admitted <= security.MAX_WAITING_PER_ADDRESS, outcomes
    assert outcomes.count("http_429") == len(jobs) - admitted
    # the second client waited for the flood's admitted scorings at most, not for all 12
    assert waited < 1.5 * (admitted + 1) * alone + 1.0 < len(jobs) * alone, (waited, alone, admitted)


def test_one_session_is_capped_too(guarded_app, clip, client_as):
    from gradio_client import handle_file

    url = guarded_app[0]
    c = client_as(url, 3)
    jobs = [c.submit(handle_file(str(clip)), CLIP_TEXT, api_name="/assess") for _ in range(5)]
    with ThreadPoolExecutor(len(jobs)) as ex:
        outcomes = list(ex.map(_outcome, jobs))
    assert outcomes.count("ok") <= security.MAX_WAITING_PER_SESSION
    assert outcomes.count("http_429") >= len(jobs) - security.MAX_WAITING_PER_SESSION
    # once its requests are done, the same client is served again
    assert c.predict(handle_file(str(clip)), CLIP_TEXT, api_name="/assess")["text"] == CLIP_TEXT


def test_light_events_are_not_capped(guarded_app):
    """The cap counts scorings only: picking a sentence while two scorings wait still works."""
    url, demo, _ = guarded_app
    body = {"data": ["easy"], "fn_index": fn_index(demo, "pick_level"), "session_hash": "light", "event_data": None}
    for _ in range(4):
        assert httpx.post(url + "gradio_api/queue/join", json=body, timeout=10).status_code == 200


def test_client_address_behind_a_proxy():
    scope = {"client": ("10.0.0.9", 1234), "headers": [(b"x-forwarded-for", b"203.0.113.7, 10.0.0.1")]}
    assert security.client_address(scope, trust_forwarded=True) == "203.0.113.7"
    assert security.client_address(scope, trust_forwarded=False) == "10.0.0.9"
    assert security.client_address({"client": ("10.0.0.9", 1), "headers": []}, trust_forwarded=True) == "10.0.0.9"


# ------------------------------------------------------------------------------ no outbound connection


def test_outbound_settings(monkeypatch, tmp_path):
    for var in ("HF_HUB_OFFLINE", "GRADIO_ANALYTICS_ENABLED", "APA_MODEL", "APA_ADAPTER", "APA_ANALYTICS"):
        monkeypatch.setenv(var, "")  # so that monkeypatch restores each afterwards
        monkeypatch.delenv(var)
    assert security.quiet_outbound() is True  # apa-mini + shipped adapter: local
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert security.quiet_outbound(str(tmp_path), "none") is True
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert security.quiet_outbound("Qwen/Qwen2-Audio-7B-Instruct", str(tmp_path)) is False
    assert "HF_HUB_OFFLINE" not in os.environ
    assert security.quiet_outbound(str(tmp_path), "someone/adapter") is False
    security.quiet_outbound(analytics=True)
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "True" and os.environ["APA_ANALYTICS"] == "1"


def test_launch_settings():
    kw = app.launch_kwargs()
    assert kw["run_history"] is False
    assert any(m.cls is security.ServerGuard for m in kw["app_kwargs"]["middleware"])
    assert app.demo.analytics_enabled is False and app.demo.api_open is False


def _start_and_score(tmp_path: Path, clip: Path, extra: list[str], ready_s: float, free_port, client_as) -> list[str]:
    """`python app.py` under tests/netguard.py: the host names it looked up from start-up to the
    end of its first scored /assess request."""
    from gradio_client import handle_file

    log = tmp_path / "lookups.txt"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_HUB_OFFLINE", "GRADIO_ANALYTICS", "APA_ANALYTICS", "SPACE_ID"))}
    env.update(APA_NETGUARD_LOG=str(log), OMP_NUM_THREADS="1", GRADIO_TEMP_DIR=str(tmp_path / "gradio"))
    cmd = [sys.executable, str(REPO / "tests" / "netguard.py"), *extra, "--port", str(port)]
    out = tmp_path / "server.log"
    with open(out, "wb") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + ready_s
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/config", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, out.read_text()[-3000:]
            assert time.monotonic() < deadline, "app did not start:\n" + out.read_text()[-3000:]
            time.sleep(0.3)
        res = client_as(f"http://127.0.0.1:{port}/", 9).predict(handle_file(str(clip)), CLIP_TEXT, api_name="/assess")
        assert res["text"] == CLIP_TEXT
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    stacks = Path(str(log) + ".stacks")
    if stacks.exists():
        print(stacks.read_text())  # where each refused lookup came from
    return log.read_text().split() if log.exists() else []


def test_startup_to_first_request_resolves_no_outside_name_fake_scorer(tmp_path, clip, free_port, client_as):
    """The whole start-up path of `python app.py` (settings, imports, launch) and one scored
    request, with a fake scorer standing in for the model (see the slow test for the real one)."""
    names = _start_and_score(tmp_path, clip, ["--fake"], 90, free_port, client_as)
    assert outside(names) == [], names


@pytest.mark.slow
def test_startup_with_the_embedded_model_resolves_no_outside_name(tmp_path, clip, free_port, client_as):
    """As above with the real embedded model (apa-mini + shipped adapter), when it is built."""
    from apa.config import cache_dir

    if not any(cache_dir().glob("apa-mini*/model.safetensors")):
        pytest.skip(f"apa-mini is not assembled under {cache_dir()}")
    names = _start_and_score(tmp_path, clip, [], 300, free_port, client_as)
    assert outside(names) == [], names
