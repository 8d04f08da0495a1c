"""bench.heard_instead: the per-phone bias (tried, not shipped) is fitted the way its doc says."""

from __future__ import annotations

import numpy as np

from apa.align import PHONE_INDEX, PHONES, AlignedPhone
from apa.annotate import heard_scores
from bench.heard_instead import _top3, fit_phone_bias, heard_scores_biased


def _phone(symbol: str, ll: dict[str, float]) -> AlignedPhone:
    v = np.full(len(PHONES), -1000.0)
    for q, x in ll.items():
        v[PHONE_INDEX[q]] = x
    v[PHONE_INDEX["SIL"]] = -np.inf
    return AlignedPhone(symbol, 0, 0.1, 0.2, -1.0, np.zeros(len(PHONES)), -1.0, (), frames=5, choice_ll=v,
                        choice_frames=10)


def test_phone_bias_pushes_down_an_attractor_of_correct_phones():
    # S said correctly, but Z (an attractor) scores 20 nats above it before the 12-nat prior: the
    # shipped scores hear Z; the fitted bias must lower Z below S and leave SIL at 0.
    correct = [_phone("S", {"S": -100.0, "Z": -80.0, "TH": -130.0})] * 5 + [_phone("Z", {"Z": -100.0, "S": -110.0})]
    b = fit_phone_bias(correct, l2=0.01)
    assert b.shape == (len(PHONES),) and b[PHONE_INDEX["SIL"]] == 0.0
    assert b[PHONE_INDEX["Z"]] < 0 < b[PHONE_INDEX["S"]]
    p = correct[0]
    assert _top3(heard_scores(p))[0] == "Z"
    assert _top3(heard_scores_biased(p, b))[0] == "S"
    # a stronger ridge keeps the bias smaller
    assert np.abs(fit_phone_bias(correct, l2=10.0)).sum() < np.abs(b).sum()


def test_biased_scores_are_none_without_forced_choice():
    p = _phone("S", {"S": -100.0})
    p = AlignedPhone(p.symbol, 0, 0.1, 0.2, -1.0, p.lpr, -1.0, (), frames=5)
    assert heard_scores_biased(p, np.zeros(len(PHONES))) is None
    assert _top3(None) == []
