"""Miscues: which reference words were not said, which words were said in addition, and whether
the recording is the sentence at all, from the transcript (apa.transcribe).

    from apa.miscues import find_miscues, apply_miscues
    m = find_miscues(["WE", "CALL", "IT", "BEAR"], transcript.words)
    m.omitted, m.insertions, m.mismatch          # (3,), (Insertion("REALLY", 1, ...),), False
    result = apply_miscues(result, m)            # word error_type "omission", result.insertions

Both word lists are normalised the same way (`apa.text.normalize`: upper case, numbers spelled
out, punctuation dropped). A heard word that is not in the reference but close to one of its words
in spelling (`FUZZY_MIN`, both at least `FUZZY_MIN_LEN` letters: "ELEPHANTS" for "ELEPHANT",
"TWIMMING" for "SWIMMING") counts as that word, and two heard words that together spell a
reference word ("FOOT BALL") as one. The alignment is the Levenshtein alignment of the word lists
(rapidfuzz's opcodes): a reference word without a counterpart was omitted; a heard word without
one was inserted; a reference word paired with another heard word was said (how well is the
scorer's business). An inserted word equal to the reference word next to it, or a run of inserted
words equal to the run of reference words next to it, is a repetition.

The transcript says the recording does not match the text (`Miscues.mismatch`) when three
readings agree: the words heard as written cover less than `MISMATCH_BELOW` of max(reference
words, heard words); the phones of the two word lists (`apa.text.g2p`, stress dropped) are less
than `PHONES_BELOW` alike (rapidfuzz's normalised Levenshtein similarity), so a misheard reading
of the sentence is not taken for another sentence; and the recogniser was fairly sure of what it
heard (mean word probability at least `CONFIDENT_FROM`), since on poorly read speech it writes
words that were never said.

The guard itself (`does_not_match`, what `apa.reading` applies) adds the forced alignment's
evidence (`Acoustic`), asked for only when fewer than `MISMATCH_BELOW` of the words were heard as
written: the recording aligned to the text and to the words heard, each summed up as a `Fit`
(`Fit.clip_fit`: the log posterior of the phones asked for per frame of the whole clip, the frames
the aligner leaves to its silence and noise fillers counted at `FILLER_NATS`, so that a few words
that fit a part of the clip do not look better than a sentence that fits all of it). With few
words heard as written, it fires when

* the text could not be aligned but the words heard could;
* the text fits very poorly (`Fit.phone` below `ACOUSTIC_FAR_BELOW`), however unsure the transcript;
* the transcript says mismatch and the text does not fit the clip better than the words heard by
  more than `HEARD_FITS_BY` nats per frame (words heard that could not be aligned leave the text's
  fit alone to decide, against `HEARD_UNALIGNED_BELOW`). A recogniser that writes a sentence never
  said ("Tuesday." for "HERE IS TIM'S CAP") is overruled this way: its words fit the recording
  worse than the sentence that was read, while the words of another sentence that was read fit
  it better than the text. One cut on the acoustic match alone cannot do this, since a poor
  reading of the true text fits it as badly as many readings of another sentence.

Without acoustic evidence (the scorer does not align) the transcript decides alone.

Where the transcriber scored the text itself (`Transcript.reference_pmi`: how much likelier the
recording makes the text than silence does, in nats, from Whisper's own decoder), that evidence
comes first, again only with few words heard as written: below `TEXT_PMI_BELOW` the recording is
another sentence whatever the rules above say, and from `TEXT_PMI_KEEPS_FROM` up it is the text
whatever they say (they are asked only in between). A sentence that was read, however poorly,
raises the probability of its own words; another sentence's words are not raised, or lowered.

The cut points were chosen on Speechocean762 train clips with true and swapped texts
(bench/results/miscues_tuning.md; for the text's score also bench/results/miscues_guard_candidates.md);
the rates they give on test clips: bench/results/miscues.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from apa.schema import Assessment, Insertion
from apa.transcribe import HeardWord

FUZZY_MIN = 80.0  # rapidfuzz fuzz.ratio (0-100) for a heard word to count as a reference word
FUZZY_MIN_LEN = 4  # letters, both words: short words ("THE"/"THEY") are never taken for each other
MISMATCH_BELOW = 1 / 3  # share of words heard as written below which the recording is not the text
PHONES_BELOW = 0.3  # phone similarity of reference and heard words below which they differ
CONFIDENT_FROM = 0.3  # mean word probability of the transcript from which the guard trusts it
HEARD_FITS_BY = -0.3  # nats per frame: the text must out-fit the words heard by more than this to overrule them
ACOUSTIC_FAR_BELOW = -6.0  # Fit.phone of the text (nats) below which few words heard as written are enough
HEARD_UNALIGNED_BELOW = -4.5  # Fit.phone of the text (nats) below which a mismatch stands when the words heard do not align
FILLER_NATS = -6.0  # log posterior per frame charged for the frames left to the aligner's fillers (Fit.clip_fit)
# Transcript.reference_pmi (nats) below which the recording is another sentence: it makes the text less likely than
# silence does, by more than a poor reading of the text did
TEXT_PMI_BELOW = -5.0
# ... and from which it is the text, over the rules above: a clear gain for the text, more than another sentence got
TEXT_PMI_KEEPS_FROM = 6.0


@dataclass(frozen=True)
class HeardToken:
    """One normalised heard word ("ELEPHANT") with the times of the word it came from (seconds)."""

    text: str
    start: float | None = None
    end: float | None = None
    probability: float | None = None


@dataclass(frozen=True)
class Fit:
    """How well a recording sounds like words force-aligned to it (`apa.reading.fit_of`).

    phone: the mean over the aligned phones of their frame-averaged log posterior (nats, <= 0;
    `apa.annotate.acoustic_match`); frame: the same log posterior averaged over all the phones'
    frames; coverage: the share (0-1) of the clip's frames inside the phones (the rest the aligner
    gave to silence and noise fillers)."""

    phone: float
    frame: float
    coverage: float

    def clip_fit(self, filler_nats: float = FILLER_NATS) -> float:
        """Log posterior per frame of the whole clip: the phones' frames at `frame`, the others
        at filler_nats (nats)."""
        c = min(max(self.coverage, 0.0), 1.0)
        return c * self.frame + (1.0 - c) * filler_nats

    @property
    def usable(self) -> bool:
        """All three readings are finite numbers."""
        return all(math.isfinite(x) for x in (self.phone, self.frame, self.coverage))


@dataclass(frozen=True)
class Acoustic:
    """The forced alignment's evidence for the guard: the recording aligned to the text and to the
    words heard (None: could not be aligned, or, for `heard`, nothing to align)."""

    text: Fit | None
    heard: Fit | None


@dataclass(frozen=True)
class Miscues:
    """The alignment of what was heard to the reference.

    reference: the reference words; heard: the normalised heard words; said: per reference word,
    the index in `heard` of its counterpart (None: omitted); insertions: heard words without
    counterpart, at the reference position they came before; matched: reference words heard as
    written (or close, see the module doc); phone_similarity: 0-1 of the two word lists' phones;
    confidence: the heard words' mean probability (None: not known)."""

    reference: tuple[str, ...]
    heard: tuple[HeardToken, ...]
    said: tuple[int | None, ...]
    insertions: tuple[Insertion, ...]
    matched: int
    phone_similarity: float = 1.0
    confidence: float | None = None

    @property
    def omitted(self) -> tuple[int, ...]:
        """Indices of the reference words not said."""
        return tuple(i for i, j in enumerate(self.said) if j is None)

    @property
    def match_ratio(self) -> float:
        """Words heard as written / max(reference words, heard words), 0-1 (1 when both are empty)."""
        n = max(len(self.reference), len(self.heard))
        return self.matched / n if n else 1.0

    @property
    def mismatch(self) -> bool:
        """Something was heard, surely, and it shares almost nothing with the reference."""
        sure = self.confidence is None or self.confidence >= CONFIDENT_FROM
        return bool(self.heard) and self.match_ratio < MISMATCH_BELOW and self.phone_similarity < PHONES_BELOW and sure


