"""Audio loading and checks: any recording -> trimmed mono 16 kHz float32 speech, or an AudioError.

Pipeline of `load_audio` (the one entry point the app and the model use):

    bytes/path --size check--> decode (soundfile, then PyAV) --> to_mono_16k (soxr)
        --> checks (channels, level, speech, duration) --> trim_silence --> (n,) float32 in [-1, 1]

Every failure is an `AudioError` whose `code` is machine-readable and whose `str()` is a
friendly message that the app shows to the learner verbatim. No decoder exception escapes:
they are wrapped (the decoders' messages are kept in `err.detail` and `__cause__` for logs).

Decisions:

* MAX_DURATION_S is measured on the *whole* recording, before trimming. It is the length the
  learner sees on the recorder's clock, so the rule and the message are predictable; it does not
  depend on what the voice detector decides about a noisy tail; and it is enforced while
  decoding, so a 2-hour upload costs at most MAX_DURATION_S of decoding and memory (decoding
  stops at the cap; the container's declared duration is only used to word the message).
  30 s is 1.5x the longest Speechocean762 utterance (20.4 s), leaving ample room for silence.
* Memory is bounded by what is decoded, not by what the file is: the sample rate
  (MIN_INPUT_RATE..MAX_INPUT_RATE) and the channel count (MAX_CHANNELS for learner audio,
  MAX_MIX_CHANNELS otherwise) are checked from the header *before* any sample is read, so with
  the duration cap at most MAX_DURATION_S * MAX_INPUT_RATE * MAX_CHANNELS samples (46 MB of
  float32) are ever held. (Without this, a 70 kB Ogg Vorbis file declaring 64 channels at
  192 kHz decoded 3 GB before the duration cap stopped it.) Lengths declared in headers (a WAV
  `data` chunk of 4 GB, an Ogg granule position of 2^62) are never used to allocate.
* Non-finite samples (NaN/inf): up to MAX_NONFINITE_FRACTION of the samples are replaced by 0
  (a few glitched samples in a float file should not cost the learner a retry); more than that
  means the file is damaged, and it is rejected with code "corrupt".
* Speech is detected with Silero VAD (the `silero-vad` wheel ships the TorchScript model; it is
  loaded lazily on first use and cached). Its input is level-normalised, because the model
  misses quiet but clean speech (-50 dBFS); white, pink and brown noise and tones score far
  below threshold at every level, so normalising does not let noise through.
  Below SILENCE_PEAK_DBFS the recording is called silent without running the model.
  MIN_SPEECH_S applies to the frames the VAD calls speech (`SpeechSpan.voiced_s`); the span's
  edges are then widened over adjacent unvoiced sounds (/h/, /s/) for trimming only.
  On Speechocean762, 4,994 of 5,000 clips pass; the 6 rejected (5 "no_speech", 1 "too_short")
  all have a total score of 0 from the annotators (noise, breath, no reading).
  Cost: model load ~80 ms (after torch's import), ~30 ms of CPU per 5 s of audio.
* `check=False` skips the learner-facing checks (file size, channel count, duration, level and
  speech) for trusted audio such as the corpus; undecodable input still raises.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import logging
import math
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np

__all__ = [
    "CODES",
    "MAX_DURATION_S",
    "MAX_FILE_BYTES",
    "MIN_SPEECH_S",
    "SAMPLE_RATE",
    "AudioError",
    "SpeechSpan",
    "decode",
    "find_speech",
    "load_audio",
    "speech_probabilities",
    "to_mono_16k",
    "trim_silence",
]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # Hz, what the model consumes
MIN_SPEECH_S = 0.3  # least speech accepted: SpeechSpan.voiced_s, the frames the VAD calls speech
MAX_DURATION_S = 30.0  # longest accepted recording, measured before trimming (see module doc)
MAX_FILE_BYTES = 20_000_000  # 20 MB (decimal, as shown to the learner), checked before decoding
MIN_INPUT_RATE = 4000  # Hz; telephone audio is 8 kHz
MAX_INPUT_RATE = 192000  # Hz; studio audio tops out here
MAX_CHANNELS = 2  # mono or stereo; more is not a learner's microphone (checked if check=True)
MAX_MIX_CHANNELS = 64  # to_mono_16k mixes down at most this many (more: a damaged header)
MAX_NONFINITE_FRACTION = 0.01  # NaN/inf samples above this fraction -> "corrupt"
TRIM_MARGIN_S = 0.1  # silence kept around the detected speech
SILENCE_PEAK_DBFS = -60.0  # peak below this -> silent / microphone muted
VAD_MODEL_FILE = "silero_vad.jit"  # inside the silero_vad package's data/ folder
VAD_FRAME = 512  # samples per Silero frame at 16 kHz (32 ms)
VAD_ON = 0.5  # frame speech probability that starts speech
VAD_OFF = 0.35  # ... and that ends it (hysteresis, as in silero's own segmenter)
VAD_TARGET_PEAK = 0.5  # level the VAD input is normalised to (robust peak)
EDGE_HOP = 160  # 10 ms frames for the energy-based edge extension
EDGE_MAX_S = 0.3  # a span edge may move outwards at most this far over energetic frames ...
EDGE_DB = 8.0  # ... whose level is this far above the noise floor (10th pct of non-zero frames)
_READ_BLOCK = 1 << 16  # frames per soundfile read

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]

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


# --------------------------------------------------------------------------- messages


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.1f} s"


def _fmt_short(seconds: float) -> str:
    """Rounded down, so 0.28 s never reads as the 0.3 s it falls short of."""
    return "less than 0.1 s" if seconds < 0.1 else f"{math.floor(seconds * 10) / 10:.1f} s"


def _corrupt(detail: str) -> AudioError:
    return AudioError(
        "corrupt",
        "We could not read this file: it seems damaged, or it is not an audio recording. "
        "Please record again, or upload a WAV, MP3, M4A, OGG, FLAC or WebM file.",
        detail=detail,
    )


def _too_long(seconds: float | None) -> AudioError:
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


def _bad_rate(sample_rate) -> AudioError:
    return AudioError(
        "unsupported",
        f"The recording's sample rate ({sample_rate} Hz) is not supported; it must be between "
        f"{MIN_INPUT_RATE // 1000} kHz and {MAX_INPUT_RATE // 1000} kHz "
        "(16, 44.1 or 48 kHz are usual). Please record again.",
        detail=f"sample_rate={sample_rate!r}",
    )


def _check_format(sample_rate: int, n_channels: int, max_channels: int | None) -> None:
    """Rate and channel count from a decoder's header, checked before any sample is read."""
    if not (MIN_INPUT_RATE <= sample_rate <= MAX_INPUT_RATE):
        raise _bad_rate(sample_rate)
    if max_channels is not None and n_channels > max_channels:
        raise _too_many_channels(n_channels)


