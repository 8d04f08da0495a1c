"""Result schema: one set of frozen dataclasses for labels and predictions.

Field names follow Speechocean762. Scales (all "higher is better"):

    sentence accuracy, fluency, prosodic, completeness, total   0-10
    word accuracy, total                                        0-10
    word stress                                                 5 (wrong) or 10 (right)
    phone score                                                 0-2 (mean of experts)

`None` means "no label" (e.g. the 1,804 words of the Dec-2020 snapshot without phone
scores); it is never replaced by 0.

Mapping to Azure Pronunciation Assessment (for users of that API):

    ours                         Azure (0-100)
    Sentence.accuracy      x10   AccuracyScore
    Sentence.fluency       x10   FluencyScore
    Sentence.prosodic      x10   ProsodyScore
    Sentence.completeness  x10   CompletenessScore
    Sentence.total         x10   PronScore
    Word.accuracy          x10   Words[i].PronunciationAssessment.AccuracyScore
    Word.error_type              Words[i].PronunciationAssessment.ErrorType
                                 ("None", "Mispronunciation", "Omission")
    Assessment.insertions        Words with ErrorType "Insertion", in reading order
    Phone.score            x50   Phonemes[j].PronunciationAssessment.AccuracyScore
    Phone.heard            x100  Phonemes[j].PronunciationAssessment.NBestPhonemes
                                 ([{"Phoneme": "L", "Score": 62.0}, ...], best first)
    Word/Phone.start, end        Offset, Duration (100-ns ticks from the clip's start)

`Assessment.to_azure()` writes that shape. Times and heard phones are present only where the
recording was aligned (`extra["aligned"]`); otherwise they are None / () and left out of Azure's
shape.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

# Word error types, from word accuracy (Speechocean762 rubric bands):
#   0-1  "the whole word is mispronounced or missing"          -> omission
#   2-6  "more than / less than 30% of the phones are wrong"   -> mispronunciation
#   7-10 "correct, possibly with an accent"                     -> none
# Scores may be continuous (expected-value decoding), so the bands are cut halfway.
OMISSION_BELOW = 1.5
MISPRONUNCIATION_BELOW = 6.5

# Phone bands (0 wrong or missing, 1 heavy accent, 2 correct).
PHONE_WRONG_BELOW = 0.5
PHONE_ACCENTED_BELOW = 1.5

SENTENCE_ASPECTS = ("accuracy", "fluency", "prosodic", "completeness", "total")
WORD_ASPECTS = ("accuracy", "stress", "total")

ERROR_NONE = "none"
ERROR_MISPRONUNCIATION = "mispronunciation"
ERROR_OMISSION = "omission"
ERROR_INSERTION = "insertion"  # a word said that is not in the reference (Assessment.insertions)


def word_error_type(accuracy: float | None) -> str:
    """Error type of a word from its accuracy (0-10); `none` when unknown."""
    if accuracy is None:
        return ERROR_NONE
    if accuracy < OMISSION_BELOW:
        return ERROR_OMISSION
    if accuracy < MISPRONUNCIATION_BELOW:
        return ERROR_MISPRONUNCIATION
    return ERROR_NONE


TICKS_PER_SECOND = 10_000_000  # Azure's Offset / Duration unit: 100 ns


def ticks(seconds: float) -> int:
    """Seconds -> Azure's 100-ns ticks (rounded)."""
    return int(round(seconds * TICKS_PER_SECOND))


def phone_band(score: float | None) -> str:
    """"good" | "accented" | "wrong" | "unknown" for a phone score on 0-2."""
    if score is None:
        return "unknown"
    if score < PHONE_WRONG_BELOW:
        return "wrong"
    if score < PHONE_ACCENTED_BELOW:
        return "accented"
    return "good"


@dataclass(frozen=True)
class Phone:
    """One reference phone and its score (0-2)."""

    phone: str  # ARPAbet with stress digit, e.g. "AA1"
    score: float | None = None
    start: float | None = None  # seconds from the clip's start (None: not aligned)
    end: float | None = None
    heard: tuple[tuple[str, float], ...] = ()  # top-3 (ARPAbet without stress, probability 0-1) heard

    @property
    def ipa(self) -> str:
        from apa.ipa import arpabet_to_ipa

        return arpabet_to_ipa(self.phone)


@dataclass(frozen=True)
class Word:
    """One reference word with word-level scores and its phones."""

    text: str
    accuracy: float | None = None
    stress: float | None = None
    total: float | None = None
    phones: tuple[Phone, ...] = ()
    start: float | None = None  # seconds from the clip's start (None: not aligned)
    end: float | None = None
    omitted: bool = False  # the transcript shows the word was not said (apa.miscues)

    @property
    def error_type(self) -> str:
        return ERROR_OMISSION if self.omitted else word_error_type(self.accuracy)

    @property
    def phone_symbols(self) -> tuple[str, ...]:
        return tuple(p.phone for p in self.phones)


@dataclass(frozen=True)
class Sentence:
    """Sentence-level scores, 0-10 each."""

    accuracy: float | None = None
    fluency: float | None = None
    prosodic: float | None = None
    completeness: float | None = None
    total: float | None = None


@dataclass(frozen=True)
class Insertion:
    """A word said that is not in the reference (apa.miscues): its text (normalised like the
    reference words), `position` = index of the reference word it came before (len(words): after
    the last), its time in seconds in the scored audio, and whether it repeats a word next to it."""

    text: str
    position: int
    start: float | None = None
    end: float | None = None
    repetition: bool = False


