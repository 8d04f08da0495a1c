"""apa.prosody and apa.prosody_view: pitch of a known tone, loudness, pauses and rate from word
times; untimed readings have no pauses or rate; the figure draws both readings."""

from __future__ import annotations

import numpy as np

from apa import prosody
from apa.prosody_view import prosody_figure, rhythm_html


def tone(hz: float, seconds: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


WORDS = [("ONE", 0.1, 0.5), ("TWO", 0.55, 0.9), ("THREE", 1.4, 1.9)]


def test_pitch_of_a_tone_and_loudness():
    x = np.concatenate([tone(150, 1.0), np.zeros(8000, np.float32), tone(220, 1.0)])
    p = prosody.analyse(x, WORDS)
    early = p.f0[(p.times > 0.2) & (p.times < 0.8)]
    late = p.f0[(p.times > 1.7) & (p.times < 2.3)]
    assert np.nanmedian(early) == np.clip(np.nanmedian(early), 145, 155)
    assert np.nanmedian(late) == np.clip(np.nanmedian(late), 212, 228)
    quiet = p.loudness[(p.times > 1.1) & (p.times < 1.4)]
    assert np.all(np.isnan(p.f0[(p.times > 1.15) & (p.times < 1.35)]))  # silence: unvoiced
    assert quiet.max() < p.loudness[(p.times > 0.2) & (p.times < 0.8)].min() - 30
    assert len(p.times) == len(p.f0) == len(p.loudness)


def test_pauses_and_rate_from_word_times():
    assert prosody.pauses(WORDS) == ((0.9, 1.4),)  # 0.5 s gap; 0.05 s is no pause
    assert abs(prosody.speaking_rate(WORDS) - 100.0) < 1e-9  # 3 words in 1.8 s
    assert prosody.speaking_rate([]) is None
    p = prosody.analyse(tone(150, 2.0), WORDS)
    assert p.timed and p.pauses == ((0.9, 1.4),) and round(p.rate_wpm, 6) == 100.0


def test_untimed_reading_has_no_words_pauses_or_rate():
    p = prosody.analyse(tone(150, 1.0), [("ONE", None, None), ("TWO", 0.5, 0.9)])
    assert not p.timed and p.pauses == () and p.rate_wpm is None
    assert "not available" in rhythm_html(p)


def test_figure_has_both_readings_and_marks_pauses():
    you = prosody.analyse(tone(150, 2.0), WORDS)
    ref = prosody.analyse(tone(200, 1.5), WORDS[:2])
    fig = prosody_figure(you, ref)
    assert [t.name for t in fig.data].count("Pitch (Hz)") == 2
    assert any("pause 0.5 s" in (a.text or "") for a in fig.layout.annotations)
    assert {"ONE", "TWO", "THREE"} <= {a.text for a in fig.layout.annotations}
    html = rhythm_html(you, ref)
    assert "100 words per minute" in html and "1 pause" in html
    assert len(prosody_figure(prosody.analyse(np.zeros(100, np.float32))).data) == 2  # tiny input: no error
