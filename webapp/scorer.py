"""The one scorer of this process: chosen once (`configure`), loaded once (`get_scorer`, thread-safe),
replaceable by tests (`set_scorer`).

Importing this module loads nothing, so `import app` stays cheap and tests can inject a fake.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

log = logging.getLogger("apa.app")

GPU_DURATION_S = 60  # ZeroGPU time slot per scoring call

_lock = threading.Lock()
_scorer: Any = None
_choice: dict[str, str | None] = {"model": None, "adapter": None}


def configure(model: str | None = None, adapter: str | None = None) -> None:
    """Choose the model/adapter that get_scorer() will load (CLI flags); None: apa.config decides."""
    _choice.update(model=model, adapter=adapter)


def configured() -> dict[str, str | None]:
    """The model/adapter given to `configure` (None where not given)."""
    return dict(_choice)


def set_scorer(scorer: Any) -> None:
    """Use this scorer (anything with `assess(audio, text)`) from now on; None unloads."""
    global _scorer
    with _lock:
        _scorer = scorer


def current() -> Any:
    """The scorer in use, or None when none is loaded yet (loads nothing)."""
    return _scorer


def get_scorer() -> Any:
    """The process-wide scorer, loaded on first use (thread-safe: one load however many callers)."""
    global _scorer
    if _scorer is None:
        with _lock:
            if _scorer is None:
                from apa.config import resolve_model
                from apa.scorer import load_scorer

                choice = resolve_model(_choice["model"], _choice["adapter"])
                model = None if choice.is_default_model else choice.model  # None: load_scorer builds apa-mini
                t0 = time.perf_counter()
                _scorer = load_scorer(model, choice.adapter or "none")
                log.info("loaded scorer %s in %.1f s", getattr(_scorer, "name", "?"), time.perf_counter() - t0)
    return _scorer


def warm_up() -> float:
    """Do once, at start-up, what the first scoring request would otherwise pay for: the speech
    detector (Silero VAD), CMUdict and the pitch tracker (numba) are loaded on first use, and the scorer builds its caches on
    its first call (seconds on a CPU). Returns the seconds it took; failures are only logged (the
    first request then pays, as before)."""
    t0 = time.perf_counter()
    try:
        from apa.audio import SAMPLE_RATE, speech_probabilities
        from apa.text import cmudict_pronunciations

        t = np.arange(SAMPLE_RATE, dtype=np.float32) / SAMPLE_RATE
        tone = (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
        speech_probabilities(tone)
        cmudict_pronunciations("coach")
        from apa.prosody import analyse

        analyse(tone)  # the pitch tracker compiles on first use
        s = get_scorer()
        if hasattr(s, "assess"):
            s.assess(tone, "WE CALL IT BEAR")
        t = get_transcriber()
        if t is not None:
            t.transcribe(tone)
    except Exception:  # noqa: BLE001 - a warm-up must never stop the app from starting
        log.warning("warm-up failed; the first request will be slower", exc_info=True)
    dt_s = time.perf_counter() - t0
    log.info("warmed up in %.1f s", dt_s)
    return dt_s


def on_gpu(fn):
    """spaces.GPU(fn) when the `spaces` package is importable (Hugging Face ZeroGPU), else fn."""
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(duration=GPU_DURATION_S)(fn)


@on_gpu
def score_audio(audio: np.ndarray, text: str) -> Any:
    """Score 16 kHz float32 audio against the text (the only GPU work). Takes only the array and
    the text, so nothing large is pickled into a ZeroGPU worker."""
    return get_scorer().assess(audio, text)


# ---- the transcriber (what was really said: apa.transcribe, apa.reading) ------------------------
_transcriber_lock = threading.Lock()
_transcriber: dict[str, Any] = {}  # "value": the loaded transcriber or None (off); absent: not loaded yet


def set_transcriber(transcriber: Any) -> None:
    """Use this transcriber (anything with `transcribe(audio) -> Transcript`; None: none) from now
    on; `reset_transcriber()` goes back to the configured one."""
    with _transcriber_lock:
        _transcriber["value"] = transcriber


def reset_transcriber() -> None:
    """Forget the transcriber in use: the next `get_transcriber()` loads the configured one."""
    with _transcriber_lock:
        _transcriber.clear()


def get_transcriber() -> Any:
    """The process-wide transcriber (apa.transcribe.load_transcriber, $APA_TRANSCRIBER), loaded on
    first use; None when transcription is off or the model could not be loaded (logged: scoring
    with a given text goes on without miscues)."""
    if "value" not in _transcriber:
        with _transcriber_lock:
            if "value" not in _transcriber:
                from apa.transcribe import load_transcriber

                t0 = time.perf_counter()
                try:
                    _transcriber["value"] = load_transcriber()
                except Exception:  # noqa: BLE001 - a missing recogniser must not stop scoring
                    log.warning("the transcriber could not be loaded; scoring without it", exc_info=True)
                    _transcriber["value"] = None
                log.info("transcriber %s ready in %.1f s", getattr(_transcriber["value"], "name", None),
                         time.perf_counter() - t0)
    return _transcriber["value"]


@on_gpu
def score_reading(audio: np.ndarray, text: str, on_mismatch: str = "error") -> Any:
    """Score 16 kHz float32 audio against the text with what was really said (apa.reading: miscues,
    the mismatch guard; an empty text is free speech)."""
    from apa.reading import assess_reading

    return assess_reading(get_scorer(), audio, text, get_transcriber(), on_mismatch=on_mismatch)
