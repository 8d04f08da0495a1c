"""Uploads through the live app (webapp.uploads, webapp.session): upload caps, the files served,
privacy of recordings (deleted after each request, never logged, "score again" from memory), and
fault isolation (a failed request leaves the next results unchanged).

Hostile audio is fuzzed in tests/test_audio.py, zips and CSV in tests/test_batch.py, decoder
faults in tests/test_scorer.py, the parser's timing in tests/test_prompts_parsing.py.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import time
import uuid
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
import soundfile as sf

import app
from apa import audio
from webapp import handlers, layout, session, uploads

pytestmark = [  # raised inside gradio's queue with pandas 3; not ours
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

REPO = Path(__file__).resolve().parents[1]
SR = audio.SAMPLE_RATE
CLIP_TEXT = "WE CALL IT BEAR"  # what the `clip` / `speech` fixtures say
# the most samples apa.audio ever holds for learner audio: 30 s at 192 kHz, stereo (46 MB float32)


# header fields that carry a size, a rate or a count, per seed format: (offset, width)


# ------------------------------------------------------------------------------ live server


def wav_with_marker(x: np.ndarray, marker: bytes, sr: int = SR) -> bytes:
    """A 16-bit WAV with an extra RIFF chunk holding `marker` (decoders skip unknown chunks)."""
    data = (np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes()
    chunk = b"apaM" + struct.pack("<I", len(marker)) + marker + (b"\0" if len(marker) % 2 else b"")
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sr, sr * 2, 2, 16)
    body = b"WAVE" + fmt + chunk + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def files_under(*dirs: Path) -> set[Path]:
    out: set[Path] = set()
    for d in dirs:
        if d.is_dir():
            out |= {p for p in d.rglob("*") if p.is_file()}
    return out


def scratch_dirs() -> list[Path]:
    tmp = Path(tempfile.gettempdir())
    return [tmp / "apa-app", *tmp.glob("apa-batch-*")]


def test_no_share_no_extra_paths_no_conversion(live):
    demo = live["demo"]
    kw = app.launch_kwargs()
    assert "share" not in kw and "allowed_paths" not in kw and not demo.share
    assert list(demo.allowed_paths or []) == []
    assert kw["max_file_size"] == layout.MAX_UPLOAD_BYTES == 100_000_000
    # the audio inputs hand the uploaded file over untouched: Gradio decodes nothing (format=None),
    # so only apa.audio reads uploads, under its size and duration caps
    audios = [b for b in demo.blocks.values() if isinstance(b, gr.Audio) and b.interactive is not False]
    assert len(audios) == 2 and all(a.format is None and a.type == "filepath" for a in audios)


@pytest.mark.parametrize(
    "path",
    [
        "file=/etc/passwd",
        "gradio_api/file=/etc/passwd",
        "gradio_api/file=../../../../etc/passwd",
        "gradio_api/file=%2Fetc%2Fpasswd",
        "gradio_api/file=/proc/self/environ",
        f"gradio_api/file={REPO / 'app.py'}",
        f"gradio_api/file={REPO / 'assets' / 'sentences.json'}",
        "gradio_api/file=http://127.0.0.1:22/",
        "gradio_api/file=http://169.254.169.254/latest/meta-data/",
    ],
)
def test_only_the_apps_own_files_are_served(live, path):
    r = httpx.get(live["url"] + path, timeout=10)
    assert r.status_code in (403, 404), (path, r.status_code, r.text[:200])
    assert "root:" not in r.text and "def build_demo" not in r.text


def _raw_call(url: str, data: list) -> tuple[str, str]:
    """POST /gradio_api/call/assess with a raw payload; (last SSE event, its data)."""
    r = httpx.post(url + "gradio_api/call/assess", json={"data": data}, timeout=10)
    if r.status_code != 200:
        return "http", f"{r.status_code} {r.text}"
    event_id = r.json()["event_id"]
    with httpx.stream("GET", url + f"gradio_api/call/assess/{event_id}", timeout=30) as s:
        lines = [ln for ln in s.iter_lines() if ln]
    events = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("event:")]
    datas = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("data:")]
    return events[-1], datas[-1] if datas else ""


def test_api_never_reads_server_paths(live, so762_dir):
    """A payload naming a file on the server (not uploaded) is refused before the handler runs:
    neither /etc/passwd nor a real recording lying on the server is read or scored."""
    clip = so762_dir / "WAVE" / "SPEAKER0001" / "000010011.opus"
    calls = live["fake"].calls
    for target in ("/etc/passwd", str(clip), "../../../../etc/passwd"):
        event, data = _raw_call(live["url"], [{"path": target, "meta": {"_type": "gradio.FileData"}}, CLIP_TEXT])
        assert event in ("error", "http"), (target, event, data)
        assert "root:" not in data
    assert live["fake"].calls == calls
    assert clip.is_file()  # and certainly not deleted


def test_oversized_recording_gets_a_clear_api_error(live, api, tmp_path):
    """Over apa.audio.MAX_FILE_BYTES (20 MB): code too_large, a sentence naming the limit; the
    upload is deleted afterwards."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    big = tmp_path / "long.wav"
    n = audio.MAX_FILE_BYTES // 2 + 1000  # 16-bit samples: just over 20 MB
    sf.write(big, np.zeros(n, np.int16), SR, subtype="PCM_16")  # a 44-byte header + 2 n bytes of silence
    before = files_under(live["uploads"])
    t0 = time.perf_counter()
    with pytest.raises(AppError) as ei:
        api.predict(handle_file(str(big)), CLIP_TEXT, api_name="/assess")
    assert time.perf_counter() - t0 < 20
    assert ei.value.title == "too_large" and "20 MB" in ei.value.message, (ei.value.title, ei.value.message)
    assert files_under(live["uploads"]) == before


