"""Samples at any rate and channel count -> mono float32 at SAMPLE_RATE (soxr)."""

from __future__ import annotations

import logging

import numpy as np

from apa.audio.errors import AudioError, bad_rate_error, empty_error, too_many_channels_error
from apa.audio.limits import MAX_INPUT_RATE, MAX_MIX_CHANNELS, MAX_NONFINITE_FRACTION, MIN_INPUT_RATE, SAMPLE_RATE

log = logging.getLogger(__name__)


def _as_float(a: np.ndarray) -> np.ndarray:
    """Integer PCM -> float in [-1, 1); float stays; anything else is a TypeError."""
    if a.dtype.kind == "f":
        return a.astype(np.float32, copy=False)
    if a.dtype.kind == "i":
        return (a / float(2 ** (8 * a.dtype.itemsize - 1))).astype(np.float32)
    if a.dtype.kind == "u":
        half = float(2 ** (8 * a.dtype.itemsize - 1))
        return ((a - half) / half).astype(np.float32)
    raise TypeError(f"audio samples must be integer or float, not {a.dtype}")


def _replace_nonfinite(a: np.ndarray) -> np.ndarray:
    """Zero a few NaN/inf samples; reject the recording when more than MAX_NONFINITE_FRACTION are."""
    bad = ~np.isfinite(a)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return a
    fraction = n_bad / a.size
    if fraction > MAX_NONFINITE_FRACTION:
        raise AudioError(
            "corrupt",
            f"The recording is damaged: {fraction:.0%} of its samples are invalid (not a number). Please record again.",
            detail=f"{n_bad} of {a.size} samples are NaN/inf",
        )
    log.warning("audio: replaced %d NaN/inf samples (of %d) with 0", n_bad, a.size)
    a = a.copy()
    a[bad] = 0.0
    return a


def to_mono_16k(samples: np.ndarray, sample_rate: float) -> np.ndarray:
    """Mix down to mono and resample to SAMPLE_RATE with soxr (high quality).

    Args:
        samples: (n_samples,) or (n_samples, n_channels <= MAX_MIX_CHANNELS); float (nominally
            in [-1, 1]) or integer PCM (scaled by its full range). NaN/inf samples are zeroed when they are at
            most MAX_NONFINITE_FRACTION of the data, else AudioError("corrupt").
        sample_rate: input rate in Hz, MIN_INPUT_RATE..MAX_INPUT_RATE (else "unsupported").

    Returns:
        (round(n_samples * 16000 / sample_rate),) float32 in [-1, 1] (scaled down, not clipped,
        if the source exceeds full scale).
    """
    import soxr

    try:
        rate = float(sample_rate)
    except (TypeError, ValueError):
        rate = float("nan")
    if not (MIN_INPUT_RATE <= rate <= MAX_INPUT_RATE):
        raise bad_rate_error(sample_rate)
    a = np.asarray(samples)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"samples must have shape (n,) or (n, channels), got {a.shape}")
    if a.shape[1] > MAX_MIX_CHANNELS:  # a damaged header, or (channels, n) passed transposed
        raise too_many_channels_error(a.shape[1])
    if a.size == 0:
        raise empty_error("no audio samples")
    a = _replace_nonfinite(_as_float(a))
    x = a.mean(axis=1, dtype=np.float64)
    if a.shape[1] > 1:
        # channels in opposite phase cancel out when averaged: fall back to the loudest one
        rms_ch = np.sqrt([np.mean(np.square(a[:, c], dtype=np.float64)) for c in range(a.shape[1])])
        if np.sqrt(np.mean(x * x)) < 0.1 * rms_ch.max():
            x = a[:, int(np.argmax(rms_ch))].astype(np.float64)
    if rate != SAMPLE_RATE:
        x = soxr.resample(x, rate, SAMPLE_RATE, quality="HQ")
    x = x.astype(np.float32)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 1.0:
        x /= peak
    return np.ascontiguousarray(x)
