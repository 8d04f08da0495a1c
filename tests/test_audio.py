"""Tests for apa.audio: decoding every format, resampling, each AudioError code, trimming."""

from __future__ import annotations

import functools
import io
import math
import pickle
import random
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from apa import audio, batch
from apa.audio import SAMPLE_RATE, AudioError, decode, limits, load_audio, to_mono_16k, trim_silence, vad

SR = SAMPLE_RATE
MIN_LEN = round(audio.MIN_SPEECH_S * SR)  # samples


# --------------------------------------------------------------------------- helpers


def tone_plus_noise(sr: int, seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    """Harmonic tone (220 Hz and overtones, all < 4 kHz) plus -46 dB noise, (n,) float32."""
    t = np.arange(round(sr * seconds)) / sr
    x = sum(0.25 / k * np.sin(2 * np.pi * 220 * k * t + k) for k in (1, 2, 3, 5, 8, 13))
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t))  # slow amplitude modulation
    x = x + 0.005 * np.random.default_rng(seed).standard_normal(len(t))
    return x.astype(np.float32)


def aligned_corr(y: np.ndarray, ref: np.ndarray, max_lag_s: float = 0.1) -> float:
    """Pearson correlation of y and ref at the best lag within +-max_lag_s (codec delays)."""
    from scipy.signal import correlate

    max_lag = int(max_lag_s * SR)
    c = correlate(y, ref, mode="full", method="fft")
    lags = np.arange(-len(ref) + 1, len(y))
    keep = np.abs(lags) <= max_lag
    lag = int(lags[keep][np.argmax(c[keep])])
    a, b = (y[lag:], ref) if lag >= 0 else (y, ref[-lag:])
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


def write_sf(path: Path, x: np.ndarray, sr: int, fmt: str, subtype: str | None = None) -> Path:
    sf.write(path, x, sr, format=fmt, subtype=subtype)
    return path


def encode_pyav(path: Path, x: np.ndarray, sr: int, container: str, codec: str) -> Path:
    """Encode mono float x at rate sr with FFmpeg (PyAV); skips when the encoder is missing."""
    av = pytest.importorskip("av")
    try:
        av.codec.Codec(codec, "w")
    except Exception:  # noqa: BLE001
        pytest.skip(f"FFmpeg encoder {codec} not available")
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=sr, layout="mono")
        frame = av.AudioFrame.from_ndarray(x[None, :].astype(np.float32), format="flt", layout="mono")
        frame.sample_rate = sr
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def energy(a: np.ndarray) -> float:
    return float(np.sum(a.astype(np.float64) ** 2))


def wav_bytes(x: np.ndarray, sr: int = SR, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def error_of(source, **kw) -> AudioError:
    with pytest.raises(AudioError) as info:
        load_audio(source, **kw)
    err = info.value
    assert err.code in audio.CODES
    assert len(str(err)) > 20 and "Traceback" not in str(err)
    return err


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def clips(so762_dir: Path) -> list[Path]:
    """10 corpus clips, 5 from train/ and 5 from test/, fixed seed."""
    rng = random.Random(762)
    out = []
    for split in ("train", "test"):
        lines = (so762_dir / split / "wav.scp").read_text().split("\n")
        rels = [line.split()[1] for line in lines if line.strip()]
        out += [so762_dir / rel for rel in rng.sample(rels, 5)]
    return out


@pytest.fixture(scope="session")
def speech(clips: list[Path]) -> np.ndarray:
    """A corpus utterance as (n,) float32 at 16 kHz, untrimmed."""
    x, sr = sf.read(clips[0], dtype="float32")
    assert sr == SR and x.ndim == 1
    return x


# --------------------------------------------------------------------------- formats


SF_FORMATS = [
    ("wav", "WAV", "PCM_16", 0.999),
    ("flac", "FLAC", "PCM_24", 0.999),
    ("ogg", "OGG", "VORBIS", 0.97),
    ("opus", "OGG", "OPUS", 0.95),
]
AV_FORMATS = [
    # (suffix, container, codec, rate): what browsers and phones upload
    ("webm", "webm", "libopus", 48000),
    ("mp3", "mp3", "libmp3lame", 44100),
    ("m4a", "ipod", "aac", 48000),
]


@pytest.mark.parametrize("suffix,fmt,subtype,min_corr", SF_FORMATS)
def test_soundfile_formats_round_trip(tmp_path, suffix, fmt, subtype, min_corr):
    x = tone_plus_noise(SR)
    path = write_sf(tmp_path / f"a.{suffix}", x, SR, fmt, subtype)
    y = load_audio(path, trim=False, check=False)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - len(x)) <= 0.01 * SR
    assert aligned_corr(y, x) > min_corr