def test_upload_over_the_gradio_cap_is_refused(live):
    """Any single upload over MAX_UPLOAD_BYTES (100 MB) is refused with HTTP 413 while it streams;
    nothing of it is left on disk."""
    before = files_under(live["uploads"])
    boundary = "apaboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="huge.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = layout.MAX_UPLOAD_BYTES + 1_000_000
    chunk = bytes(1 << 20)

    def body():
        yield head
        sent = 0
        while sent < size:
            yield chunk
            sent += len(chunk)
        yield tail

    t0 = time.perf_counter()
    try:
        r = httpx.post(
            live["url"] + "gradio_api/upload",
            content=body(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            timeout=60,
        )
        status = r.status_code
    except httpx.HTTPError:  # the server may close the connection mid-stream: also a refusal
        status = 413
    assert status == 413
    assert time.perf_counter() - t0 < 30
    assert files_under(live["uploads"]) == before


# ------------------------------------------------------------------------------ privacy and temp files


def test_uploads_are_deleted_after_each_request_success_and_failure(live, api, speech, tmp_path, monkeypatch):
    """Files under the server's upload folder (private to this module) before / after /assess
    requests that succeed or fail: the same. The API path writes no scratch file of its own
    (the shared scratch folders are not compared: other processes may use them)."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    written = []
    real_scratch = uploads.scratch_file
    monkeypatch.setattr(uploads, "scratch_file", lambda name: written.append(name) or real_scratch(name))
    good = tmp_path / "good.wav"
    good.write_bytes(wav_with_marker(speech, b"x"))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4)
    before = files_under(live["uploads"])
    res = api.predict(handle_file(str(good)), CLIP_TEXT, api_name="/assess")
    assert res["text"] == CLIP_TEXT
    assert files_under(live["uploads"]) == before
    with pytest.raises(AppError) as ei:
        api.predict(handle_file(str(bad)), CLIP_TEXT, api_name="/assess")
    assert ei.value.title == "corrupt"
    with pytest.raises(AppError):
        api.predict(handle_file(str(good)), "", api_name="/assess")  # bad text: upload deleted too
    assert files_under(live["uploads"]) == before
    assert not [d for d in live["uploads"].iterdir() if d.is_dir() and not any(d.iterdir())]  # no empty folders
    assert written == []


def test_recording_bytes_are_not_logged_nor_kept(live, api, speech, tmp_path, caplog, capfd):
    """A recording with a unique marker in its bytes: after a good and a failing request, the
    marker is in no log line and no file under the upload folder, our scratch folders or /tmp."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    marker = f"APA-PRIVACY-{uuid.uuid4().hex}".encode()
    clip = tmp_path / "mine.wav"
    clip.write_bytes(wav_with_marker(speech, marker))
    broken = tmp_path / "mine-broken.wav"
    broken.write_bytes(marker + bytes(3000) + marker)
    t_start = time.time()
    caplog.set_level("DEBUG")
    assert api.predict(handle_file(str(clip)), CLIP_TEXT, api_name="/assess")["text"] == CLIP_TEXT
    with pytest.raises(AppError):
        api.predict(handle_file(str(broken)), CLIP_TEXT, api_name="/assess")
    clip.unlink()
    broken.unlink()
    out, err = capfd.readouterr()
    text = caplog.text + out + err
    assert marker.decode() not in text
    tmp = Path(tempfile.gettempdir())
    candidates = files_under(live["uploads"], *scratch_dirs())
    candidates |= {p for p in tmp.iterdir() if p.is_file() and p.stat().st_mtime >= t_start - 1}
    leaks = [p for p in candidates if p.stat().st_size < 50_000_000 and marker in p.read_bytes()]
    assert leaks == []


class _Ctx:
    """Pretend to be inside a Gradio event: LocalContext's blocks / event id / request."""

    def __init__(self, blocks=None, event_id=None, session=None):
        from types import SimpleNamespace

        from gradio.context import LocalContext

        self.vars = [
            (LocalContext.blocks, blocks),
            (LocalContext.event_id, event_id),
            (LocalContext.request, SimpleNamespace(session_hash=session) if session else None),
        ]

    def __enter__(self):
        self.tokens = [(v, v.set(x)) for v, x in self.vars]

    def __exit__(self, *exc):
        for v, t in reversed(self.tokens):
            v.reset(t)


def _fake_upload(upload_dir: Path, data: bytes, name: str = "audio.wav") -> Path:
    d = upload_dir / uuid.uuid4().hex
    d.mkdir()
    p = d / name
    p.write_bytes(data)
    return p


def test_learner_upload_is_deleted_and_score_again_uses_memory(live, speech, monkeypatch, fake_scorer_class, no_progress, use_scorer):
    use_scorer(fake_scorer_class())
    session.recent_clear()
    up = _fake_upload(live["uploads"], wav_with_marker(speech, b"m"))
    with _Ctx(session="s1"):
        first = handlers.learner_score(str(up), CLIP_TEXT, [], progress=no_progress)
    assert not up.exists() and not up.parent.exists()
    with _Ctx(session="s1"):  # "Score this recording again" after the file is gone
        again = handlers.learner_score(str(up), "WE CALL IT", [], progress=no_progress)
    assert "CALL</span>" in again[0] and len(first[4]) == 1
    with _Ctx(session="s2"), pytest.raises(gr.Error, match="could not be found"):
        handlers.learner_score(str(up), CLIP_TEXT, [], progress=no_progress)  # another session: not shared
    monkeypatch.setattr(session, "RECENT_TTL_S", 0.0)  # kept at most RECENT_TTL_S
    with _Ctx(session="s1"), pytest.raises(gr.Error, match="could not be found"):
        handlers.learner_score(str(up), CLIP_TEXT, [], progress=no_progress)
    monkeypatch.setattr(session, "RECENT_TTL_S", 600.0)
    # a bad sentence: the recording is deleted, but kept in memory so the fixed sentence scores it
    up2 = _fake_upload(live["uploads"], wav_with_marker(speech, b"n"))
    with _Ctx(session="s3"), pytest.raises(gr.Error):
        handlers.learner_score(str(up2), "", [], progress=no_progress)
    assert not up2.exists()
    with _Ctx(session="s3"):
        assert "BEAR</span>" in handlers.learner_score(str(up2), CLIP_TEXT, [], progress=no_progress)[0]
    # memory is bounded: RECENT_MAX sessions
    for i in range(session.RECENT_MAX + 5):
        session.recent_put(f"x{i}", "p", np.zeros(1, np.float32))
    assert session.recent_count() == session.RECENT_MAX


def test_uploads_shared_with_another_request_are_kept(live, speech):
    """Uploads are content-addressed: identical bytes from two clients share one path. A request
    does not delete a file that another queued request carries, nor one uploaded again meanwhile,
    nor anything outside Gradio's upload folder."""
    from types import SimpleNamespace

    up = _fake_upload(live["uploads"], b"same bytes")
    other = SimpleNamespace(data=SimpleNamespace(data=[{"path": str(up), "meta": {"_type": "gradio.FileData"}}, "HI"]))
    mine = SimpleNamespace(data=SimpleNamespace(data=[{"path": str(up)}, "HI"]))
    blocks = SimpleNamespace(_queue=SimpleNamespace(event_ids_to_events={"me": mine, "other": other}))
    claims = uploads.claim_uploads([str(up)])
    with _Ctx(blocks=blocks, event_id="me"):
        assert uploads.release_uploads(claims) == 0
    assert up.exists()
    blocks._queue.event_ids_to_events.pop("other")
    again = up.with_name("tmp-upload")
    again.write_bytes(b"same bytes")
    os.replace(again, up)  # uploaded again since the claim (Gradio renames a temp file): a new inode
    with _Ctx(blocks=blocks, event_id="me"):
        assert uploads.release_uploads(claims) == 0
        assert up.exists()
        assert uploads.release_uploads(uploads.claim_uploads([str(up)])) == 1
    assert not up.exists()
    outside = Path(tempfile.mkdtemp()) / "mine.wav"
    outside.write_bytes(b"x")
    assert uploads.release_uploads(uploads.claim_uploads([str(outside), None, 3])) == 0 and outside.exists()


def test_identical_concurrent_uploads_are_all_scored_then_deleted(live, speech, tmp_path, monkeypatch, fake_scorer_class, client_as, use_scorer):
    """Four clients send the same bytes at once (one shared path in Gradio's cache): every
    request is scored (none finds its file deleted by another), and the file is gone after."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import handle_file

    use_scorer(fake_scorer_class(delay=0.3))
    clip = tmp_path / "same.wav"
    clip.write_bytes(wav_with_marker(speech, b"same"))
    before = files_under(live["uploads"])

    def one(i):
        return client_as(live["url"], i).predict(handle_file(str(clip)), CLIP_TEXT, api_name="/assess")

    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(one, range(4)))
    assert [r["text"] for r in results] == [CLIP_TEXT] * 4
    time.sleep(0.5)
    assert files_under(live["uploads"]) == before


def test_teacher_uploads_deleted_and_rerun_explains(live, speech, tmp_path, monkeypatch, fake_scorer_class, make_zip, no_progress, use_scorer):
    use_scorer(fake_scorer_class())
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))  # batch folders land here
    wav = wav_with_marker(speech, b"t")
    a = _fake_upload(live["uploads"], wav, "a.wav")
    z = _fake_upload(live["uploads"], make_zip(tmp_path / "c.zip", {"b.wav": wav}).read_bytes(), "class.zip")
    refs = _fake_upload(live["uploads"], b"file,text\na.wav,WE CALL IT BEAR\nb.wav,WE CALL IT BEAR\n", "refs.csv")
    batch_dirs = set(Path(tempfile.gettempdir()).glob("apa-batch-*"))
    table, download, summary = handlers.teacher_score([str(a), str(z)], str(refs), progress=no_progress)
    assert summary.startswith("**2 of 2**")
    assert not a.exists() and not z.exists() and not refs.exists()
    assert set(Path(tempfile.gettempdir()).glob("apa-batch-*")) <= batch_dirs
    with pytest.raises(gr.Error, match="no longer on the server"):
        handlers.teacher_score([str(a), str(z)], str(refs), progress=no_progress)
    # failure path (no CSV): the uploads are deleted too, and the batch folder
    c = _fake_upload(live["uploads"], wav, "c.wav")
    with pytest.raises(gr.Error, match="CSV"):
        handlers.teacher_score([str(c)], None, progress=no_progress)
    assert not c.exists()
    assert set(Path(tempfile.gettempdir()).glob("apa-batch-*")) <= batch_dirs


# ------------------------------------------------------------------------------ fault isolation


def test_a_failed_request_leaves_the_next_ones_correct(live, api, speech, tmp_path, monkeypatch, use_scorer, fake_scorer_class):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    class FlakyScorer(fake_scorer_class):
        """Raises on its 2nd call (a model error), otherwise FakeScorer."""

        def assess(self, audio_, text):
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("injected model failure")
            self.calls -= 1
            return super().assess(audio_, text)

    flaky = FlakyScorer()
    use_scorer(flaky)
    good = tmp_path / "good.wav"
    good.write_bytes(wav_with_marker(speech, b"g"))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"\0" * 100)
    first = api.predict(handle_file(str(good)), CLIP_TEXT, api_name="/assess")
    with pytest.raises(AppError) as ei:
        api.predict(handle_file(str(good)), CLIP_TEXT, api_name="/assess")
    assert ei.value.title == "internal_error" and "injected" not in ei.value.message
    with pytest.raises(AppError) as ei:
        api.predict(handle_file(str(bad)), CLIP_TEXT, api_name="/assess")
    assert ei.value.title == "corrupt"
    assert api.predict(handle_file(str(good)), CLIP_TEXT, api_name="/assess") == first
    other = api.predict(handle_file(str(good)), "WE CALL IT", api_name="/assess")
    assert other["text"] == "WE CALL IT" and len(other["words"]) == 3
