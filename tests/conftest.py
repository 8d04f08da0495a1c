"""Shared fixtures: the corpus (apa.config.corpus_dir), the tiny random model, the fake scorer, the
app launched on a free port, and small factories. The corpus lives beside the repository
(../shared/speechocean762) unless APA_SO762_DIR says otherwise.

The real model is never loaded by these: `FakeScorer` gives deterministic scores from the text
and the audio and is injected with `app.build_demo(scorer=...)` or `webapp.scorer.set_scorer`.
"""

import contextlib
import os
import socket
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("APA_STRICT_BASE", "1")  # an adapter on a base it was not trained on is an error here
# no telemetry from the test process's own gradio_client / huggingface_hub (read at import), so a
# host name looked up during a test can only come from the app (tests/test_security.py)
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# no real speech recogniser unless a test installs one (tests/test_reading.py): the fake scorer's
# tests stay as they were, and apa.reading is tested with a fake transcriber
os.environ.setdefault("APA_TRANSCRIBER", "none")

from apa.config import corpus_dir, tiny_model_dir  # noqa: E402  (after the settings above)

SO762_DIR = corpus_dir()
CLIP = ("SPEAKER0001", "000010011")  # "WE CALL IT BEAR"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test (deselect with -m 'not slow')")
    config.addinivalue_line("markers", "gpu: needs a CUDA device")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture(scope="session")
def so762_dir() -> Path:
    """Root of the Speechocean762 copy; skips the test when it is absent."""
    if not (SO762_DIR / "resource" / "scores.json").is_file():
        pytest.skip(f"Speechocean762 not found at {SO762_DIR} (set APA_SO762_DIR)")
    return SO762_DIR


@pytest.fixture
def make_assessment():
    """A factory: a 4-word Assessment ("WE CALL IT BEAR", BEAR weakest, then CALL) whose sentence
    scores can be overridden by keyword (apa.render / apa.feedback tests)."""
    from apa.schema import Assessment, Phone, Sentence, Word

    def make(**sentence) -> Assessment:
        s = {"accuracy": 6.0, "fluency": 8.0, "prosodic": 5.0, "completeness": 10.0, "total": 6.0}
        s.update(sentence)
        return Assessment(
            text="WE CALL IT BEAR",
            sentence=Sentence(**s),
            words=(
                Word("WE", 9.5, 10, 9, (Phone("W", 2.0), Phone("IY1", 1.9))),
                Word("CALL", 4.0, 10, 4, (Phone("K", 1.8), Phone("AO1", 0.2), Phone("L", 1.0))),
                Word("IT", 7.5, 10, 7, (Phone("IH1", 1.2), Phone("T", 2.0))),
                Word("BEAR", 1.0, 5, 1, (Phone("B", 0.0), Phone("EH1", None), Phone("R", 0.4))),
            ),
            model="test",
        )

    return make


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """The tiny RANDOM model of apa-mini's class (apa.mini.build_tiny_model, seed 0), built once
    per session; $APA_TINY_DIR: a prebuilt copy (e.g. on a GPU machine without the tokenizer package)."""
    from apa.mini import build_tiny_model

    where = tiny_model_dir()
    return build_tiny_model(where if where else tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="session")
def whisper():
    """The real Whisper-base transcriber from the weight packages (skipped without them), loaded once."""
    from apa.mini.sources import packages_available

    ok, reason = packages_available()
    if not ok:
        pytest.skip(reason)
    from apa.transcribe import load_transcriber

    return load_transcriber("whisper-base")


@pytest.fixture(scope="session")
def clip(so762_dir: Path) -> Path:
    """One corpus recording of "WE CALL IT BEAR" (Opus)."""
    p = so762_dir / "WAVE" / CLIP[0] / f"{CLIP[1]}.opus"
    if not p.is_file():
        pytest.skip(f"{p} not found")
    return p


# ------------------------------------------------------------------------------ fake scorer


class FakeScorer:
    """Deterministic scores from the text (word/phone names) and the audio (length, energy).

    `extra` carries what it saw, so a client can check it got *its own* answer back.
    """

    name = "fake-scorer"

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.calls = 0
        self._lock = threading.Lock()

    def assess(self, audio: np.ndarray, text: str):
        from apa.schema import Assessment, Phone, Sentence, Word
        from apa.text import to_words

        assert audio.dtype == np.float32 and audio.ndim == 1
        with self._lock:
            self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        energy = float(np.sqrt(np.mean(np.square(audio)))) if audio.size else 0.0
        words = []
        for i, w in enumerate(to_words(text)):
            h = zlib.crc32(f"{i}:{w.text}".encode())
            acc = round(1.0 + (h % 91) / 10, 1)  # 1.0 .. 10.0
            phones = tuple(
                Phone(p, round((zlib.crc32(f"{i}:{j}:{p}".encode()) % 21) / 10, 1)) for j, p in enumerate(w.phones)
            )
            words.append(Word(w.text, acc, 10.0 if acc > 5 else 5.0, float(int(acc)), phones))
        mean = round(float(np.mean([w.accuracy for w in words])), 1)
        dur = len(audio) / 16000
        sentence = Sentence(
            accuracy=mean,
            fluency=round(min(10.0, 4.0 + dur), 1),
            prosodic=round(max(0.0, mean - 1.0), 1),
            completeness=10.0,
            total=float(int(mean)),
        )
        return Assessment(
            text=text,
            sentence=sentence,
            words=tuple(words),
            model=self.name,
            extra={"n_samples": len(audio), "energy": round(energy, 5)},
        )

    def assess_batch(self, items):
        return [self.assess(a, t) for a, t in items]