def _too_many_channels(n_channels: int) -> AudioError:
    return AudioError(
        "unsupported",
        f"The recording has {n_channels} audio channels; only mono or stereo recordings are "
        "supported. Please record with a single microphone.",
        detail=f"channels={n_channels}",
    )


def _empty(what: str) -> AudioError:
    return AudioError(
        "empty",
        f"The recording is empty ({what}). Please press record, read the sentence aloud, then press stop.",
        detail=what,
    )


# --------------------------------------------------------------------------- decoding


def _check_size(source: Source, max_bytes: int | None) -> None:
    """Raise "empty"/"too_large" from the size on disk or in memory, before any decoding."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        size = memoryview(source).nbytes
    else:
        try:
            size = os.stat(source).st_size
        except (OSError, ValueError):  # missing, unreadable, NUL in the name
            return  # reported with a proper message by _open
    if size == 0:
        raise _empty("0 bytes")
    if max_bytes is not None and size > max_bytes:
        raise AudioError(
            "too_large",
            f"The file is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB. "
            f"Please upload one sentence (at most {MAX_DURATION_S:g} s), "
            "or a compressed format such as MP3, M4A or OGG.",
            detail=f"size={size}",
        )


def _open(source: Source) -> BinaryIO:
    """A binary file object for bytes or a path. Paths are opened here, never handed to FFmpeg
    as URLs, so names like 'http://...' or 'concat:...' cannot make it read anything else."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source))
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"audio source must be a path or bytes, not {type(source).__name__}")
    path = Path(source)
    try:
        return open(path, "rb")
    except (OSError, ValueError) as exc:
        raise AudioError(
            "empty",
            "No recording was received (the uploaded file could not be found). Please record or upload it again.",
            detail=f"{path}: {exc}",
        ) from exc


