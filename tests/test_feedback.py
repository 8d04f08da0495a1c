"""Tests for apa.feedback: weakest words and phones, the tip's text, score formatting."""

import pytest

from apa import feedback
from apa.schema import Assessment, Phone, Sentence, Word


@pytest.mark.parametrize(("value", "text"), [(7.5, "7.5"), (8.0, "8"), (None, "–"), (float("nan"), "–"), (0.04, "0")])
def test_fmt_score(value, text):
    assert feedback.fmt_score(value) == text


# ------------------------------------------------------------------------------ tip


def test_tip_names_weakest_word_first_and_its_sounds(make_assessment):
    a = make_assessment()
    tip = feedback.tip_text(a)
    assert '"BEAR"' in tip and '"CALL"' in tip
    assert tip.index('"BEAR"') < tip.index('"CALL"')  # weakest first
    assert "AO1" in tip  # weakest sound of CALL
    assert "Prosody".lower() not in tip  # plain language, not rubric names
    assert "rise and fall" in tip  # prosodic (5) is the weak aspect


def test_tip_for_a_clean_reading():
    words = tuple(Word(t, 9.0, 10, 9, (Phone("AH0", 2.0),)) for t in ("A", "CUP"))
    a = Assessment("A CUP", Sentence(9, 9, 9, 10, 9), words)
    assert feedback.tip_text(a).startswith("Excellent")


def test_tip_mentions_missing_words_and_fluency(make_assessment):
    a = make_assessment(completeness=6.0, fluency=3.0, prosodic=8.0)
    tip = feedback.tip_text(a)
    assert "missing" in tip and "smoothly" in tip


def test_weakest_helpers(make_assessment):
    a = make_assessment()
    assert [w.text for w in feedback.weakest_words(a)] == ["BEAR", "CALL"]
    phones = [p.phone for p, _ in feedback.weakest_phones(a)]
    assert phones == ["B", "AO1", "R"]
