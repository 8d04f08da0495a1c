"""AudioError (a recording that cannot be scored) and the learner-facing messages for each code."""

from __future__ import annotations

import math

from apa.audio.limits import MAX_DURATION_S, MAX_INPUT_RATE, MIN_INPUT_RATE

CODES = ("empty", "too_large", "corrupt", "unsupported", "no_speech", "too_short", "too_long")


class AudioError(ValueError):
    """A recording that cannot be scored. `code` is one of CODES; `str(err)` is for the learner.

    `detail` carries technical context (decoder messages, measured values) for logs only.
    """

    def __init__(self, code: str, message: str, *, detail: str = "") -> None:
        if code not in CODES:
            raise ValueError(f"unknown AudioError code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail

    def __reduce__(self):  # keep code/detail through pickling (multiprocessing, Gradio workers)
        return (_make_audio_error, (self.code, self.message, self.detail))


def _make_audio_error(code: str, message: str, detail: str) -> AudioError:
    return AudioError(code, message, detail=detail)


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.1f} s"


def fmt_short(seconds: float) -> str:
    """Rounded down, so 0.28 s never reads as the 0.3 s it falls short of."""
    return "less than 0.1 s" if seconds < 0.1 else f"{math.floor(seconds * 10) / 10:.1f} s"


def corrupt_error(detail: str) -> AudioError:
    return AudioError(
        "corrupt",
        "We could not read this file: it seems damaged, or it is not an audio recording. "
        "Please record again, or upload a WAV, MP3, M4A, OGG, FLAC or WebM file.",
        detail=detail,
    )


def too_long_error(seconds: float | None) -> AudioError:
    limit = f"{MAX_DURATION_S:g} s"
    if seconds is None or seconds <= MAX_DURATION_S:
        said = f"longer than {limit}"
    else:
        said = f"{_fmt_s(seconds)} long" if seconds < 600 else f"about {seconds / 60:.0f} minutes long"
    return AudioError(
        "too_long",
        f"The recording is {said}; the limit is {limit}. "
        "Please record just the one sentence, starting and stopping close to it.",
        detail=f"duration={seconds}",
    )


def bad_rate_error(sample_rate) -> AudioError:
    return AudioError(
        "unsupported",
        f"The recording's sample rate ({sample_rate} Hz) is not supported; it must be between "
        f"{MIN_INPUT_RATE // 1000} kHz and {MAX_INPUT_RATE // 1000} kHz "
        "(16, 44.1 or 48 kHz are usual). Please record again.",
        detail=f"sample_rate={sample_rate!r}",
    )


def check_format(sample_rate: int, n_channels: int, max_channels: int | None) -> None:
    """Rate and channel count from a decoder's header, checked before any sample is read."""
    if not (MIN_INPUT_RATE <= sample_rate <= MAX_INPUT_RATE):
        raise bad_rate_error(sample_rate)
    if max_channels is not None and n_channels > max_channels:
        raise too_many_channels_error(n_channels)


def too_many_channels_error(n_channels: int) -> AudioError:
    return AudioError(
        "unsupported",
        f"The recording has {n_channels} audio channels; only mono or stereo recordings are "
        "supported. Please record with a single microphone.",
        detail=f"channels={n_channels}",
    )


def empty_error(what: str) -> AudioError:
    return AudioError(
        "empty",
        f"The recording is empty ({what}). Please press record, read the sentence aloud, then press stop.",
        detail=what,
    )
