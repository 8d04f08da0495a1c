"""apa.annotate: times and heard phones from the alignment, none when it failed; and the scorer
attaches them (DecodeOptions.feedback) without changing the scores."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from apa.align import PHONE_INDEX, PHONES, AlignedPhone, AlignedWord, Alignment, align
from apa.annotate import (
    HEARD_CANONICAL_PRIOR_NATS,
    HEARD_MANNER_PENALTY_NATS,
    HEARD_TOP,
    MANNER,
    acoustic_match,
    annotate,
    heard_instead,
    heard_scores,
    top_heard_other,
)
from apa.schema import Assessment, Phone, Sentence, Word

CLIP_TEXT = "WE CALL IT BEAR"


def _aligned_phone(symbol: str, ll: dict[str, float], frames: int = 10) -> AlignedPhone:
    v = np.full(len(PHONES), -1000.0)
    for q, x in ll.items():
        v[PHONE_INDEX[q]] = x
    v[PHONE_INDEX["SIL"]] = -np.inf
    return AlignedPhone(symbol, 0, 0.1, 0.2, -1.0, np.zeros(len(PHONES)), -1.0, (), frames=5, choice_ll=v,
                        choice_frames=frames)


def test_heard_instead_ranks_by_forced_choice_with_the_canonical_prior():
    p = _aligned_phone("R", {"R": -100.0, "L": -95.0, "W": -99.0})
    no_prior = heard_instead(p, prior_nats=0.0)
    assert [h for h, _ in no_prior] == ["L", "W", "R"]
    probs = [q for _, q in no_prior]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
    # 8 nats for the phone asked for: R (-92) now beats L (-95)
    assert heard_instead(p, prior_nats=8.0)[0][0] == "R"
    assert heard_instead(p, prior_nats=4.0)[0][0] == "L"
    assert len(heard_instead(p)) == HEARD_TOP
    assert all(h != "SIL" for h, _ in heard_instead(p))
    assert heard_instead(dataclasses.replace(p, choice_ll=None)) == ()


def test_heard_instead_keeps_to_the_kind_of_phone_asked_for():
    # the vowel AA scores best, but a consonant was asked for: never heard as a vowel
    p = _aligned_phone("R", {"R": -100.0, "L": -99.0, "AA": -50.0})
    heard = [h for h, _ in heard_instead(p, prior_nats=0.0)]
    assert heard[:2] == ["L", "R"] and all(MANNER[h] != "vowel" for h in heard)
    v = _aligned_phone("IY1", {"IY": -100.0, "IH": -99.0, "S": -50.0})
    assert [h for h, _ in heard_instead(v, prior_nats=0.0)][:2] == ["IH", "IY"]
    assert heard_scores(v)[PHONE_INDEX["S"]] == -np.inf


def test_heard_instead_penalises_another_manner():
    # T (a stop) is 5 nats better than S, but S is a fricative like the TH asked for
    p = _aligned_phone("TH", {"TH": -200.0, "S": -105.0, "T": -100.0})
    assert heard_instead(p, prior_nats=0.0, manner_penalty_nats=0.0)[0][0] == "T"
    assert heard_instead(p, prior_nats=0.0, manner_penalty_nats=HEARD_MANNER_PENALTY_NATS)[0][0] == "S"
    v = heard_scores(p, prior_nats=0.0, posterior_weight=0.0, manner_penalty_nats=7.0)
    assert v[PHONE_INDEX["T"]] == pytest.approx(-107.0) and v[PHONE_INDEX["S"]] == pytest.approx(-105.0)


def test_heard_instead_adds_the_frame_posteriors():
    # the forced choice favours R by 1 nat; the frames favour L by 2 nats a frame over 5 frames
    lpr = np.zeros(len(PHONES))
    lpr[PHONE_INDEX["L"]] = 2.0
    p = dataclasses.replace(_aligned_phone("R", {"R": -99.0, "L": -100.0}), lpr=lpr)
    assert heard_instead(p, prior_nats=0.0, posterior_weight=0.0)[0][0] == "R"
    assert heard_instead(p, prior_nats=0.0, posterior_weight=0.5)[0][0] == "L"
    v = heard_scores(p, prior_nats=HEARD_CANONICAL_PRIOR_NATS, posterior_weight=0.5, manner_penalty_nats=0.0)
    # R: -99 + 0.5 * 5 * (lpp -1 + 0) + prior; L: -100 + 0.5 * 5 * (-1 + 2)
    assert v[PHONE_INDEX["R"]] == pytest.approx(-101.5 + HEARD_CANONICAL_PRIOR_NATS)
    assert v[PHONE_INDEX["L"]] == pytest.approx(-97.5)
    # NaN frame evidence (not measured) adds nothing
    q = dataclasses.replace(p, lpr=np.full(len(PHONES), np.nan))
    assert heard_scores(q, prior_nats=0.0, manner_penalty_nats=0.0)[PHONE_INDEX["L"]] == pytest.approx(-100.0)


def _bare(text: str = CLIP_TEXT) -> Assessment:
    from apa.text import to_words

    words = tuple(Word(w.text, 7.0, 10.0, 7.0, tuple(Phone(q, 1.0) for q in w.phones)) for w in to_words(text))
    return Assessment(text, Sentence(7, 7, 7, 7, 7), words)


def test_annotate_puts_times_and_heard_on_every_word_and_phone(speech):
    a = _bare()
    ref = tuple((w.text, w.phone_symbols) for w in a.words)
    al = align(speech, ref)
    assert al.ok
    b = annotate(a, al)
    assert b.extra["aligned"] is True and b.extra["alignment_note"] == ""
    assert b.extra["acoustic_match"] == pytest.approx(np.mean([p.lpp for p in al.phones]), abs=1e-4)
    assert b.extra["acoustic_match"] < 0
    assert [w.accuracy for w in b.words] == [w.accuracy for w in a.words]  # scores untouched
    assert [p.score for p in b.phones] == [p.score for p in a.phones]
    for w, aw in zip(b.words, al.words):
        assert w.start == pytest.approx(aw.start, abs=1e-3) and w.end == pytest.approx(aw.end, abs=1e-3)
        assert 0 <= w.start < w.end <= len(speech) / 16000 + 1e-6
    starts = [p.start for p in b.phones]
    assert starts == sorted(starts)
    assert all(len(p.heard) == HEARD_TOP and all(h in PHONES for h, _ in p.heard) for p in b.phones)
    # a learner-facing Azure result: ticks and NBestPhonemes
    z = b.to_azure()
    w0 = z["Words"][0]
    assert w0["Offset"] == round(b.words[0].start * 1e7) and w0["Duration"] > 0
    nbest = w0["Phonemes"][0]["PronunciationAssessment"]["NBestPhonemes"]
    assert len(nbest) == HEARD_TOP and all(0 <= n["Score"] <= 100 for n in nbest)
    # round trip through JSON keeps times and heard
    assert Assessment.from_json(b.to_json()).words == b.words


def test_failed_alignment_gives_no_times_no_heard_and_a_note():
    a = _bare()
    ref = tuple((w.text, w.phone_symbols) for w in a.words)
    al = align(np.zeros(16000, np.float32), ref)  # silent: the even-spread fallback
    assert not al.ok and al.words[1].start > 0  # the fallback has (made-up) times ...
    for b in (annotate(a, al), annotate(a, None)):
        assert b.extra["aligned"] is False and b.extra["alignment_note"]
        assert b.extra["acoustic_match"] is None  # no acoustic evidence for the mismatch guard
        assert all(w.start is None and w.end is None for w in b.words)  # ... which are never shown
        assert all(p.start is None and p.heard == () for p in b.phones)
        z = b.to_azure()
        assert "Offset" not in z["Words"][0]
        assert "NBestPhonemes" not in z["Words"][0]["Phonemes"][0]["PronunciationAssessment"]


def test_alignment_of_other_words_is_not_attached():
    a = _bare()
    other = Alignment(True, "", (AlignedWord("X", 0.0, 0.5),),
                      (AlignedPhone("K", 0, 0.0, 0.5, -1.0, np.zeros(len(PHONES)), -1.0, ()),))
    b = annotate(a, other)
    assert b.extra["aligned"] is False and all(w.start is None for w in b.words)
    assert b.extra["acoustic_match"] is None


def _phones_with_lpp(*lpp: float) -> tuple[AlignedPhone, ...]:
    return tuple(AlignedPhone("K", 0, 0.1 * i, 0.1 * i + 0.1, x, np.zeros(len(PHONES)), -1.0, ())
                 for i, x in enumerate(lpp))


def test_acoustic_match_is_the_mean_phone_log_posterior_or_none():
    words = (AlignedWord("X", 0.0, 0.3),)
    assert acoustic_match(Alignment(True, "", words, _phones_with_lpp(-1.0, -2.0, -6.0))) == pytest.approx(-3.0)
    assert acoustic_match(Alignment(False, "silent audio", words, _phones_with_lpp(-1.0))) is None
    assert acoustic_match(Alignment(True, "", words, _phones_with_lpp(-1.0, math.nan))) is None
    assert acoustic_match(Alignment(True, "", (), ())) is None
    assert acoustic_match(None) is None


def test_top_heard_other():
    assert top_heard_other(Phone("R", 0.2, heard=(("L", 0.6), ("R", 0.3)))) == ("L", 0.6)
    assert top_heard_other(Phone("R", 0.2, heard=(("R", 0.6), ("L", 0.3)))) is None
    assert top_heard_other(Phone("IY1", 0.2, heard=(("IY", 0.6),))) is None
    assert top_heard_other(Phone("R", 0.2)) is None


def test_scorer_attaches_times_unless_feedback_is_off(tiny_dir, speech):
    from apa.scorer import AudioLMMScorer, DecodeOptions

    s = AudioLMMScorer.from_pretrained(tiny_dir, None, device="cpu", dtype="float32")
    a = s.assess(speech, CLIP_TEXT)
    assert a.extra["aligned"] is True
    assert all(w.start is not None for w in a.words) and all(p.heard for p in a.phones)
    s.options = DecodeOptions(feedback=False)
    b = s.assess(speech, CLIP_TEXT)
    assert "aligned" not in b.extra and all(w.start is None for w in b.words)
    # the same scores either way: feedback never changes what the model computes
    # (to float rounding: the speculative decoder's batch shapes depend on its running guesses)
    assert all(math.isclose(w.accuracy, v.accuracy, rel_tol=1e-5) for w, v in zip(a.words, b.words))
    assert all(math.isclose(p.score, q.score, rel_tol=1e-5, abs_tol=1e-6) for p, q in zip(a.phones, b.phones))
