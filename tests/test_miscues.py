"""apa.miscues: the "does not match" guard with the recogniser's score of the text
(`does_not_match(..., text_pmi=...)`, `pmi_decides`, `fired_without_pmi`). The rest of the module
(alignment of the word lists, the rules without the score) is tested in tests/test_reading.py."""

from __future__ import annotations

import math

import pytest

from apa.miscues import (ACOUSTIC_FAR_BELOW, HEARD_FITS_BY, MISMATCH_BELOW, TEXT_PMI_BELOW, TEXT_PMI_KEEPS_FROM,
                         Acoustic, Fit, does_not_match, find_miscues, fired_without_pmi, pmi_decides)
from apa.transcribe import HeardWord

REF = "WE CALL IT BEAR".split()
BETWEEN = (TEXT_PMI_BELOW + TEXT_PMI_KEEPS_FROM) / 2  # a score that decides nothing
POOR = ACOUSTIC_FAR_BELOW + 1.0  # Fit.phone: poor, not poor enough on its own


def heard(text: str, probability: float = 0.9) -> list[HeardWord]:
    return [HeardWord(w, 0.4 * i, 0.4 * i + 0.35, probability) for i, w in enumerate(text.split())]


def fit(frame: float, phone: float = POOR) -> Fit:
    return Fit(phone=phone, frame=frame, coverage=1.0)


OTHER = find_miscues(REF, heard("the weather is lovely in spring today"))  # the transcript: another sentence
HALLUCINATED = find_miscues(REF, heard("Tuesday."))  # the transcript says mismatch, the text fits better
SAID = find_miscues(REF, heard("we call it bear"))
TEXT_FITS = Acoustic(fit(-4.0), fit(-4.0 + HEARD_FITS_BY - 1.0))  # the text out-fits the words heard: no fire
HEARD_FITS = Acoustic(fit(-4.0), fit(-3.0))  # the words heard fit better: the rules fire


def test_the_cases_below_fire_or_not_without_the_score():
    assert OTHER.mismatch and HALLUCINATED.mismatch and not SAID.mismatch
    assert fired_without_pmi(OTHER, HEARD_FITS) and not fired_without_pmi(HALLUCINATED, TEXT_FITS)
    assert SAID.match_ratio >= MISMATCH_BELOW


def test_a_low_score_fires_whatever_the_other_rules_say():
    assert does_not_match(HALLUCINATED, TEXT_FITS, text_pmi=TEXT_PMI_BELOW - 0.01)
    assert not does_not_match(HALLUCINATED, TEXT_FITS, text_pmi=TEXT_PMI_BELOW)  # the cut itself is "in between"
    # an unsure transcript that the rules would not act on
    unsure = find_miscues(REF, heard("the weather is lovely in spring today", probability=0.1))
    assert not unsure.mismatch and not does_not_match(unsure, TEXT_FITS)
    assert does_not_match(unsure, TEXT_FITS, text_pmi=TEXT_PMI_BELOW - 1.0)
    # no alignment at all: the score still decides
    assert does_not_match(unsure, None, text_pmi=TEXT_PMI_BELOW - 1.0) and not does_not_match(unsure, None)


def test_a_high_score_keeps_the_text_over_the_other_rules():
    assert does_not_match(OTHER, HEARD_FITS)
    assert not does_not_match(OTHER, HEARD_FITS, text_pmi=TEXT_PMI_KEEPS_FROM)
    assert does_not_match(OTHER, HEARD_FITS, text_pmi=TEXT_PMI_KEEPS_FROM - 0.01)
    # a very poor acoustic fit of the text, or none at all, does not overrule it either
    far = Acoustic(fit(-4.0, phone=ACOUSTIC_FAR_BELOW - 1.0), fit(-3.0))
    assert does_not_match(OTHER, far) and not does_not_match(OTHER, far, text_pmi=TEXT_PMI_KEEPS_FROM + 5.0)
    assert does_not_match(OTHER, Acoustic(None, fit(-3.0)))
    assert not does_not_match(OTHER, Acoustic(None, fit(-3.0)), text_pmi=TEXT_PMI_KEEPS_FROM + 5.0)
    assert does_not_match(OTHER, None) and not does_not_match(OTHER, None, text_pmi=TEXT_PMI_KEEPS_FROM)


def test_in_between_the_rules_decide():
    for m in (OTHER, HALLUCINATED):
        for ev in (HEARD_FITS, TEXT_FITS, None, Acoustic(None, None)):
            assert does_not_match(m, ev, text_pmi=BETWEEN) == fired_without_pmi(m, ev)


def test_never_when_the_words_were_heard_as_written_or_nothing_was_heard():
    assert not does_not_match(SAID, HEARD_FITS, text_pmi=-100.0)
    assert not does_not_match(SAID, None, text_pmi=-100.0)
    nothing = find_miscues(REF, [])
    assert not does_not_match(nothing, Acoustic(None, None), text_pmi=-100.0)


def test_without_a_score_the_rules_as_before():
    for m in (OTHER, HALLUCINATED, SAID):
        for ev in (HEARD_FITS, TEXT_FITS, None):
            expected = fired_without_pmi(m, ev)
            assert does_not_match(m, ev) == expected
            assert does_not_match(m, ev, text_pmi=None) == expected
            assert does_not_match(m, ev, text_pmi=math.nan) == expected  # an unusable score is no score


def test_the_cuts_can_be_moved():
    assert does_not_match(HALLUCINATED, TEXT_FITS, text_pmi=-2.0, pmi_below=-1.0)
    assert not does_not_match(HALLUCINATED, TEXT_FITS, text_pmi=-2.0)
    assert not does_not_match(OTHER, HEARD_FITS, text_pmi=3.0, pmi_keeps_from=2.0)
    assert does_not_match(OTHER, HEARD_FITS, text_pmi=3.0, pmi_below=-10.0, pmi_keeps_from=20.0)


@pytest.mark.parametrize("pmi, decides", [
    (None, False), (math.nan, False), (BETWEEN, False), (TEXT_PMI_BELOW, False),
    (TEXT_PMI_BELOW - 0.01, True), (TEXT_PMI_KEEPS_FROM, True), (TEXT_PMI_KEEPS_FROM - 0.01, False),
    (-math.inf, False), (math.inf, False),  # not finite: no usable score (apa.transcribe floors its probabilities)
])
def test_pmi_decides(pmi, decides):
    assert pmi_decides(pmi) is decides


def test_pmi_decides_matches_the_guard():
    """Where the score decides, the acoustic evidence cannot change the answer (so apa.reading skips it)."""
    for pmi in (TEXT_PMI_BELOW - 3.0, TEXT_PMI_BELOW - 0.01, TEXT_PMI_KEEPS_FROM, TEXT_PMI_KEEPS_FROM + 3.0):
        assert pmi_decides(pmi)
        for m in (OTHER, HALLUCINATED):
            evidence = (HEARD_FITS, TEXT_FITS, None, Acoustic(None, None))
            answers = {does_not_match(m, ev, text_pmi=pmi) for ev in evidence}
            assert len(answers) == 1
