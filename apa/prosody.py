"""Intonation and rhythm of a reading: pitch (F0) and loudness over time, pauses, speaking rate.

`analyse(audio, words)` -> `Prosody`. Pitch is `librosa.pyin` (65-400 Hz, a 64 ms window every
FRAME_S), NaN where unvoiced; loudness is the frame RMS in dB below full scale. Word times come from
the alignment (`apa.annotate`); without them (`words` empty or untimed) there are no word marks,
pauses or speaking rate, and `timed` is False.

Pauses: gaps of more than PAUSE_MIN_S between the end of one word and the start of the next.
Speaking rate: words per minute over the span from the first word's start to the last word's end
(pauses inside it included).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["FRAME_S", "PAUSE_MIN_S", "Prosody", "analyse", "pauses", "speaking_rate"]

SAMPLE_RATE = 16000
FRAME_S = 0.02
WINDOW = 1024  # samples (64 ms at 16 kHz)
F0_MIN_HZ = 65.0
F0_MAX_HZ = 400.0
PAUSE_MIN_S = 0.3
SILENCE_DB = -80.0  # loudness floor


@dataclass(frozen=True)
class Prosody:
    """One reading's pitch, loudness and timing.

    times: (T,) seconds of the frames; f0: (T,) Hz, NaN where unvoiced; loudness: (T,) dB (RMS,
    full scale 0 dB, floor SILENCE_DB); words: ((text, start s, end s), ...) from the alignment;
    pauses: ((start s, end s), ...) between words; rate_wpm: words per minute (None untimed);
    duration: the clip's seconds."""

    times: np.ndarray
    f0: np.ndarray
    loudness: np.ndarray
    words: tuple[tuple[str, float, float], ...]
    pauses: tuple[tuple[float, float], ...]
    rate_wpm: float | None
    duration: float

    @property
    def timed(self) -> bool:
        """Whether word times (and so pauses and the speaking rate) are known."""
        return bool(self.words)

    @property
    def voiced_share(self) -> float:
        """Share of frames with a pitch."""
        return float(np.mean(np.isfinite(self.f0))) if len(self.f0) else 0.0


def pauses(words: Sequence[tuple[str, float, float]], min_s: float = PAUSE_MIN_S) -> tuple[tuple[float, float], ...]:
    """Gaps longer than min_s seconds between consecutive words ((text, start, end), in order)."""
    return tuple(
        (a[2], b[1]) for a, b in zip(words, words[1:]) if b[1] - a[2] > min_s
    )


def speaking_rate(words: Sequence[tuple[str, float, float]]) -> float | None:
    """Words per minute from the first word's start to the last word's end; None without words
    or with a span under 0.1 s."""
    if not words:
        return None
    span = words[-1][2] - words[0][1]
    return None if span < 0.1 else len(words) * 60.0 / span


def analyse(audio: np.ndarray, words: Sequence[tuple[str, float | None, float | None]] = ()) -> Prosody:
    """Pitch, loudness, pauses and rate of `audio` ((n,) float32, 16 kHz). words: (text, start s,
    end s) from the alignment; an entry without times makes the whole reading untimed."""
    import librosa

    x = np.asarray(audio, dtype=np.float32)
    x = np.nan_to_num(x)
    hop = int(round(FRAME_S * SAMPLE_RATE))
    duration = len(x) / SAMPLE_RATE
    if len(x) < WINDOW:
        x = np.pad(x, (0, WINDOW - len(x)))
    f0, _voiced, _p = librosa.pyin(
        x, fmin=F0_MIN_HZ, fmax=F0_MAX_HZ, sr=SAMPLE_RATE, frame_length=WINDOW, hop_length=hop
    )
    rms = librosa.feature.rms(y=x, frame_length=WINDOW, hop_length=hop)[0]
    loud = np.maximum(20 * np.log10(np.maximum(rms, 1e-12)), SILENCE_DB)
    n = min(len(f0), len(loud))
    times = np.arange(n) * FRAME_S
    timed = tuple(
        (str(t), float(s), float(e))
        for t, s, e in words
        if s is not None and e is not None and math.isfinite(s) and math.isfinite(e)
    )
    if len(timed) != len(words):
        timed = ()
    return Prosody(
        times=times,
        f0=np.asarray(f0[:n], dtype=np.float64),
        loudness=np.asarray(loud[:n], dtype=np.float64),
        words=timed,
        pauses=pauses(timed),
        rate_wpm=speaking_rate(timed),
        duration=duration,
    )
