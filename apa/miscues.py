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
evidence, its acoustic match (`apa.annotate.acoustic_match`: the mean phone log posterior of the
recording aligned to the text, nats; the scorer puts it in `extra["acoustic_match"]`):

* no acoustic match (no alignment, or it failed): the transcript decides alone;
* the acoustic match is below `ACOUSTIC_FAR_BELOW` and fewer than `MISMATCH_BELOW` of the words
  were heard as written: it fires, however unsure the transcript;
* the transcript says mismatch: the recording is also aligned to the words heard, and the guard
  fires unless the text fits the recording better than those words by more than `HEARD_FITS_BY`
  nats (or the words heard could not be aligned: then it fires). A recogniser that writes a
  sentence never said ("Tuesday." for "HERE IS TIM'S CAP") is overruled this way: its words fit
  the recording worse than the sentence that was read, while the words of another sentence that
  was read fit it better than the text. One cut on the acoustic match alone cannot do this, since
  a poor reading of the true text fits it as badly as many readings of another sentence.

The cut points and the rates they give on Speechocean762 with true and swapped texts, on the
clips they were chosen on and on other clips: bench/results/miscues.md, miscues_heldout.md.
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
HEARD_FITS_BY = 0.0  # nats: the text must out-fit the transcript acoustically by more than this to overrule it
ACOUSTIC_FAR_BELOW = -5.8  # acoustic match (nats) below which few words heard as written are enough


@dataclass(frozen=True)
class HeardToken:
    """One normalised heard word ("ELEPHANT") with the times of the word it came from (seconds)."""

    text: str
    start: float | None = None
    end: float | None = None
    probability: float | None = None


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


def does_not_match(miscues: Miscues, acoustic_match: float | None, heard_match: float | None = None, *,
                   fits_by: float = HEARD_FITS_BY, far_below: float = ACOUSTIC_FAR_BELOW) -> bool:
    """The "does not match" guard from the transcript (`Miscues.mismatch`) and the forced
    alignment. acoustic_match: of the recording aligned to the reference; heard_match: aligned to
    the words heard (both `apa.annotate.acoustic_match`: mean phone log posterior, nats; None:
    not aligned, or the alignment failed).

    Without acoustic_match the transcript decides alone. With it, the guard fires when
    * acoustic_match < far_below and fewer than MISMATCH_BELOW of the words were heard as written
      (however unsure the transcript), or
    * the transcript says mismatch and the reference does not fit the recording better than what
      was heard, by more than fits_by nats (acoustic_match - heard_match <= fits_by); a heard_match
      of None leaves the transcript's word. A recogniser that wrote words never said ("Tuesday."
      for a true reading) is overruled: its words fit the recording worse than the sentence."""
    if acoustic_match is None or not math.isfinite(acoustic_match):
        return miscues.mismatch
    if miscues.heard and acoustic_match < far_below and miscues.match_ratio < MISMATCH_BELOW:
        return True
    if not miscues.mismatch:
        return False
    if heard_match is None or not math.isfinite(heard_match):
        return True
    return acoustic_match - heard_match <= fits_by


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
