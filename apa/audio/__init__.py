"""Audio loading and checks: any recording -> trimmed mono 16 kHz float32 speech, or an AudioError.

Pipeline of `load_audio` (the one entry point the app and the model use):

    bytes/path --size check--> decode (soundfile, then PyAV) --> to_mono_16k (soxr)
        --> checks (channels, level, speech, duration) --> trim_silence --> (n,) float32 in [-1, 1]

Modules: `limits` (rates, sizes, durations), `errors` (AudioError and its messages), `files`
(decode), `convert` (to_mono_16k), `vad` (find_speech, trim_silence); this one: load_audio.

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
  float32) are ever held. Lengths declared in headers (a WAV
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
  (How many corpus clips pass, and what the VAD costs: bench/results/measurements.md.)
* `check=False` skips the learner-facing checks (file size, channel count, duration, level and
  speech) for trusted audio such as the corpus; undecodable input still raises.
"""


from __future__ import annotations

import math

import numpy as np

from apa.audio.convert import to_mono_16k
from apa.audio.errors import CODES, AudioError, fmt_short, too_long_error, too_many_channels_error
from apa.audio.files import Source, decode
from apa.audio.limits import (
    MAX_CHANNELS,
    MAX_DURATION_S,
    MAX_FILE_BYTES,
    MAX_MIX_CHANNELS,
    MIN_SPEECH_S,
    SAMPLE_RATE,
    SILENCE_PEAK_DBFS,
)
from apa.audio.vad import SpeechSpan, find_speech, speech_probabilities, trim_silence

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
            f"The recording is only {fmt_short(span.voiced_s)} of speech; please read the whole "
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
        raise too_many_channels_error(n_channels)
    x = to_mono_16k(samples, sample_rate)
    if check and len(samples) > math.floor(MAX_DURATION_S * float(sample_rate)):
        raise too_long_error(len(samples) / float(sample_rate))
    span = _check_speech(x) if check else None
    if trim:
        x = trim_silence(x, span)
    return np.ascontiguousarray(x, dtype=np.float32)
