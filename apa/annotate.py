"""What the alignment adds to a result: word and phone times, and the phones heard instead.

`annotate(assessment, alignment)` returns the Assessment with every word and phone given its start
and end (seconds) and every phone its top-3 heard phones, when the alignment succeeded; when it
did not (`Alignment.ok` False: its times are an even spread, not measurements) the words and
phones are left without times and heard phones, and `extra["aligned"]` is False with the reason.
The scores are never touched. `extra["acoustic_match"]` is the alignment's mean phone log
posterior (`acoustic_match`), the acoustic evidence of whether the recording is the reference at
all (None when not aligned).

What was heard (`heard_instead`): for each candidate phone q of the same kind as the phone asked
for (a vowel for a vowel, a consonant for a consonant), the sum of

* the alignment's forced choice (`choice_ll[q]`: the phone's window re-aligned with q in its
  place, q scored by its triphone between the aligned neighbours),
* HEARD_POSTERIOR_WEIGHT x the summed frame log posteriors of q over the phone's own frames
  (`frames * (lpp + lpr[q])`, the frame evidence the alignment already has),
* a prior of HEARD_CANONICAL_PRIOR_NATS for the phone that was asked for (a learner who was asked
  for /r/ and is heard about as well as /r/ or /l/ said /r/),
* minus HEARD_MANNER_PENALTY_NATS when q is a consonant of another manner (stop, fricative or
  affricate, nasal, approximant: `MANNER`) than the one asked for,

normalised per frame of the window into probabilities over those candidates. The three weights
were chosen on a tuning set of minimal pairs (`apa.minimal_pairs.TUNING_PAIRS`), and
`bench/heard_instead.py` reports them on the held-out `PAIRS`, beside the raw frame posteriors
(`AlignedPhone.heard`) and the old reading: bench/results/heard_instead.md.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from apa.schema import Assessment, Phone, Word
from apa.text import ARPABET_VOWELS

if TYPE_CHECKING:
    from apa.align import AlignedPhone, Alignment

__all__ = ["HEARD_CANONICAL_PRIOR_NATS", "HEARD_MANNER_PENALTY_NATS", "HEARD_POSTERIOR_WEIGHT", "HEARD_TOP", "MANNER",
           "acoustic_match", "annotate", "heard_instead", "heard_scores", "top_heard_other", "word_span"]

# The weights of `heard_scores`, chosen on apa.minimal_pairs.TUNING_PAIRS (bench/heard_instead.py).
HEARD_CANONICAL_PRIOR_NATS = 12.0  # log-likelihood bonus of the phone asked for
HEARD_POSTERIOR_WEIGHT = 0.5  # weight of the summed frame log posteriors
HEARD_MANNER_PENALTY_NATS = 20.0  # penalty of a consonant of another manner than the one asked for
HEARD_TOP = 3

# Manner of articulation of the CMU consonants (vowels: "vowel").
MANNER: dict[str, str] = {
    **{p: "vowel" for p in ARPABET_VOWELS},
    **{p: "stop" for p in ("P", "B", "T", "D", "K", "G")},
    **{p: "fricative" for p in ("F", "V", "TH", "DH", "S", "Z", "SH", "ZH", "HH", "CH", "JH")},
    **{p: "nasal" for p in ("M", "N", "NG")},
    **{p: "approximant" for p in ("L", "R", "W", "Y")},
}
TIME_DECIMALS = 3


def heard_scores(
    phone: AlignedPhone,
    prior_nats: float = HEARD_CANONICAL_PRIOR_NATS,
    posterior_weight: float = HEARD_POSTERIOR_WEIGHT,
    manner_penalty_nats: float = HEARD_MANNER_PENALTY_NATS,
) -> np.ndarray | None:
    """(40,) score in nats of each phone of `apa.align.PHONES` having been heard for `phone` (the
    module doc's sum); -inf for SIL and for phones of the other kind (vowel / consonant). None when
    the alignment has no forced-choice scores."""
    from apa.align import PHONE_INDEX, PHONES

    if phone.choice_ll is None or not np.isfinite(phone.choice_ll).any():
        return None
    v = np.array(phone.choice_ll, dtype=np.float64)
    v[~np.isfinite(v)] = -np.inf
    if posterior_weight and phone.frames > 0:
        frame_lp = np.nan_to_num((phone.lpp + np.asarray(phone.lpr, dtype=np.float64)) * phone.frames, nan=0.0)
        v = v + posterior_weight * frame_lp
    base = phone.symbol.rstrip("012").upper()
    c = PHONE_INDEX.get(base)
    if c is not None:
        v[c] += prior_nats
        manner = np.array([MANNER.get(q, "") for q in PHONES])
        is_vowel = manner == "vowel"
        v[is_vowel != (MANNER[base] == "vowel")] = -np.inf
        v[(manner != MANNER[base]) & ~is_vowel] -= manner_penalty_nats
    v[PHONE_INDEX["SIL"]] = -np.inf
    return v


def heard_instead(
    phone: AlignedPhone,
    prior_nats: float = HEARD_CANONICAL_PRIOR_NATS,
    top: int = HEARD_TOP,
    posterior_weight: float = HEARD_POSTERIOR_WEIGHT,
    manner_penalty_nats: float = HEARD_MANNER_PENALTY_NATS,
) -> tuple[tuple[str, float], ...]:
    """The `top` phones most likely heard for one aligned phone, as ((CMU phone without stress,
    probability 0-1), ...), best first; () when the alignment has no forced-choice scores.

    probability of q = softmax of `heard_scores` / choice_frames (module doc)."""
    from apa.align import PHONES

    v = heard_scores(phone, prior_nats, posterior_weight, manner_penalty_nats)
    if v is None or not np.isfinite(v).any():
        return ()
    v = v / max(phone.choice_frames, 1)
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