def _decode_soundfile(
    f: BinaryIO, max_seconds: float | None, max_channels: int | None = None
) -> tuple[np.ndarray, int, float | None]:
    """libsndfile: wav, flac, ogg/vorbis, ogg/opus, mp3, aiff, ... Reads in blocks, so memory
    follows the data actually present (not the header's claim), and stops once past max_seconds.
    Rate and channels are checked (`_check_format`) before reading.

    Returns (samples (n, ch) float32, sample_rate, declared_duration_s or None).
    """
    import soundfile as sf

    with sf.SoundFile(f) as snd:
        sr, ch = int(snd.samplerate), int(snd.channels)
        if sr <= 0 or ch <= 0:
            raise ValueError(f"invalid header: {sr} Hz, {ch} channels")
        _check_format(sr, ch, max_channels)
        declared = snd.frames / sr if 0 < snd.frames < 2**62 else None
        max_frames = None if max_seconds is None else math.floor(max_seconds * sr)
        blocks, total = [], 0
        while max_frames is None or total <= max_frames:
            block = snd.read(_READ_BLOCK, dtype="float32", always_2d=True)
            if len(block) == 0:
                break
            blocks.append(block)
            total += len(block)
    x = np.concatenate(blocks) if blocks else np.zeros((0, ch), np.float32)
    return x, sr, declared


def _decode_pyav(
    f: BinaryIO, max_seconds: float | None, max_channels: int | None = None
) -> tuple[np.ndarray, int, float | None]:
    """FFmpeg through PyAV: webm/opus, m4a/aac, mp3, the first audio track of a video, ...
    Rate and channels are checked (`_check_format`) before decoding, and again on every decoded
    frame (a stream may change its parameters midway).

    Undecodable packets are skipped (logged); if nothing decodes, the first error is raised.
    Returns (samples (n, ch) float32, sample_rate, declared_duration_s or None).
    """
    import av

    # Nested opens are refused: a playlist (HLS, concat) inside an upload must not read
    # other files; the upload itself comes through our file object.
    with av.open(f, mode="r", options={"protocol_whitelist": "none"}, metadata_errors="ignore") as container:
        if not container.streams.audio:
            raise AudioError(
                "unsupported",
                "This file has no audio track. Please upload an audio recording of the sentence.",
                detail=f"format={container.format.name}",
            )
        stream = container.streams.audio[0]
        declared = None
        if stream.duration is not None and stream.time_base is not None:
            declared = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            declared = container.duration / 1_000_000
        rate = int(stream.rate or 0)
        if rate <= 0:
            raise ValueError("audio stream without a sample rate")
        _check_format(rate, int(stream.channels or 0), max_channels)
        max_frames = None if max_seconds is None else math.floor(max_seconds * rate)
        # packed float32 at the stream's rate; the layout is kept (channels checked later)
        resampler = av.AudioResampler(format="flt", layout=None, rate=rate)
        chunks: list[np.ndarray] = []
        total, bad, first_error = 0, 0, None

        def take(frames) -> None:
            nonlocal total
            for out in frames:
                if max_channels is not None and out.layout.nb_channels > max_channels:
                    raise _too_many_channels(out.layout.nb_channels)
                a = out.to_ndarray().reshape(-1, out.layout.nb_channels)  # (1, n*ch) -> (n, ch)
                if chunks and a.shape[1] != chunks[0].shape[1]:
                    raise ValueError("the channel count changes in the middle of the stream")
                chunks.append(a)
                total += len(a)

        finished = True
        for packet in container.demux(stream):
            try:
                for frame in packet.decode():
                    if max_channels is not None and len(frame.layout.channels) > max_channels:
                        raise _too_many_channels(len(frame.layout.channels))
                    take(resampler.resample(frame))
            except av.error.FFmpegError as exc:
                bad += 1
                first_error = first_error or exc
            if max_frames is not None and total > max_frames:
                finished = False
                break
        if finished:
            take(resampler.resample(None))
        if bad:
            log.warning("audio: skipped %d undecodable packets (%s)", bad, first_error)
        if not chunks and first_error is not None:
            raise first_error
        nch = chunks[0].shape[1] if chunks else 1
    x = np.concatenate(chunks) if chunks else np.zeros((0, nch), np.float32)
    return np.ascontiguousarray(x, dtype=np.float32), rate, declared