@dataclass(frozen=True)
class Assessment:
    """A whole result: the reference text, sentence scores, words with phones.

    `repairs` lists what the parser had to fix in model output (empty for labels and clean
    output); `model` names what produced it.
    """

    text: str
    sentence: Sentence
    words: tuple[Word, ...]
    repairs: tuple[str, ...] = ()
    model: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # what was really said (apa.reading): the transcript (None: not transcribed), the words said
    # that are not in the reference, whether the transcript was the reference (free speech), and
    # notes for the learner (e.g. that miscues could not be checked)
    heard: str | None = None
    insertions: tuple[Insertion, ...] = ()
    free_speech: bool = False
    notes: tuple[str, ...] = ()

    # ---- views -------------------------------------------------------------------------
    @property
    def phones(self) -> tuple[Phone, ...]:
        return tuple(p for w in self.words for p in w.phones)

    # ---- JSON --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["repairs"] = list(self.repairs)
        d["insertions"] = [asdict(i) for i in self.insertions]
        d["notes"] = list(self.notes)
        for w, wd in zip(self.words, d["words"]):
            wd["error_type"] = w.error_type
            for p, pd in zip(w.phones, wd["phones"]):
                pd["ipa"] = p.ipa
        return d

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, **kwargs)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Assessment:
        words = tuple(
            Word(
                text=w["text"],
                accuracy=w.get("accuracy"),
                stress=w.get("stress"),
                total=w.get("total"),
                phones=tuple(
                    Phone(p["phone"], p.get("score"), p.get("start"), p.get("end"),
                          tuple((str(h), float(q)) for h, q in p.get("heard") or ()))
                    for p in w.get("phones", ())
                ),
                start=w.get("start"),
                end=w.get("end"),
                omitted=bool(w.get("omitted", False)),
            )
            for w in d["words"]
        )
        s = d.get("sentence", {})
        return cls(
            text=d["text"],
            sentence=Sentence(**{k: s.get(k) for k in SENTENCE_ASPECTS}),
            words=words,
            repairs=tuple(d.get("repairs", ())),
            model=d.get("model", ""),
            extra=dict(d.get("extra", {})),
            heard=d.get("heard"),
            insertions=tuple(Insertion(**i) for i in d.get("insertions", ())),
            free_speech=bool(d.get("free_speech", False)),
            notes=tuple(d.get("notes", ())),
        )

    @classmethod
    def from_json(cls, s: str) -> Assessment:
        return cls.from_dict(json.loads(s))

    def to_azure(self) -> dict[str, Any]:
        """The result in Azure Pronunciation Assessment's shape (scores 0-100)."""

        def x(v: float | None, k: float) -> float | None:
            return None if v is None else round(v * k, 1)

        def timed(d: dict[str, Any], item: Word | Phone) -> dict[str, Any]:
            if item.start is not None and item.end is not None:
                d["Offset"] = ticks(item.start)
                d["Duration"] = max(ticks(item.end) - ticks(item.start), 0)
            return d

        def phoneme(p: Phone) -> dict[str, Any]:
            pa: dict[str, Any] = {"AccuracyScore": x(p.score, 50)}
            if p.heard:
                pa["NBestPhonemes"] = [{"Phoneme": h, "Score": round(q * 100, 1)} for h, q in p.heard]
            return timed({"Phoneme": p.phone, "PronunciationAssessment": pa}, p)

        s = self.sentence
        out = {
            "RecognitionStatus": "Success",
            "DisplayText": self.heard if self.free_speech and self.heard else self.text,
            "PronunciationAssessment": {
                "AccuracyScore": x(s.accuracy, 10),
                "FluencyScore": x(s.fluency, 10),
                "ProsodyScore": x(s.prosodic, 10),
                "CompletenessScore": x(s.completeness, 10),
                "PronScore": x(s.total, 10),
            },
            "Words": [
                timed(
                    {
                        "Word": w.text,
                        "PronunciationAssessment": {
                            "AccuracyScore": x(w.accuracy, 10),
                            "ErrorType": w.error_type.capitalize(),
                        },
                        "Phonemes": [phoneme(p) for p in w.phones],
                    },
                    w,
                )
                for w in self.words
            ],
        }
        if self.insertions:
            out["Words"] = azure_with_insertions(out["Words"], self.insertions)
        return out


def azure_with_insertions(words: list[dict[str, Any]], insertions: tuple[Insertion, ...]) -> list[dict[str, Any]]:
    """Azure's word list with the inserted words (ErrorType "Insertion", Offset/Duration in 100 ns
    ticks where known) placed before the reference word of their `position`."""

    def entry(i: Insertion) -> dict[str, Any]:
        e: dict[str, Any] = {"Word": i.text.lower(), "PronunciationAssessment": {"ErrorType": "Insertion"}, "Phonemes": []}
        if i.start is not None and i.end is not None:
            e["Offset"], e["Duration"] = round(i.start * 1e7), round((i.end - i.start) * 1e7)
        return e

    out: list[dict[str, Any]] = []
    for k in range(len(words) + 1):
        out += [entry(i) for i in insertions if min(i.position, len(words)) == k]
        if k < len(words):
            out.append(words[k])
    return out
