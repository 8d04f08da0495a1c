"""webapp.playback: each word's clip is the aligned span of the recording, made in memory (no
file is written), the reference word comes from espeak-ng's stdout; words without times get none."""

from __future__ import annotations

import base64
import io
import shutil
import tempfile

import numpy as np
import pytest
import soundfile as sf

from apa.schema import Assessment, Phone, Sentence, Word
from webapp import playback


def _decode(uri: str) -> np.ndarray:
    assert uri.startswith("data:audio/wav;base64,")
    x, sr = sf.read(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])), dtype="float32")
    assert sr == 16000
    return x


def test_word_clips_are_the_aligned_spans_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    audio = np.linspace(-0.5, 0.5, 32000, dtype=np.float32)
    a = Assessment("ONE TWO", Sentence(), (Word("ONE", 5, phones=(Phone("W"),), start=0.2, end=0.6),
                                           Word("TWO", 5, phones=(Phone("T"),))))
    clips = playback.word_clips(audio, a, references=False)
    own = _decode(clips[0].own)
    assert len(own) == int((0.6 + playback.PAD_S) * 16000) - int((0.2 - playback.PAD_S) * 16000)
    assert own[0] == pytest.approx(audio[int(0.15 * 16000)], abs=1e-3)
    assert clips[1].own == "" and clips[0].reference == ""  # no times: no clip
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_reference_word_from_espeak(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    a = Assessment("RIGHT", Sentence(), (Word("RIGHT", 5, phones=(Phone("R"),)),))
    ref = _decode(playback.word_clips(np.zeros(1600, np.float32), a)[0].reference)
    assert 0.15 < len(ref) / 16000 < 1.5 and np.abs(ref).max() > 0.05
    assert list(tmp_path.iterdir()) == []