def decode(
    source: Source,
    *,
    max_bytes: int | None = None,
    max_duration_s: float | None = None,
    max_channels: int | None = MAX_MIX_CHANNELS,
) -> tuple[np.ndarray, int]:
    """Decode an audio file (path or bytes) to float32 samples at its native rate.

    Formats: wav, flac, ogg/vorbis, ogg/opus, mp3, aiff, ... through libsndfile (fast), else
    browser webm/opus, m4a/aac, mp3 and anything else FFmpeg reads through PyAV.
    The file name is never used to pick a decoder; the content decides.

    Args:
        source: a file path or the file's bytes.
        max_bytes: if given, larger inputs raise AudioError("too_large") before decoding.
        max_duration_s: if given, decoding stops once past it and AudioError("too_long") is
            raised, so time and memory stay bounded whatever the file is or declares.
        max_channels: more channels than this (from the header, before decoding) raise
            AudioError("unsupported"); None: no limit. A sample rate outside
            MIN_INPUT_RATE..MAX_INPUT_RATE is refused the same way, always.

    Returns:
        (samples, sample_rate): float32 array of shape (n_samples, n_channels), nominally in
        [-1, 1] (float sources may exceed it), and the sample rate in Hz.

    Raises:
        AudioError: "empty" (0 bytes, no samples, file not found), "too_large", "too_long",
            "corrupt" (undecodable), "unsupported" (no audio track, sample rate, channels).
    """
    _check_size(source, max_bytes)
    errors: list[str] = []
    last_exc: Exception | None = None
    with _open(source) as f:
        for name, fn in (("soundfile", _decode_soundfile), ("pyav", _decode_pyav)):
            try:
                f.seek(0)
                x, sr, declared = fn(f, max_duration_s, max_channels)
                break
            except AudioError:
                raise
            except Exception as exc:  # noqa: BLE001 - every decoder failure becomes AudioError
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
                last_exc = exc
        else:
            raise _corrupt("; ".join(errors)) from last_exc
    if x.ndim != 2 or x.shape[1] == 0:
        raise _corrupt(f"decoder returned shape {x.shape}")
    if len(x) == 0:
        raise _empty("no audio samples")
    if max_duration_s is not None and len(x) > math.floor(max_duration_s * sr):
        raise _too_long(declared if declared and declared > max_duration_s else None)
    return x, sr


# --------------------------------------------------------------------------- conversion


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
        raise _bad_rate(sample_rate)
    a = np.asarray(samples)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"samples must have shape (n,) or (n, channels), got {a.shape}")
    if a.shape[1] > MAX_MIX_CHANNELS:  # a damaged header, or (channels, n) passed transposed
        raise _too_many_channels(a.shape[1])
    if a.size == 0:
        raise _empty("no audio samples")
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


# --------------------------------------------------------------------------- speech detection

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


def find_speech(x: np.ndarray) -> SpeechSpan | None:
    """Locate speech: Silero VAD frames (hysteresis VAD_ON / VAD_OFF on 32 ms frame
    probabilities), the span's edges then extended over adjacent energetic frames (unvoiced
    onsets and codas, at most EDGE_MAX_S each side).

    Args:
        x: (n,) float32 at SAMPLE_RATE.

    Returns:
        The speech span in sample indices, or None if no frame is speech.
    """
    probs = speech_probabilities(x)
    voiced = np.zeros(len(probs), dtype=bool)
    on = False
    for i, p in enumerate(probs):
        on = p >= (VAD_OFF if on else VAD_ON)
        voiced[i] = on
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


