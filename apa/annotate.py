"""What the alignment adds to a result: word and phone times, and the phones heard instead.

`annotate(assessment, alignment)` returns the Assessment with every word and phone given its start
and end (seconds) and every phone its top-3 heard phones, when the alignment succeeded; when it
did not (`Alignment.ok` False: its times are an even spread, not measurements) the words and
phones are left without times and heard phones, and `extra["aligned"]` is False with the reason.
The scores are never touched. `extra["acoustic_match"]` is the alignment's mean phone log
posterior (`acoustic_match`), the acoustic evidence of whether the recording is the reference at
all (None when not aligned).

What was heard (`heard_instead`): the alignment's forced choice of each phone (`choice_ll`: its
window re-aligned with each of the 39 phones in its place), plus a prior of
HEARD_CANONICAL_PRIOR_NATS for the phone that was asked for (a learner who was asked for /r/ and
is heard about as well as /r/ or /l/ said /r/), normalised per frame of the window into
probabilities over the 39 CMU phones. `bench/heard_instead.py` measures it on synthetic minimal
pairs beside the raw frame posteriors (`AlignedPhone.heard`), which it replaced:
bench/results/heard_instead.md.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from apa.schema import Assessment, Phone, Word

if TYPE_CHECKING:
    from apa.align import AlignedPhone, Alignment

__all__ = ["HEARD_CANONICAL_PRIOR_NATS", "HEARD_TOP", "acoustic_match", "annotate", "heard_instead", "top_heard_other",
           "word_span"]

HEARD_CANONICAL_PRIOR_NATS = 8.0  # log-likelihood bonus of the phone asked for (bench/heard_instead.py)
HEARD_TOP = 3
TIME_DECIMALS = 3


def heard_instead(
    phone: AlignedPhone, prior_nats: float = HEARD_CANONICAL_PRIOR_NATS, top: int = HEARD_TOP
) -> tuple[tuple[str, float], ...]:
    """The `top` phones most likely heard for one aligned phone, as ((CMU phone without stress,
    probability 0-1), ...), best first; () when the alignment has no forced-choice scores.

    probability of q = softmax over the 39 CMU phones of (choice_ll[q] + prior_nats [q is the
    canonical phone]) / choice_frames (module doc)."""
    from apa.align import PHONE_INDEX, PHONES

    if phone.choice_ll is None or not np.isfinite(phone.choice_ll).any():
        return ()
    v = np.array(phone.choice_ll, dtype=np.float64)
    c = PHONE_INDEX.get(phone.symbol.rstrip("012").upper())
    if c is not None:
        v[c] += prior_nats
    v = v / max(phone.choice_frames, 1)
    v[~np.isfinite(v)] = -np.inf
    p = np.exp(v - v.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")[:top]
    return tuple((PHONES[q], float(p[q])) for q in order if math.isfinite(p[q]) and p[q] > 0)


def top_heard_other(phone: Phone) -> tuple[str, float] | None:
    """(phone, probability) heard instead of `phone` when the most likely heard phone is another
    phone than the one asked for; else None (also when nothing was heard)."""
    if not phone.heard:
        return None
    best, p = phone.heard[0]
    return None if best == phone.phone.rstrip("012").upper() else (best, p)


def _t(x: float) -> float:
    return round(float(x), TIME_DECIMALS)


def acoustic_match(alignment: Alignment | None) -> float | None:
    """How well the recording sounds like the reference it was aligned to: the mean over the
    aligned phones of `AlignedPhone.lpp` (frame-averaged log posterior of the phone asked for,
    nats, <= 0; near 0: every phone sounds like itself). None when there is no alignment, it
    failed (`ok` False), or it has no phones."""
    if alignment is None or not alignment.ok or not alignment.phones:
        return None
    lpp = [p.lpp for p in alignment.phones]
    if not all(math.isfinite(x) for x in lpp):
        return None
    return round(float(sum(lpp) / len(lpp)), 4)


def annotate(assessment: Assessment, alignment: Alignment | None) -> Assessment:
    """The assessment with times and heard phones from `alignment` (see the module doc); its
    words and phones must be the alignment's, in order (else it is returned unannotated, with
    extra["aligned"] False). extra gains "aligned" (bool), "alignment_note" ("" when aligned) and
    "acoustic_match" (`acoustic_match`, None when not aligned), which `apa.reading` gives the
    "does not match" guard (`apa.miscues.does_not_match`)."""
    extra = dict(assessment.extra)
    if alignment is None:
        extra.update(aligned=False, alignment_note="no alignment was made", acoustic_match=None)
        return replace(assessment, extra=extra)
    if not alignment.ok:
        extra.update(aligned=False, alignment_note=alignment.reason or "not aligned", acoustic_match=None)
        return replace(assessment, extra=extra)
    shape = [len(w.phones) for w in assessment.words]
    got = [0] * len(alignment.words)
    for p in alignment.phones:
        got[p.word] += 1
    if shape != got:
        extra.update(aligned=False, alignment_note="the alignment is of other words", acoustic_match=None)
        return replace(assessment, extra=extra)
    flat = iter(alignment.phones)
    words = []
    for w, aw in zip(assessment.words, alignment.words):
        phones = []
        for p in w.phones:
            ap = next(flat)
            phones.append(replace(p, start=_t(ap.start), end=_t(ap.end), heard=heard_instead(ap)))
        words.append(replace(w, phones=tuple(phones), start=_t(aw.start), end=_t(aw.end)))
    extra.update(aligned=True, alignment_note="", acoustic_match=acoustic_match(alignment))
    return replace(assessment, words=tuple(words), extra=extra)


def word_span(word: Word) -> tuple[float, float] | None:
    """(start, end) seconds of a word when it has times, else None."""
    if word.start is None or word.end is None or word.end <= word.start:
        return None
    return word.start, word.end