def does_not_match(miscues: Miscues, acoustic: Acoustic | None, *, text_pmi: float | None = None,
                   fits_by: float = HEARD_FITS_BY, far_below: float = ACOUSTIC_FAR_BELOW,
                   unaligned_below: float = HEARD_UNALIGNED_BELOW, filler_nats: float = FILLER_NATS,
                   pmi_below: float = TEXT_PMI_BELOW, pmi_keeps_from: float = TEXT_PMI_KEEPS_FROM) -> bool:
    """The "does not match" guard from the transcript (`Miscues.mismatch`), the forced alignment
    (`acoustic`; None: no alignment was made, the transcript decides alone) and the recogniser's
    score of the text (`text_pmi`, `Transcript.reference_pmi`; None: not scored, the rules
    without it).

    Never when something was heard and at least MISMATCH_BELOW of it as written. Otherwise, with
    text_pmi: it fires below pmi_below, never from pmi_keeps_from, and in between as the rules
    without it say (`fired_without_pmi`)."""
    rules = fired_without_pmi(miscues, acoustic, fits_by=fits_by, far_below=far_below,
                              unaligned_below=unaligned_below, filler_nats=filler_nats)
    if text_pmi is None or not math.isfinite(text_pmi):
        return rules
    if not miscues.heard or miscues.match_ratio >= MISMATCH_BELOW:
        return False
    return text_pmi < pmi_below or (rules and text_pmi < pmi_keeps_from)