@pytest.mark.parametrize("suffix,container,codec,rate", AV_FORMATS)
def test_ffmpeg_formats_round_trip(tmp_path, suffix, container, codec, rate):
    path = encode_pyav(tmp_path / f"a.{suffix}", tone_plus_noise(rate), rate, container, codec)
    y = load_audio(path, trim=False, check=False)
    ref = tone_plus_noise(SR)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - len(ref)) <= 0.15 * SR  # encoder priming/padding
    assert aligned_corr(y, ref) > 0.95
    # the same from bytes, with a misleading name nowhere to be seen
    assert np.array_equal(load_audio(path.read_bytes(), trim=False, check=False), y)


def test_browser_webm_speech_passes_checks(tmp_path, speech):
    x48 = soxr.resample(speech, SR, 48000).astype(np.float32)
    path = encode_pyav(tmp_path / "rec.webm", x48, 48000, "webm", "libopus")
    full = load_audio(path, trim=False)
    assert abs(len(full) - len(speech)) <= 0.05 * SR
    assert aligned_corr(full, speech) > 0.95
    trimmed = load_audio(path)
    assert MIN_LEN <= len(trimmed) < len(full)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 96000])
def test_rates_come_out_16k_with_the_right_duration(tmp_path, rate):
    path = write_sf(tmp_path / "a.wav", tone_plus_noise(rate), rate, "WAV", "PCM_16")
    y = load_audio(path, trim=False, check=False)
    ref = tone_plus_noise(SR)
    assert abs(len(y) - len(ref)) <= 1
    assert aligned_corr(y, ref, max_lag_s=0.002) > 0.99


def test_stereo_is_mixed_to_mono(tmp_path):
    x = tone_plus_noise(44100)
    path = write_sf(tmp_path / "s.flac", np.stack([x, 0.5 * x], axis=1), 44100, "FLAC", "PCM_16")
    assert sf.info(path).channels == 2
    y = load_audio(path, trim=False, check=False)
    ref = tone_plus_noise(SR)
    assert y.shape == (len(ref),)
    assert aligned_corr(y, ref, max_lag_s=0.002) > 0.99
    gain = float(np.dot(y, ref) / np.dot(ref, ref))
    assert gain == pytest.approx(0.75, abs=0.02)  # mean of 1.0 and 0.5


def test_phase_inverted_stereo_does_not_cancel_to_silence():
    x = tone_plus_noise(SR)
    y = to_mono_16k(np.stack([x, -x], axis=1), SR)
    assert np.sqrt(np.mean(y**2)) > 0.5 * np.sqrt(np.mean(x**2))


def test_integer_pcm_and_gradio_tuple():
    x = tone_plus_noise(48000)
    pcm = np.round(np.stack([x, x], axis=1) * 32767).astype(np.int16)
    y = load_audio((48000, pcm), trim=False, check=False)  # Gradio's numpy audio format
    assert y.dtype == np.float32 and y.shape == (round(len(x) / 3),)
    assert aligned_corr(y, tone_plus_noise(SR), max_lag_s=0.002) > 0.99


def test_over_full_scale_float_is_scaled_into_range():
    y = to_mono_16k(4.0 * tone_plus_noise(SR), SR)
    assert np.max(np.abs(y)) <= 1.0
    assert np.max(np.abs(y)) > 0.99


# --------------------------------------------------------------------------- AudioError codes


def test_empty_inputs():
    assert error_of(b"").code == "empty"
    assert error_of(None).code == "empty"
    assert error_of(Path("/nonexistent/recording.wav")).code == "empty"
    assert error_of(wav_bytes(np.zeros(0, np.float32))).code == "empty"  # valid header, 0 frames


def test_too_large_is_refused_before_decoding(tmp_path):
    big = tmp_path / "big.wav"
    with open(big, "wb") as f:  # sparse: no data written, only the size matters
        f.truncate(audio.MAX_FILE_BYTES + 1)
    t0 = time.perf_counter()
    err = error_of(big)
    assert err.code == "too_large" and "20 MB" in str(err)
    assert error_of(bytes(audio.MAX_FILE_BYTES + 1)).code == "too_large"
    assert time.perf_counter() - t0 < 1.0


