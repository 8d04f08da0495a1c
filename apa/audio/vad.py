"""Speech detection in a 16 kHz signal: Silero VAD frame probabilities, the speech span (edges widened
over unvoiced sounds) and silence trimming. The model is loaded lazily on first use and cached."""

from __future__ import annotations

import functools
import importlib.util
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from apa.audio.limits import SAMPLE_RATE

TRIM_MARGIN_S = 0.1  # silence kept around the detected speech
VAD_MODEL_FILE = "silero_vad.jit"  # inside the silero_vad package's data/ folder
VAD_FRAME = 512  # samples per Silero frame at 16 kHz (32 ms)
VAD_ON = 0.5  # frame speech probability that starts speech
VAD_OFF = 0.35  # ... and that ends it (hysteresis, as in silero's own segmenter)
VAD_TARGET_PEAK = 0.5  # level the VAD input is normalised to (robust peak)
EDGE_HOP = 160  # 10 ms frames for the energy-based edge extension
EDGE_MAX_S = 0.3  # a span edge may move outwards at most this far over energetic frames ...
EDGE_DB = 8.0  # ... whose level is this far above the noise floor (10th pct of non-zero frames)


@dataclass(frozen=True)
class SpeechSpan:
    """Where speech is in a 16 kHz signal: samples [start, end) from the first to the last voiced
    frame, widened over adjacent unvoiced sounds (see `find_speech`)."""

    start: int  # sample index at SAMPLE_RATE
    end: int  # sample index at SAMPLE_RATE, exclusive
    voiced_s: float  # total duration of the frames the VAD judged as speech, seconds

    @property
    def duration_s(self) -> float:
        """Length of the span, seconds."""
        return (self.end - self.start) / SAMPLE_RATE


_VAD_LOCK = threading.Lock()  # the TorchScript model keeps recurrent state between frames


@functools.lru_cache(maxsize=1)
def _vad_model():
    """Silero VAD (TorchScript) from the silero-vad wheel, loaded once.

    The file is located without importing `silero_vad`, whose import calls
    torch.set_num_threads(1) for the whole process.
    """
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("apa.audio needs the 'silero-vad' package: pip install silero-vad")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / VAD_MODEL_FILE
    import torch

    with warnings.catch_warnings():  # torch >= 2.10 flags TorchScript as deprecated; it still works
        warnings.simplefilter("ignore", DeprecationWarning)
        model = torch.jit.load(str(path), map_location="cpu")
    model.eval()
    return model


def _vad_input(x: np.ndarray) -> np.ndarray:
    """DC removed, level normalised (robust peak -> VAD_TARGET_PEAK, gain <= 60 dB), padded to
    whole frames. Silero's scores fall for quiet speech; noise stays low at any level."""
    if x.size == 0:
        return np.zeros(VAD_FRAME, np.float32)
    v = x.astype(np.float32) - np.float32(x.mean())
    robust_peak = float(np.percentile(np.abs(v), 99.9))
    gain = min(VAD_TARGET_PEAK / max(robust_peak, 1e-12), 1000.0)
    v = np.clip(v * gain, -1.0, 1.0)
    return np.pad(v, (0, (-len(v)) % VAD_FRAME))


def speech_probabilities(x: np.ndarray) -> np.ndarray:
    """Silero speech probability per 32 ms frame.

    Args:
        x: (n,) float32 at SAMPLE_RATE.

    Returns:
        (ceil(n / 512),) float32 in [0, 1]; frame i covers samples [512 i, 512 (i + 1)).
    """
    import torch

    v = torch.from_numpy(_vad_input(np.asarray(x, dtype=np.float32)))[None]
    model = _vad_model()
    with _VAD_LOCK, torch.inference_mode():
        p = model.audio_forward(v, SAMPLE_RATE)
    return p[0].numpy().astype(np.float32)


def _extend_edges(x: np.ndarray, start: int, end: int) -> tuple[int, int]:
    """Move span edges outwards over adjacent frames louder than the noise floor + EDGE_DB.

    Silero scores unvoiced onsets and codas low ("HOW" starts with ~0.15 s of /h/ before the
    first frame above threshold; final /s/, /t/ releases fade likewise), so the VAD span alone
    would clip them. Each edge moves at most EDGE_MAX_S.
    """
    n = len(x) // EDGE_HOP
    if n < 2:
        return start, end
    frames = x[: n * EDGE_HOP].astype(np.float64).reshape(n, EDGE_HOP)
    level = 10 * np.log10(np.mean(frames * frames, axis=1) + 1e-12)
    live = level > -100.0  # digital silence (zero padding) would drag the floor estimate down
    floor = float(np.percentile(level[live], 10)) if live.any() else -120.0
    loud = level > floor + EDGE_DB
    max_frames = round(EDGE_MAX_S * SAMPLE_RATE / EDGE_HOP)
    i = min(start // EDGE_HOP, n)
    lo = max(0, i - max_frames)
    while i > lo and loud[i - 1]:
        i -= 1
    j = min(-(-end // EDGE_HOP), n)
    hi = min(n, j + max_frames)
    while j < hi and loud[j]:
        j += 1
    return min(start, i * EDGE_HOP), max(end, min(len(x), j * EDGE_HOP))


def hysteresis(probs: np.ndarray, on: float = VAD_ON, off: float = VAD_OFF) -> np.ndarray:
    """(n_frames,) speech probabilities -> (n_frames,) bool voiced: speech starts at a frame >= on
    and goes on while frames stay >= off."""
    voiced = np.zeros(len(probs), dtype=bool)
    state = False
    for i, p in enumerate(probs):
        state = p >= (off if state else on)
        voiced[i] = state
    return voiced


def find_speech(x: np.ndarray) -> SpeechSpan | None:
    """Locate speech: Silero VAD frames (hysteresis VAD_ON / VAD_OFF on 32 ms frame
    probabilities), the span's edges then extended over adjacent energetic frames (unvoiced
    onsets and codas, at most EDGE_MAX_S each side).

    Args:
        x: (n,) float32 at SAMPLE_RATE.

    Returns:
        The speech span in sample indices, or None if no frame is speech.
    """
    voiced = hysteresis(speech_probabilities(x), VAD_ON, VAD_OFF)
    idx = np.flatnonzero(voiced)
    if idx.size == 0:
        return None
    start = int(idx[0]) * VAD_FRAME
    end = min(len(x), (int(idx[-1]) + 1) * VAD_FRAME)
    start, end = _extend_edges(np.asarray(x), start, end)
    return SpeechSpan(start=start, end=end, voiced_s=min(idx.size * VAD_FRAME, len(x)) / SAMPLE_RATE)


def trim_silence(x: np.ndarray, span: SpeechSpan | None = None) -> np.ndarray:
    """Cut leading and trailing non-speech, keeping TRIM_MARGIN_S on each side.

    Args:
        x: (n,) float32 at SAMPLE_RATE.
        span: a `find_speech(x)` result, to avoid running the detector twice.

    Returns:
        (m,) float32 view of x, m <= n; x itself when no speech is found.
    """
    if span is None:
        span = find_speech(x)
    if span is None:
        return x
    margin = round(TRIM_MARGIN_S * SAMPLE_RATE)
    return x[max(0, span.start - margin) : min(len(x), span.end + margin)]
