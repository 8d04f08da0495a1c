"""Decoding audio files (path or bytes) to float32 samples at their native rate: libsndfile first,
then FFmpeg through PyAV, with size, rate, channel and duration caps enforced while decoding."""

from __future__ import annotations

import io
import logging
import math
import os
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np

from apa.audio.errors import AudioError, check_format, corrupt_error, empty_error, too_long_error, too_many_channels_error
from apa.audio.limits import MAX_DURATION_S, MAX_MIX_CHANNELS

_READ_BLOCK = 1 << 16  # frames per soundfile read

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]

log = logging.getLogger(__name__)


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
        raise empty_error("0 bytes")
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
    Rate and channels are checked (`check_format`) before reading.

    Returns (samples (n, ch) float32, sample_rate, declared_duration_s or None).
    """
    import soundfile as sf

    with sf.SoundFile(f) as snd:
        sr, ch = int(snd.samplerate), int(snd.channels)
        if sr <= 0 or ch <= 0:
            raise ValueError(f"invalid header: {sr} Hz, {ch} channels")
        check_format(sr, ch, max_channels)
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
    Rate and channels are checked (`check_format`) before decoding, and again on every decoded
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
        check_format(rate, int(stream.channels or 0), max_channels)
        max_frames = None if max_seconds is None else math.floor(max_seconds * rate)
        # packed float32 at the stream's rate; the layout is kept (channels checked later)
        resampler = av.AudioResampler(format="flt", layout=None, rate=rate)
        chunks: list[np.ndarray] = []
        total, bad, first_error = 0, 0, None

        def take(frames) -> None:
            nonlocal total
            for out in frames:
                if max_channels is not None and out.layout.nb_channels > max_channels:
                    raise too_many_channels_error(out.layout.nb_channels)
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
                        raise too_many_channels_error(len(frame.layout.channels))
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
            raise corrupt_error("; ".join(errors)) from last_exc
    if x.ndim != 2 or x.shape[1] == 0:
        raise corrupt_error(f"decoder returned shape {x.shape}")
    if len(x) == 0:
        raise empty_error("no audio samples")
    if max_duration_s is not None and len(x) > math.floor(max_duration_s * sr):
        raise too_long_error(declared if declared and declared > max_duration_s else None)
    return x, sr