def test_random_bytes_named_wav_are_corrupt(tmp_path):
    path = tmp_path / "recording.wav"
    path.write_bytes(np.random.default_rng(1).bytes(4000))
    err = error_of(path)
    assert err.code == "corrupt" and "damaged" in str(err)
    assert err.__cause__ is None or not isinstance(err.__cause__, AudioError)


def test_truncated_header_is_corrupt():
    good = wav_bytes(tone_plus_noise(SR))
    assert error_of(good[:30]).code == "corrupt"
    assert error_of(b"OggS" + good[4:40]).code == "corrupt"


def test_silence_is_no_speech():
    err = error_of(wav_bytes(np.zeros(2 * SR, np.float32)))
    assert err.code == "no_speech" and "microphone" in str(err)


def test_very_low_level_is_no_speech():
    x = 10 ** (-75 / 20) * np.random.default_rng(2).standard_normal(2 * SR)
    err = error_of(wav_bytes(x.astype(np.float32), subtype="FLOAT"))
    assert err.code == "no_speech" and "dBFS" in str(err)


@pytest.mark.parametrize("rms", [0.3, 0.05, 0.005])
def test_white_noise_is_no_speech(rms):
    x = np.clip(rms * np.random.default_rng(3).standard_normal(3 * SR), -1, 1).astype(np.float32)
    err = error_of(wav_bytes(x))
    assert err.code == "no_speech" and "noise" in str(err)


def test_beep_and_hum_are_no_speech():
    t = np.arange(3 * SR) / SR
    beep = 0.3 * np.sin(2 * np.pi * 1000 * t) * (t > 1.0)
    hum = 0.2 * np.sin(2 * np.pi * 50 * t) + 0.05 * np.sin(2 * np.pi * 150 * t)
    assert error_of(wav_bytes((beep + hum).astype(np.float32))).code == "no_speech"


def test_eight_channels_are_unsupported(tmp_path):
    x = np.tile(tone_plus_noise(SR)[:, None], (1, 8))
    path = write_sf(tmp_path / "multi.wav", x, SR, "WAV", "PCM_16")
    err = error_of(path)
    assert err.code == "unsupported" and "8 audio channels" in str(err)
    assert load_audio(path, trim=False, check=False).shape == (len(x),)  # trusted: mixed down


def test_damaged_channel_count_is_unsupported_even_unchecked():
    data = bytearray(wav_bytes(tone_plus_noise(SR)))
    assert data[22:24] == struct.pack("<H", 1)  # canonical 44-byte header: channels, ...
    data[22:24] = struct.pack("<H", 100)
    data[28:32] = struct.pack("<I", SR * 200)  # byte rate
    data[32:34] = struct.pack("<H", 200)  # block align
    for check in (True, False):
        assert error_of(bytes(data), check=check).code == "unsupported"


def test_absurd_sample_rates_are_unsupported():
    x = tone_plus_noise(SR)
    for rate in (1000, 400_000, 0, float("nan")):
        with pytest.raises(AudioError) as info:
            to_mono_16k(x, rate)
        assert info.value.code == "unsupported"
    assert error_of(wav_bytes(x, sr=2000)).code == "unsupported"


def test_nan_samples(tmp_path):
    x = tone_plus_noise(SR)
    all_nan = np.full(SR, np.nan, np.float32)
    err = error_of(wav_bytes(all_nan, subtype="FLOAT"))
    assert err.code == "corrupt" and "invalid" in str(err)
    few = x.copy()
    few[::1000] = np.nan  # 0.1 % of the samples: replaced by 0, not rejected
    few[5] = np.inf
    y = load_audio(wav_bytes(few, subtype="FLOAT"), trim=False, check=False)
    assert np.all(np.isfinite(y)) and aligned_corr(y, x, max_lag_s=0.0) > 0.99


def test_too_long_31_s(speech):
    reps = math.ceil(31 * SR / len(speech))
    x = np.tile(speech, reps)[: 31 * SR]
    err = error_of(wav_bytes(x))
    assert err.code == "too_long" and "31.0 s" in str(err) and "30 s" in str(err)
    # exactly at the limit is accepted: the limit applies to the whole recording
    y = load_audio(wav_bytes(x[: int(audio.MAX_DURATION_S * SR)]), trim=False)
    assert len(y) == int(audio.MAX_DURATION_S * SR)


def test_two_hour_file_is_rejected_without_decoding_it():
    buf = io.BytesIO()
    block = np.zeros(8000 * 600, np.int16)
    with sf.SoundFile(buf, "w", 8000, 1, format="FLAC", subtype="PCM_16") as f:
        for _ in range(12):
            f.write(block)
    data = buf.getvalue()
    assert len(data) < audio.MAX_FILE_BYTES
    t0 = time.perf_counter()
    err = error_of(data)
    assert err.code == "too_long" and "120 minutes" in str(err)
    assert time.perf_counter() - t0 < 0.5