@pytest.fixture(scope="session")
def fake_scorer_class() -> type:
    """`FakeScorer` itself: call it (`fake_scorer_class(delay=0.2)`) or subclass it."""
    return FakeScorer


@pytest.fixture()
def fresh_holder():
    """An empty scorer holder (nothing loaded, nothing configured), restored afterwards."""
    from webapp import scorer as holder

    saved, choice = holder.current(), holder.configured()
    holder.set_scorer(None)
    holder.configure()
    try:
        yield holder
    finally:
        holder.set_scorer(saved)
        holder.configure(**choice)


@pytest.fixture()
def scorer(fresh_holder) -> FakeScorer:
    """A FakeScorer installed as the app's scorer for this test."""
    s = FakeScorer()
    fresh_holder.set_scorer(s)
    return s


# ------------------------------------------------------------------------------ live app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client_as(url: str, n: int):
    """A gradio_client Client that the app (launched with trust_forwarded=True) sees as the
    n-th distinct client address, as behind the Spaces proxy."""
    from gradio_client import Client

    return Client(url, verbose=False, headers={"X-Forwarded-For": f"203.0.113.{n % 250 + 1}"})


@pytest.fixture(scope="session")
def free_port():
    """A function returning a free TCP port on 127.0.0.1."""
    return _free_port


@pytest.fixture(scope="session")
def client_as():
    """`client_as(url, n)`: a gradio_client Client seen as the n-th distinct client address."""
    return _client_as


@contextlib.contextmanager
def _launched(fake):
    import app
    from webapp import scorer as holder

    saved = holder.current()
    demo = app.build_demo(scorer=fake)
    port = _free_port()
    kw = app.launch_kwargs(trust_forwarded=True)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **kw)
    try:
        yield f"http://127.0.0.1:{port}/", demo
    finally:
        demo.close()
        holder.set_scorer(saved)


@pytest.fixture(scope="session")
def launch_app():
    """`with launch_app(fake) as (url, demo):` the app in this process on a free port, scoring with
    `fake`, trusting X-Forwarded-For (so `client_as` clients count as distinct); the previous
    scorer is restored afterwards."""
    return _launched


@pytest.fixture(scope="session")
def no_progress():
    """A stand-in for Gradio's progress callback."""
    return lambda *args, **kwargs: None


@pytest.fixture(scope="session")
def make_zip():
    """`make_zip(path, {name: bytes}, compression=ZIP_STORED)`: write a zip, return its path."""
    import zipfile

    def make(path: Path, members: dict, compression: int = zipfile.ZIP_STORED) -> Path:
        with zipfile.ZipFile(path, "w", compression=compression) as zf:
            for name, data in members.items():
                zf.writestr(name, data)
        return path

    return make


# ------------------------------------------------------------------------------ the live server of a test module


@pytest.fixture(scope="module")
def server():
    """The app on a free port in this process, with the fake scorer; yields its URL and the scorer."""
    fake = FakeScorer(delay=0.05)
    with _launched(fake) as (url, _demo):
        yield url, fake


@pytest.fixture(scope="module")
def upload_dir(tmp_path_factory):
    """Gradio's upload folder for this module's server (GRADIO_TEMP_DIR), private to it."""
    d = tmp_path_factory.mktemp("gradio-uploads")
    old = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(d)
    try:
        yield d
    finally:
        if old is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = old


@pytest.fixture(scope="module")
def live(upload_dir):
    """The app on a free port with a fake scorer and its own upload folder."""
    fake = FakeScorer()
    with _launched(fake) as (url, demo):
        yield {"url": url, "demo": demo, "fake": fake, "uploads": upload_dir}


@pytest.fixture(scope="module")
def api(live):
    """A gradio_client Client of `live`."""
    from gradio_client import Client

    return Client(live["url"], verbose=False)


@pytest.fixture(scope="session")
def speech(clip) -> np.ndarray:
    """The `clip` recording as mono 16 kHz float32."""
    import soundfile as sf

    from apa.audio import to_mono_16k

    x, sr = sf.read(str(clip), dtype="float32")
    return to_mono_16k(x, sr)


@pytest.fixture()
def use_scorer(monkeypatch):
    """`use_scorer(fake)`: the app scores with `fake` for this test only."""
    from webapp import scorer as holder

    def use(fake) -> None:
        monkeypatch.setattr(holder, "get_scorer", lambda: fake)

    return use