def pmi_decides(text_pmi: float | None, *, pmi_below: float = TEXT_PMI_BELOW,
                pmi_keeps_from: float = TEXT_PMI_KEEPS_FROM) -> bool:
    """Whether the recogniser's score of the text settles the guard without the other rules
    (below pmi_below or from pmi_keeps_from; None or a score that is not finite never does)."""
    return text_pmi is not None and math.isfinite(text_pmi) and not (pmi_below <= text_pmi < pmi_keeps_from)


def fired_without_pmi(miscues: Miscues, acoustic: Acoustic | None, *, fits_by: float = HEARD_FITS_BY,
                      far_below: float = ACOUSTIC_FAR_BELOW, unaligned_below: float = HEARD_UNALIGNED_BELOW,
                      filler_nats: float = FILLER_NATS) -> bool:
    """The guard from the transcript and the forced alignment alone (`does_not_match` without
    the recogniser's score of the text).

    Never when something was heard and at least MISMATCH_BELOW of it as written. Otherwise it
    fires when the text did not align but the words heard did; when the text's `Fit.phone` is
    below far_below; or when the transcript says mismatch and the text's `Fit.clip_fit` is not
    above that of the words heard by more than fits_by (the words heard not aligned: when the
    text's `Fit.phone` is below unaligned_below). Neither aligned: the transcript's word."""
    if acoustic is None:
        return miscues.mismatch
    if not miscues.heard or miscues.match_ratio >= MISMATCH_BELOW:
        return False
    text = acoustic.text if acoustic.text is not None and acoustic.text.usable else None
    heard = acoustic.heard if acoustic.heard is not None and acoustic.heard.usable else None
    if text is None:
        return heard is not None or miscues.mismatch
    if text.phone < far_below:
        return True
    if not miscues.mismatch:
        return False
    if heard is None:
        return text.phone < unaligned_below
    return text.clip_fit(filler_nats) - heard.clip_fit(filler_nats) <= fits_by


def heard_tokens(words: Sequence[HeardWord | str]) -> tuple[HeardToken, ...]:
    """Heard words (as the recogniser wrote them, or plain strings) -> normalised words; a word
    that normalises to several ("well-known") gives each its times, punctuation gives none."""
    from apa.text import normalize

    out = []
    for w in words:
        if isinstance(w, str):
            out += [HeardToken(t) for t in normalize(w)]
        else:
            out += [HeardToken(t, w.start, w.end, w.probability) for t in normalize(w.text)]
    return tuple(out)


def _canonical(heard: Sequence[HeardToken], reference: Sequence[str]) -> list[HeardToken]:
    """Heard words with near-spellings of reference words replaced by them, and pairs that spell a
    reference word joined (see the module doc)."""
    from rapidfuzz import fuzz, process

    vocab = set(reference)
    joined: list[HeardToken] = []
    k = 0
    while k < len(heard):
        h = heard[k]
        if k + 1 < len(heard) and h.text not in vocab and h.text + heard[k + 1].text in vocab:
            nxt = heard[k + 1]
            joined.append(HeardToken(h.text + nxt.text, h.start, nxt.end, h.probability))
            k += 2
            continue
        joined.append(h)
        k += 1
    long_words = [w for w in vocab if len(w) >= FUZZY_MIN_LEN]
    out = []
    for h in joined:
        if h.text not in vocab and len(h.text) >= FUZZY_MIN_LEN and long_words:
            best = process.extractOne(h.text, long_words, scorer=fuzz.ratio, score_cutoff=FUZZY_MIN)
            if best is not None:
                h = replace(h, text=best[0])
        out.append(h)
    return out