def test_ffmpeg_decoding_stops_at_the_cap(tmp_path):
    path = encode_pyav(tmp_path / "long.webm", tone_plus_noise(16000, 40.0), 16000, "webm", "libopus")
    with pytest.raises(AudioError) as info:
        decode(path, max_duration_s=audio.MAX_DURATION_S)
    assert info.value.code == "too_long"
    x, sr = decode(path)  # no cap: all of it
    assert abs(len(x) / sr - 40.0) < 0.1


def test_too_short_speech(speech):
    probs = audio.speech_probabilities(speech)
    mid = int(np.argmax(np.convolve(probs, np.ones(5), "same"))) * vad.VAD_FRAME
    cut = speech[mid : mid + SR // 10]  # 0.1 s from the middle of the most speech-like stretch
    err = error_of((SR, cut))
    assert err.code == "too_short"
    assert str(err).startswith("The recording is only ") and "at least 0.3 s" in str(err)
    # the same next to a loud non-speech sound: the trim edges may widen over the sound,
    # the amount of speech may not
    t = np.arange(SR // 2) / SR
    beep = (0.5 * np.sin(2 * np.pi * 700 * t)).astype(np.float32)
    silence = np.zeros(SR // 2, np.float32)
    assert error_of((SR, np.concatenate([silence, cut, beep, silence]))).code == "too_short"


def test_audio_error_pickles_with_code():
    err = AudioError("too_short", "msg", detail="d")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, ValueError) and back.code == "too_short" and str(back) == "msg"
    with pytest.raises(ValueError):
        AudioError("nope", "msg")


# --------------------------------------------------------------------------- speech and trimming


def test_corpus_clips_pass_and_are_trimmed(clips):
    kept_s, full_s = 0.0, 0.0
    for path in clips:
        full = load_audio(path, trim=False)
        y = load_audio(path)
        assert y.dtype == np.float32 and np.max(np.abs(y)) <= 1.0
        assert MIN_LEN <= len(y) < len(full), path
        starts = np.flatnonzero(full[: len(full) - len(y) + 1] == y[0])
        assert any(np.array_equal(full[i : i + len(y)], y) for i in starts), path  # one cut
        # trimming removes silence (and the odd click), not speech: the energy stays
        assert energy(y) > 0.9 * energy(full), path
        kept_s, full_s = kept_s + len(y) / SR, full_s + len(full) / SR
    assert kept_s < 0.9 * full_s  # the corpus has ~0.5 s of silence around each utterance


def test_unvoiced_onset_is_kept(so762_dir):
    """'HOW DO WE KNOW' (034120012): /h/ starts at ~0.64 s, the VAD only fires at ~0.80 s."""
    path = so762_dir / "WAVE" / "SPEAKER3412" / "034120012.opus"
    if not path.is_file():
        pytest.skip("utterance 034120012 not in this corpus copy")
    full = load_audio(path, trim=False)
    span = audio.find_speech(full)
    assert span is not None and span.start <= 0.66 * SR
    y = load_audio(path)
    assert np.array_equal(y[: SR // 10], full[span.start - SR // 10 : span.start])


def test_quiet_and_noisy_speech_pass(speech):
    quiet = speech * (10 ** (-45 / 20) / np.max(np.abs(speech)))  # peak at -45 dBFS
    assert len(load_audio((SR, quiet.astype(np.float32)))) >= MIN_LEN
    rms = np.sqrt(np.mean(speech**2))
    noisy = speech + rms * np.random.default_rng(4).standard_normal(len(speech)) * 10 ** (-10 / 20)
    assert len(load_audio((SR, noisy.astype(np.float32)))) >= MIN_LEN  # 10 dB SNR


def test_trim_keeps_margin_around_padded_speech(speech):
    pad = np.zeros(2 * SR, np.float32)
    x = np.concatenate([pad, speech, pad])
    span = audio.find_speech(x)
    assert span is not None and span.voiced_s <= span.duration_s
    y = trim_silence(x, span)
    margin = round(vad.TRIM_MARGIN_S * SR)
    assert len(y) == span.end - span.start + 2 * margin
    assert len(pad) <= span.start and span.end <= len(pad) + len(speech)  # zeros are never speech
    assert len(y) < len(x) - 3 * SR  # both 2 s pads are essentially gone
    assert trim_silence(np.zeros(SR, np.float32)).shape == (SR,)  # nothing found: unchanged


# --------------------------------------------------------------------------- robustness


@pytest.fixture(scope="module")
def vad_loaded():
    vad._vad_model()  # so the first example does not pay for the torch import (not the input's fault)


PREFIXES = [
    b"",
    b"RIFF\x24\x00\x00\x00WAVEfmt ",
    b"OggS\x00\x02",
    b"fLaC\x00\x00\x00\x22",
    b"ID3\x04\x00\x00",
    b"\xff\xfb\x90\x64",
    b"\x1aE\xdf\xa3",
    b"\x00\x00\x00\x20ftypM4A ",
]


FUZZ = settings(
    max_examples=100, deadline=2000, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def assert_array_or_audio_error(data: bytes, check: bool = True) -> None:
    try:
        y = load_audio(data, check=check)
    except AudioError as err:
        assert err.code in audio.CODES and str(err)
    else:
        assert y.dtype == np.float32 and y.ndim == 1 and np.all(np.abs(y) <= 1.0)


@FUZZ
@given(prefix=st.sampled_from(PREFIXES), body=st.binary(max_size=3000))
def test_random_bytes_give_an_array_or_audio_error(vad_loaded, prefix, body):
    assert_array_or_audio_error(prefix + body)


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory) -> dict[str, bytes]:
    """Small valid files of each format (0.5 s), as seeds for mutation."""
    x = tone_plus_noise(SR, seconds=0.5)
    out = {sub: wav_bytes(x, subtype=sub) for sub in ("PCM_16", "FLOAT")}
    for suffix, fmt, subtype, _ in SF_FORMATS[1:]:
        buf = io.BytesIO()
        sf.write(buf, x, SR, format=fmt, subtype=subtype)
        out[suffix] = buf.getvalue()
    for suffix, container, codec, _ in AV_FORMATS:
        try:
            path = encode_pyav(tmp_path_factory.mktemp("seed") / f"a.{suffix}", x, SR, container, codec)
        except pytest.skip.Exception:
            continue
        out[suffix] = path.read_bytes()
    return out


@FUZZ
@given(
    name=st.sampled_from(["PCM_16", "FLOAT", "flac", "ogg", "opus", "webm", "mp3", "m4a"]),
    cut=st.floats(0.0, 1.0),
    edits=st.lists(st.tuples(st.floats(0.0, 1.0), st.binary(min_size=1, max_size=4)), max_size=20),
    check=st.booleans(),
)
def test_damaged_files_give_an_array_or_audio_error(vad_loaded, valid_files, name, cut, edits, check):
    """Truncated files and overwritten bytes (headers, length fields, packets) in every format.
    Found a 164-channel WAV header that escaped as ValueError."""
    assume(name in valid_files)  # encoders missing from this FFmpeg build
    data = bytearray(valid_files[name])
    data = data[: max(1, round(cut * len(data)))] if cut < 0.5 else data
    for pos, new in edits:
        i = min(int(pos * len(data)), len(data) - 1)
        data[i : i + len(new)] = new
    assert_array_or_audio_error(bytes(data), check=check)


def test_import_is_light():
    code = "import sys, apa.audio; sys.exit(any(m in sys.modules for m in ('torch', 'av', 'silero_vad')))"
    proc = subprocess.run([sys.executable, "-c", code], check=False, cwd=Path(__file__).parents[1])
    assert proc.returncode == 0


CALL_S = 3.0  # wall-clock bound for one load_audio call on hostile input (2 shared cores)


SAMPLE_BUDGET_BYTES = int(limits.MAX_DURATION_S * limits.MAX_INPUT_RATE * limits.MAX_CHANNELS * 4)


def tone(seconds: float = 0.5, sr: int = SR, ch: int = 1) -> np.ndarray:
    t = np.arange(round(sr * seconds)) / sr
    x = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * np.random.default_rng(0).standard_normal(t.size)).astype(np.float32)
    return np.repeat(x[:, None], ch, axis=1) if ch > 1 else x


def encode(x: np.ndarray, sr: int, fmt: str, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def wav_header(sr: int, ch: int, bits: int, data_len: int, *, riff_len: int | None = None, tag: int = 1) -> bytes:
    """A canonical 44-byte WAV header whose fields may lie (sizes are written mod 2^32)."""
    riff = (36 + data_len) if riff_len is None else riff_len
    fmt = struct.pack("<HHIIHH", tag, ch, sr, (sr * ch * bits // 8) & 0xFFFFFFFF, (ch * bits // 8) & 0xFFFF, bits)
    return (
        b"RIFF" + struct.pack("<I", riff & 0xFFFFFFFF) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
        + b"data" + struct.pack("<I", data_len & 0xFFFFFFFF)
    )


def _ogg_crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return table


_OGG_CRC = _ogg_crc_table()


def ogg_pages(data: bytes) -> list[int]:
    """Offsets of the Ogg pages."""
    out, i = [], data.find(b"OggS")
    while i >= 0:
        out.append(i)
        i = data.find(b"OggS", i + 1)
    return out


def ogg_fix_crc(data: bytearray, page: int) -> None:
    """Recompute the CRC of the page at this offset (so a lying page is not dropped as damaged)."""
    nseg = data[page + 26]
    size = 27 + nseg + sum(data[page + 27 : page + 27 + nseg])
    data[page + 22 : page + 26] = b"\0\0\0\0"
    crc = 0
    for b in data[page : page + size]:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[((crc >> 24) & 0xFF) ^ b]
    data[page + 22 : page + 26] = struct.pack("<I", crc)


def outcome(data: bytes, *, check: bool = True) -> str:
    """'ok' or the AudioError code; any other exception fails the test."""
    try:
        y = load_audio(data, check=check)
    except AudioError as err:
        assert err.code in audio.CODES and len(str(err)) > 20
        return err.code
    assert y.dtype == np.float32 and y.ndim == 1 and np.all(np.isfinite(y)) and np.all(np.abs(y) <= 1.0)
    return "ok"


def _vm_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def bounded_outcome(data: bytes, *, check: bool = True, max_s: float = CALL_S, max_bytes: int) -> str:
    """outcome(), asserting the wall time and the memory: numpy allocations (tracemalloc peak)
    and, where Linux lets us reset the peak (clear_refs 5), the process's peak RSS growth
    (which also sees libsndfile's and FFmpeg's own allocations)."""
    rss_reset = False
    try:
        Path("/proc/self/clear_refs").write_text("5")
        rss_reset = True
    except OSError:
        pass
    rss0 = _vm_kb("VmRSS")
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        code = outcome(data, check=check)
    finally:
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < max_s, f"{elapsed:.1f} s for {len(data)} bytes ({code})"
    assert peak < max_bytes, f"numpy peak {peak / 1e6:.0f} MB ({code})"
    hwm = _vm_kb("VmHWM")
    if rss_reset and rss0 is not None and hwm is not None:
        assert (hwm - rss0) * 1024 < max_bytes + 64_000_000, f"RSS peak grew {(hwm - rss0) / 1e3:.0f} MB ({code})"
    return code


def _silence(fmt: str, sr: int, ch: int, seconds: int) -> bytes:
    """`seconds` of silence at sr Hz, ch channels, as FLAC (16-bit) or Ogg Vorbis, written second
    by second (the header then declares exactly that)."""
    subtype, dtype = {"FLAC": ("PCM_16", np.int16), "OGG": ("VORBIS", np.float32)}[fmt]
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", sr, ch, format=fmt, subtype=subtype) as f:
        for _ in range(seconds):
            f.write(np.zeros((sr, ch), dtype))
    return buf.getvalue()


HEADER_REJECT_BYTES = 32_000_000  # files refused from their header, or ~1 s of audio: no more than this


@functools.lru_cache(maxsize=1)
def huge_cases() -> dict[str, tuple[bytes, set[str], int]]:
    """name -> (file, the AudioError codes allowed, memory bound in bytes)."""
    speechless = (tone(1.0) * 32767).astype(np.int16).tobytes()
    cases = {
        # data chunk / RIFF size claiming 4 GB, with 1 s (or nothing) behind it
        "wav data 4 GB": (wav_header(SR, 1, 16, 0xFFFFFFFF) + speechless, {"no_speech"}),
        "wav riff+data 4 GB": (wav_header(SR, 1, 16, 0xFFFFFFF0, riff_len=0xFFFFFFFF) + speechless, {"no_speech"}),
        "wav header only, 4 GB": (wav_header(SR, 1, 16, 0xFFFFFFFF), {"empty", "corrupt"}),
        "wav 192 kHz 8 ch float, 4 GB": (wav_header(192000, 8, 32, 0xFFFFFFFF, tag=3) + bytes(4096), {"unsupported"}),
        "wav 65535 channels": (wav_header(SR, 65535, 16, 0xFFFFFFFF) + speechless, {"unsupported", "corrupt"}),
        "wav 4 GHz rate": (wav_header(0xFFFFFFFF, 1, 16, len(speechless)) + speechless, {"unsupported", "corrupt"}),
        # compressed silence: a few kB that decode to a lot at a high rate and channel count
        # (before the header check, 40 s of them decoded 1.3 GB (FLAC) and 3 GB (Vorbis); these
        # shorter ones 84 MB and 98 MB, far past HEADER_REJECT_BYTES)
        "flac 655 kHz 8 ch": (_silence("FLAC", 655350, 8, 2), {"unsupported"}),
        "vorbis 192 kHz 64 ch": (_silence("OGG", 192000, 64, 1), {"unsupported"}),
    }
    cases = {k: (v[0], v[1], HEADER_REJECT_BYTES) for k, v in cases.items()}
    # the most a legitimate learner file can make us decode: 30 s at 192 kHz stereo, then stop
    cases["vorbis 192 kHz stereo 40 s"] = (_silence("OGG", 192000, 2, 40), {"too_long"}, SAMPLE_BUDGET_BYTES * 4)
    # FLAC STREAMINFO: total samples (36 bits) all ones, i.e. 2^36 - 1 declared samples
    fl = bytearray(encode(tone(), SR, "FLAC", "PCM_16"))
    fl[21] |= 0x0F
    fl[22:26] = b"\xff\xff\xff\xff"
    cases["flac total samples 2^36"] = (bytes(fl), {"no_speech"}, HEADER_REJECT_BYTES)
    # Ogg: the last page's granule position at 2^63 - 1 (a declared length of ~10^10 years),
    # and the first page's segment table claiming 255 x 255 bytes that are not there
    for name, sub in (("vorbis", "VORBIS"), ("opus", "OPUS")):
        og = bytearray(encode(tone(), 48000 if sub == "OPUS" else SR, "OGG", sub))
        last = ogg_pages(bytes(og))[-1]
        og[last + 6 : last + 14] = struct.pack("<q", 2**63 - 1)
        ogg_fix_crc(og, last)
        cases[f"ogg {name} granule 2^63"] = (bytes(og), {"no_speech", "too_long", "corrupt"}, HEADER_REJECT_BYTES)
        og2 = bytearray(encode(tone(), 48000 if sub == "OPUS" else SR, "OGG", sub))
        first = 0
        nseg = og2[first + 26]
        og2[first + 27 : first + 27 + nseg] = b"\xff" * nseg
        cases[f"ogg {name} segment table 255x255"] = (bytes(og2), {"corrupt", "no_speech", "empty"}, HEADER_REJECT_BYTES)
    return cases


HUGE_NAMES = [
    "wav data 4 GB", "wav riff+data 4 GB", "wav header only, 4 GB", "wav 192 kHz 8 ch float, 4 GB",
    "wav 65535 channels", "wav 4 GHz rate", "flac 655 kHz 8 ch", "vorbis 192 kHz 64 ch",
    "vorbis 192 kHz stereo 40 s", "flac total samples 2^36", "ogg vorbis granule 2^63",
    "ogg vorbis segment table 255x255", "ogg opus granule 2^63", "ogg opus segment table 255x255",
]


def test_huge_case_names():
    assert sorted(huge_cases()) == sorted(HUGE_NAMES)


@pytest.mark.parametrize("name", HUGE_NAMES)
def test_huge_declared_sizes_are_bounded(vad_loaded, name):
    data, expected, max_bytes = huge_cases()[name]
    assert len(data) < 300_000
    code = bounded_outcome(data, max_bytes=max_bytes)
    assert code in expected, (name, code)


def test_tiny_and_non_finite_files(vad_loaded):
    """1-sample files in each container, and NaN / inf samples: a clear error, fast."""
    one = np.array([0.5], np.float32)
    for fmt, sub in (("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("AIFF", "PCM_16")):
        assert bounded_outcome(encode(one, SR, fmt, sub), max_bytes=8_000_000, max_s=1.0) in {"no_speech", "empty", "corrupt"}
    assert bounded_outcome(wav_header(SR, 1, 16, 2) + b"\x10\x00", max_bytes=8_000_000) == "no_speech"
    for v in (np.nan, np.inf, -np.inf):
        assert bounded_outcome(wav_header(SR, 1, 32, 4, tag=3) + np.float32(v).tobytes(), max_bytes=8_000_000) == "corrupt"
    mixed = tone(1.0)
    mixed[::2] = np.inf  # half the samples
    assert bounded_outcome(encode(mixed, SR, "WAV", "FLOAT"), max_bytes=8_000_000) == "corrupt"
    # NaN in 8-channel audio: refused for the channels, checked before reading
    assert bounded_outcome(encode(np.full((SR, 8), np.nan, np.float32), SR, "WAV", "FLOAT"), max_bytes=8_000_000) == "unsupported"


@pytest.mark.parametrize(("fmt", "sub"), [("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("WAV", "PCM_16")])
def test_eight_channels_in_other_containers(vad_loaded, fmt, sub):
    data = encode(tone(1.0, ch=8), SR, fmt, sub)
    assert bounded_outcome(data, max_bytes=16_000_000) == "unsupported"
    assert bounded_outcome(data, check=False, max_bytes=64_000_000) == "ok"  # trusted: mixed down


_WAV_FIELDS = [(4, 4), (16, 4), (20, 2), (22, 2), (24, 4), (28, 4), (32, 2), (34, 2), (40, 4)]


_FLAC_FIELDS = [(5, 3), (8, 2), (10, 2), (12, 3), (15, 3), (18, 3), (20, 2), (21, 5)]


_EXTREMES = [b"\x00", b"\x01", b"\x7f", b"\x80", b"\xff"]


def _seeds() -> dict[str, bytes]:
    x = tone()
    seeds = {"wav": wav_header(SR, 1, 16, 2 * len(x)) + (x * 32767).astype(np.int16).tobytes()}
    seeds["flac"] = encode(x, SR, "FLAC", "PCM_16")
    seeds["vorbis"] = encode(x, SR, "OGG", "VORBIS")
    seeds["opus"] = encode(x, 48000, "OGG", "OPUS")
    return seeds


SEEDS = _seeds()


def _ogg_fields(data: bytes) -> list[tuple[int, int]]:
    """Granule (8), page sequence (4) and segment count (1) of every page; the codec header's
    channel count and sample rate (first page)."""
    fields = []
    for p in ogg_pages(data):
        fields += [(p + 6, 8), (p + 18, 4), (p + 26, 1)]
    body = 27 + data[26]
    if data[body + 1 : body + 7] == b"vorbis":
        fields += [(body + 11, 1), (body + 12, 4), (body + 28, 1)]  # channels, rate, blocksizes
    elif data[body : body + 8] == b"OpusHead":
        fields += [(body + 9, 1), (body + 10, 2), (body + 12, 4), (body + 18, 1)]  # ch, pre-skip, rate, mapping
    return fields


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.sampled_from(sorted(SEEDS)),
    picks=st.lists(st.tuples(st.integers(0, 99), st.sampled_from(_EXTREMES), st.binary(min_size=1, max_size=1)), min_size=1, max_size=3),
    check=st.booleans(),
)
def test_extreme_header_fields_fuzz(vad_loaded, seed, picks, check):
    """Size / rate / channel / granule fields set to 0, 1, 0x7f.., 0x80.., 0xff.. or a random
    byte pattern (Ogg CRCs recomputed, so the lie is believed): a result or an AudioError, in
    bounded time and memory."""
    data = bytearray(SEEDS[seed])
    if seed == "wav":
        fields = _WAV_FIELDS
    elif seed == "flac":
        fields = _FLAC_FIELDS
    else:
        fields = _ogg_fields(bytes(data))
    for i, fill, rnd in picks:
        off, width = fields[i % len(fields)]
        data[off : off + width] = (fill if i % 3 else rnd) * width
    if seed in ("vorbis", "opus"):
        for p in ogg_pages(bytes(data)):
            if p + 27 <= len(data) and p + 27 + data[p + 26] <= len(data):
                ogg_fix_crc(data, p)
    bounded_outcome(bytes(data), check=check, max_bytes=SAMPLE_BUDGET_BYTES * 4)


@settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ext=st.sampled_from(sorted(batch.AUDIO_EXTENSIONS)), body=st.binary(min_size=1, max_size=2000))
def test_random_bytes_saved_with_audio_extensions(vad_loaded, tmp_path_factory, ext, body):
    """The file name never picks the decoder: random bytes named .wav / .mp3 / .webm ... from disk."""
    path = tmp_path_factory.mktemp("rnd") / f"recording{ext}"
    path.write_bytes(body)
    t0 = time.perf_counter()
    try:
        load_audio(path)
    except AudioError as err:
        assert err.code in audio.CODES
    assert time.perf_counter() - t0 < CALL_S
