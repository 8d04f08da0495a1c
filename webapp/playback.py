"""Audio for the result page, made in memory: each word of the learner's recording cut by the
alignment, each word read alone by espeak-ng, and the sentence's reference reading for the rhythm
view. Clips go to the page inside the result HTML as WAV data: URIs, so nothing of a recording is
written to disk (README "Limits and privacy").
"""

from __future__ import annotations

import base64
import io
from functools import lru_cache

import numpy as np

from apa.render import WordClip
from apa.schema import Assessment
from webapp import tts

SAMPLE_RATE = 16000
PAD_S = 0.05  # seconds kept either side of a word's aligned span
MAX_WORD_S = 4.0  # a word's clip is cut to at most this
MAX_REFERENCE_WORDS = 40  # words given a reference clip

__all__ = ["reference_reading", "wav_data_uri", "word_clips"]


def wav_data_uri(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> str:
    """(n,) float32 in [-1, 1] -> 'data:audio/wav;base64,...' (16-bit PCM mono)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(np.nan_to_num(np.asarray(audio, np.float32)), -1, 1), sample_rate, format="WAV", subtype="PCM_16")
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@lru_cache(maxsize=512)
def _reference_word_uri(word: str) -> str:
    x = tts.synthesize(word)
    return "" if x is None or not len(x) else wav_data_uri(x)


@lru_cache(maxsize=64)
def _reference_sentence(text: str) -> np.ndarray | None:
    return tts.synthesize(text)


def reference_reading(text: str) -> np.ndarray | None:
    """espeak-ng reading the sentence ((n,) float32, 16 kHz), or None without espeak-ng (cached:
    it is the same for every learner)."""
    x = _reference_sentence(" ".join(text.split()))
    return None if x is None else x.copy()


def word_clips(audio: np.ndarray, a: Assessment, references: bool = True) -> list[WordClip]:
    """Per word of `a`: its span of `audio` ((n,) float32, 16 kHz) as a data: URI when the word has
    times (`apa.annotate`), and espeak-ng reading the word alone when `references` and espeak-ng is
    installed ('' where there is none)."""
    out = []
    x = np.asarray(audio, np.float32)
    for i, w in enumerate(a.words):
        own = ""
        if w.start is not None and w.end is not None and w.end > w.start:
            s = max(int((w.start - PAD_S) * SAMPLE_RATE), 0)
            e = min(int((w.end + PAD_S) * SAMPLE_RATE), len(x), s + int(MAX_WORD_S * SAMPLE_RATE))
            if e > s:
                own = wav_data_uri(x[s:e])
        ref = _reference_word_uri(w.text.lower()) if references and i < MAX_REFERENCE_WORDS else ""
        out.append(WordClip(own=own, reference=ref))
    return out