# --------------------------------------------------------------------------- entry point


def _check_speech(x: np.ndarray) -> SpeechSpan:
    """Level and speech checks on a 16 kHz signal; returns the speech span or raises."""
    peak = float(np.max(np.abs(x)))
    if peak == 0.0:
        raise AudioError(
            "no_speech",
            "The recording is completely silent. Please check that your microphone is "
            "connected, selected and not muted, then record again.",
            detail="digital silence",
        )
    peak_dbfs = 20 * math.log10(peak)
    if peak_dbfs < SILENCE_PEAK_DBFS:
        raise AudioError(
            "no_speech",
            f"The recording is almost silent (peak level {peak_dbfs:.0f} dBFS). Please move "
            "closer to the microphone or turn its volume up, then record again.",
            detail=f"peak_dbfs={peak_dbfs:.1f}",
        )
    span = find_speech(x)
    if span is None:
        raise AudioError(
            "no_speech",
            "We could not hear any speech in the recording, only silence or background noise. "
            "Please read the sentence aloud, close to the microphone, in a quiet place.",
            detail=f"peak_dbfs={peak_dbfs:.1f}",
        )
    # voiced_s, not the span: the span's edges are widened over any loud sound, so one stray
    # voiced frame in a fan's noise would otherwise pass as 0.6 s of speech
    if span.voiced_s < MIN_SPEECH_S:
        raise AudioError(
            "too_short",
            f"The recording is only {_fmt_short(span.voiced_s)} of speech; please read the whole "
            f"sentence (at least {MIN_SPEECH_S:g} s).",
            detail=f"speech_span_s={span.duration_s:.3f} voiced_s={span.voiced_s:.3f}",
        )
    return span


def load_audio(
    source: Source | tuple[int, np.ndarray] | None,
    *,
    trim: bool = True,
    check: bool = True,
) -> np.ndarray:
    """Decode, convert to mono 16 kHz, check and trim a learner's recording.

    Args:
        source: a file path, the file's bytes, or Gradio's numpy audio `(sample_rate, samples)`
            with samples (n,) or (n, channels). None (nothing recorded) raises "empty".
        trim: cut leading/trailing non-speech, keeping TRIM_MARGIN_S (a recording without
            detected speech is returned whole when check=False).
        check: enforce MAX_FILE_BYTES, MAX_CHANNELS, MAX_DURATION_S (whole recording, before
            trimming), a minimum level, presence of speech and MIN_SPEECH_S of it. False is for
            trusted audio (the corpus); undecodable input raises either way.

    Returns:
        (n,) float32 at SAMPLE_RATE, values in [-1, 1].

    Raises:
        AudioError: with code "empty", "too_large", "corrupt", "unsupported", "no_speech",
            "too_short" or "too_long" and a message meant for the learner.
    """
    if source is None:
        raise AudioError(
            "empty",
            "No recording was received. Please record yourself reading the sentence, or upload a recording.",
            detail="source is None",
        )
    if isinstance(source, tuple):
        sample_rate, samples = source
        samples = np.asarray(samples)
    else:
        samples, sample_rate = decode(
            source,
            max_bytes=MAX_FILE_BYTES if check else None,
            max_duration_s=MAX_DURATION_S if check else None,
            max_channels=MAX_CHANNELS if check else MAX_MIX_CHANNELS,
        )
    n_channels = samples.shape[1] if samples.ndim == 2 else 1
    if check and n_channels > MAX_CHANNELS:
        raise _too_many_channels(n_channels)
    x = to_mono_16k(samples, sample_rate)
    if check and len(samples) > math.floor(MAX_DURATION_S * float(sample_rate)):
        raise _too_long(len(samples) / float(sample_rate))
    span = _check_speech(x) if check else None
    if trim:
        x = trim_silence(x, span)
    return np.ascontiguousarray(x, dtype=np.float32)
