"""The paper's rubric prompt, the SFT target text, and the decoding template.

Target text (Wang et al. 2025, arXiv 2509.15701), phone scores rescaled 0-2 -> 0-10:

    Sentence Scores: {accuracy} {fluency} {prosodic} {completeness} {total}
    Word Scores: WE/10/10/10 CALL/10/10/10 ...        (WORD/accuracy/stress/total)
    Phone Scores: W/10 IY0/10 K/10 AO0/9 ...          (PHONE/accuracy*5)

The words and phones come from the reference, so a target is a fixed *template* of forced
text with free score *slots*. The same template builds training targets (slots filled from
labels) and drives constrained decoding (slots filled by the model). A label that is missing
(`None`) is written as "-" and its tokens are masked out of the loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from apa.schema import SENTENCE_ASPECTS, Assessment

PHONE_SCALE = 5.0  # phone 0-2 in labels <-> 0-10 in text
MISSING = "-"

INT_0_10 = tuple(str(i) for i in range(11))
STRESS_VALUES = ("5", "10")

PROMPT_TEMPLATE = """\
You are an expert English pronunciation assessor. Listen to the recording of a non-native \
speaker reading the reference text aloud and score the pronunciation with the \
Speechocean762 rubric.
Sentence level, each 0-10: accuracy (how correctly the phones are pronounced), fluency \
(pauses, repetitions, stammering), prosodic (intonation, rhythm, speed), completeness \
(share of words read), total (overall).
Word level: accuracy 0-10 (10 correct, 7-9 accented, 4-6 some phones wrong, 2-3 most phones \
wrong, 0-1 wrong or missing), stress 10 (correct) or 5 (wrong), total 0-10.
Phone level: accuracy 0-10 (10 correct, 5 heavily accented, 0 wrong or missing).
Reference text: {text}
Reference phones: {phones}
Answer in exactly this format:
Sentence Scores: accuracy fluency prosodic completeness total
Word Scores: WORD/accuracy/stress/total for each word
Phone Scores: PHONE/accuracy for each phone"""

# The phones line's label when each phone carries its acoustic match level (apa.evidence).
EVIDENCE_LABEL = (
    "Reference phones, each with its acoustic match from a native-speech acoustic model "
    "(0 poor to 9 native-like, ? unknown):"
)

Reference = Sequence[tuple[str, Sequence[str]]]  # ((word, (phone, ...)), ...)


@dataclass(frozen=True)
class Slot:
    """A free score position in the target.

    kind: "sentence.<aspect>", "word.accuracy", "word.stress", "word.total" or "phone";
    word/phone: indices into the reference (-1 where not applicable);
    values: the strings decoding may put here.
    """

    kind: str
    word: int = -1
    phone: int = -1
    values: tuple[str, ...] = INT_0_10


Template = tuple[str | Slot, ...]


def build_prompt(reference: Reference, levels: Sequence[int | None] | None = None) -> str:
    """The user-turn text: rubric + reference text + reference phones.

    levels: one acoustic match level (0-9, None = unknown) per reference phone, in order; each
    phone is then written `PHONE:LEVEL` and the rubric says what the levels mean."""
    return build_prompt_spans(reference, levels)[0]


def build_prompt_spans(reference: Reference, levels: Sequence[int | None] | None = None) -> tuple[str, list[tuple[int, int]]]:
    """`build_prompt`, and the character span (start, end) of each reference phone's entry in
    it (`W` or `W:7`), in reference order: where a phone's evidence embedding goes."""
    n = sum(len(p) for _, p in reference)
    if levels is not None and len(levels) != n:
        raise ValueError(f"{len(levels)} evidence levels for {n} reference phones")
    head, tail = PROMPT_TEMPLATE.split("{phones}")
    head = head.format(text=" ".join(w for w, _ in reference))
    if levels is not None:
        head = head.replace("Reference phones:", EVIDENCE_LABEL)
    out, spans, pos, k = [head], [], len(head), 0
    for i, (word, phones) in enumerate(reference):
        piece = (" | " if i else "") + f"{word}:"
        out.append(piece)
        pos += len(piece)
        for ph in phones:
            entry = ph if levels is None else f"{ph}:{'?' if levels[k] is None else levels[k]}"
            out.append(" " + entry)
            spans.append((pos + 1, pos + 1 + len(entry)))
            pos += 1 + len(entry)
            k += 1
    out.append(tail)
    return "".join(out), spans


def build_template(reference: Reference) -> Template:
    """Forced text and slots, in order; adjacent forced strings are merged."""
    parts: list[str | Slot] = ["Sentence Scores:"]
    for aspect in SENTENCE_ASPECTS:
        parts += [" ", Slot(f"sentence.{aspect}")]
    parts.append("\nWord Scores:")
    for i, (word, _) in enumerate(reference):
        parts += [f" {word}/", Slot("word.accuracy", i), "/", Slot("word.stress", i, values=STRESS_VALUES), "/", Slot("word.total", i)]
    parts.append("\nPhone Scores:")
    for i, (_, phones) in enumerate(reference):
        for j, ph in enumerate(phones):
            parts += [f" {ph}/", Slot("phone", i, j)]
    merged: list[str | Slot] = []
    for p in parts:
        if isinstance(p, str) and merged and isinstance(merged[-1], str):
            merged[-1] += p
        else:
            merged.append(p)
    return tuple(merged)


def format_score(value: float | None, kind: str) -> str:
    """Slot text for a label value: integers as "7", completeness floats as "8.3"."""
    if value is None:
        return MISSING
    if kind == "phone":
        value = value * PHONE_SCALE
    r = round(value, 2)
    return str(int(r)) if r == int(r) else f"{r:g}"


def slot_value(labels: Assessment, slot: Slot) -> float | None:
    """The label a slot stands for, on the label's own scale."""
    kind = slot.kind
    if kind.startswith("sentence."):
        return getattr(labels.sentence, kind.split(".", 1)[1])
    word = labels.words[slot.word]
    if kind == "phone":
        return word.phones[slot.phone].score
    return getattr(word, kind.split(".", 1)[1])


def render(template: Template, values: Mapping[int, str]) -> str:
    """Fill slot number k (counting slots only) with values[k]."""
    out, k = [], 0
    for part in template:
        if isinstance(part, Slot):
            out.append(values[k])
            k += 1
        else:
            out.append(part)
    return "".join(out)


def build_target(labels: Assessment) -> tuple[str, list[tuple[int, int]]]:
    """Target text for SFT, and the character spans of missing-label slots (to mask)."""
    template = build_template([(w.text, w.phone_symbols) for w in labels.words])
    out, masked, pos = [], [], 0
    for part in template:
        s = format_score(slot_value(labels, part), part.kind) if isinstance(part, Slot) else part
        if isinstance(part, Slot) and s == MISSING:
            masked.append((pos, pos + len(s)))
        out.append(s)
        pos += len(s)
    return "".join(out), masked


def slots(template: Template) -> list[Slot]:
    return [p for p in template if isinstance(p, Slot)]