def find_miscues(reference: Sequence[str], heard: Sequence[HeardWord | str]) -> Miscues:
    """Align the reference words (normalised, e.g. `Word.text` of a result) to the heard words
    (`Transcript.words`, or strings) and read off omissions, insertions and repetitions."""
    from rapidfuzz.distance import Levenshtein

    ref = tuple(reference)
    raw = heard_tokens(heard)
    tokens = _canonical(raw, ref)
    said: list[int | None] = [None] * len(ref)
    inserted: list[tuple[int, int]] = []  # (heard index, reference position)
    matched = 0
    for op in Levenshtein.opcodes(list(ref), [t.text for t in tokens]):
        if op.tag in ("equal", "replace"):
            for k in range(op.src_end - op.src_start):
                said[op.src_start + k] = op.dest_start + k
            matched += (op.src_end - op.src_start) if op.tag == "equal" else 0
        elif op.tag == "insert":
            inserted += [(j, op.src_start) for j in range(op.dest_start, op.dest_end)]
    insertions = _insertions(ref, tokens, inserted)
    probs = [t.probability for t in raw if t.probability is not None]
    return Miscues(reference=ref, heard=tuple(tokens), said=tuple(said), insertions=insertions, matched=matched,
                   phone_similarity=phone_similarity(ref, [t.text for t in raw]),
                   confidence=sum(probs) / len(probs) if probs else None)


def phone_similarity(reference: Sequence[str], heard: Sequence[str]) -> float:
    """0-1: rapidfuzz's normalised Levenshtein similarity of the words' phones (`apa.text.g2p`,
    stress digits dropped); 0 when nothing was heard."""
    from rapidfuzz.distance import Levenshtein

    from apa.text import g2p

    def phones(words: Sequence[str]) -> list[str]:
        return [p.rstrip("012") for w in words for p in g2p(w)]

    if not heard:
        return 0.0
    return float(Levenshtein.normalized_similarity(phones(reference), phones(heard)))


def _insertions(ref: Sequence[str], tokens: Sequence[HeardToken], inserted: Sequence[tuple[int, int]]) -> tuple[Insertion, ...]:
    """Insertion records, repetitions marked: a run of inserted words at one position equal to the
    reference run just before or after it, or a single word equal to its neighbour."""
    runs: dict[int, list[int]] = {}
    for j, pos in inserted:
        runs.setdefault(pos, []).append(j)
    out = []
    for pos, js in runs.items():
        words = [tokens[j].text for j in js]
        n = len(words)
        run_repeats = words == list(ref[max(0, pos - n) : pos]) or words == list(ref[pos : pos + n])
        for k, j in enumerate(js):
            w = words[k]
            neighbour = (pos > 0 and ref[pos - 1] == w) or (pos < len(ref) and ref[pos] == w) or (k > 0 and words[k - 1] == w)
            t = tokens[j]
            out.append(Insertion(w, pos, t.start, t.end, repetition=bool(run_repeats or neighbour)))
    return tuple(sorted(out, key=lambda i: (i.position, i.start if i.start is not None else 0.0)))


def apply_miscues(result: Assessment, miscues: Miscues) -> Assessment:
    """The result with the miscues: omitted words marked (`Word.omitted`, error_type "omission"),
    `insertions` filled, and sentence completeness at most 10 x the share of reference words said
    (the model's reading where it is lower). The words must be the miscues' reference."""
    if tuple(w.text for w in result.words) != miscues.reference:
        raise ValueError("the miscues were found for another reference than the result's words")
    omitted = set(miscues.omitted)
    words = tuple(replace(w, omitted=i in omitted) for i, w in enumerate(result.words))
    sentence = result.sentence
    if words:
        said = 10.0 * (len(words) - len(omitted)) / len(words)
        model = sentence.completeness
        sentence = replace(sentence, completeness=round(said if model is None else min(model, said), 2))
    return replace(result, words=words, sentence=sentence, insertions=miscues.insertions)
