"""Model text -> `Assessment`, tolerant of what models really emit.

Handles: missing, extra or reordered words and phones (aligned to the reference with
difflib), numbers out of range (clipped), "-" or garbage in a slot (left unknown), missing
lines and truncated output. Every fix is recorded in `Assessment.repairs`, so callers can
count them; clean output has no repairs.
"""

from __future__ import annotations

import difflib
import re

from apa.prompts import MISSING, PHONE_SCALE, Reference
from apa.schema import SENTENCE_ASPECTS, Assessment, Phone, Sentence, Word

_NUM = r"-?\d+(?:\.\d+)?"
_SENT_RE = re.compile(r"sentence\s*scores?\s*:?(.*)", re.I)
_WORD_LINE_RE = re.compile(r"word\s*scores?\s*:?(.*)", re.I)
_PHONE_LINE_RE = re.compile(r"phone\s*scores?\s*:?(.*)", re.I)
# Matches start only at token boundaries (the lookbehind): otherwise a long token without "/"
# is rescanned from every position, which is quadratic in its length.
_WORD_RE = re.compile(r"(?<![^\s/])([^\s/]+)((?:/[^\s/]*){1,3})")
_PHONE_RE = re.compile(r"(?<![^\s/])([^\s/]+)/([^\s/]*)")


def _value(raw: str, lo: float, hi: float, what: str, repairs: list[str]) -> float | None:
    raw = raw.strip()
    if raw in ("", MISSING):
        repairs.append(f"{what}: no score")
        return None
    if not re.fullmatch(_NUM, raw):
        repairs.append(f"{what}: unreadable score {raw!r}")
        return None
    v = float(raw)
    if not lo <= v <= hi:
        repairs.append(f"{what}: {v:g} out of range {lo:g}-{hi:g}, clipped")
        v = float(min(max(v, lo), hi))  # float like every other score, not the int bound
    return v


def _line(text: str, pattern: re.Pattern) -> str | None:
    for line in text.splitlines():
        m = pattern.search(line)
        if m:
            return m.group(1)
    return None


def _norm(s: str) -> str:
    return re.sub(r"[^A-Z0-9']", "", s.upper())


def _align(ref: list[str], hyp: list[str]) -> dict[int, int]:
    """Reference index -> hypothesis index for tokens that match in order."""
    sm = difflib.SequenceMatcher(a=[_norm(r) for r in ref], b=[_norm(h) for h in hyp], autojunk=False)
    pairs: dict[int, int] = {}
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            pairs.update({i1 + k: j1 + k for k in range(i2 - i1)})
    return pairs


def parse(text: str, reference: Reference, *, model: str = "") -> Assessment:
    """Parse model output against the reference ((word, phones), ...)."""
    repairs: list[str] = []
    ref_words = [w for w, _ in reference]

    # 1. sentence scores: five numbers in rubric order
    line = _line(text, _SENT_RE)
    sentence_vals: dict[str, float | None] = dict.fromkeys(SENTENCE_ASPECTS)
    if line is None:
        repairs.append("sentence scores missing")
    else:
        nums = line.split()
        if len(nums) != len(SENTENCE_ASPECTS):
            repairs.append(f"sentence scores: {len(nums)} values instead of {len(SENTENCE_ASPECTS)}")
        for aspect, raw in zip(SENTENCE_ASPECTS, nums):
            sentence_vals[aspect] = _value(raw, 0, 10, f"sentence {aspect}", repairs)

    # 2. word scores: WORD/accuracy/stress/total, aligned to the reference words
    line = _line(text, _WORD_LINE_RE)
    hyp_words: list[tuple[str, list[str]]] = []
    if line is None:
        repairs.append("word scores missing")
    else:
        hyp_words = [(m.group(1), m.group(2).split("/")[1:]) for m in _WORD_RE.finditer(line)]
    pairs = _align(ref_words, [w for w, _ in hyp_words])
    if line is not None and len(hyp_words) != len(pairs):
        repairs.append(f"word scores: {len(hyp_words) - len(pairs)} extra or unknown words dropped")
    word_vals: list[dict[str, float | None]] = []
    for i, word in enumerate(ref_words):
        vals: dict[str, float | None] = {"accuracy": None, "stress": None, "total": None}
        if i in pairs:
            fields = hyp_words[pairs[i]][1] + [""] * 3
            for key, raw in zip(("accuracy", "stress", "total"), fields):
                vals[key] = _value(raw, 0, 10, f"word {i} {word} {key}", repairs)
        elif line is not None:
            repairs.append(f"word {i} {word}: missing")
        word_vals.append(vals)

    # 3. phone scores: PHONE/accuracy on 0-10, aligned to the flattened reference phones
    flat = [(i, j, ph) for i, (_, phones) in enumerate(reference) for j, ph in enumerate(phones)]
    line = _line(text, _PHONE_LINE_RE)
    hyp_phones: list[tuple[str, str]] = []
    if line is None:
        repairs.append("phone scores missing")
    else:
        hyp_phones = [(m.group(1), m.group(2)) for m in _PHONE_RE.finditer(line)]
    ppairs = _align([ph for _, _, ph in flat], [p for p, _ in hyp_phones])
    if line is not None and len(hyp_phones) != len(ppairs):
        repairs.append(f"phone scores: {len(hyp_phones) - len(ppairs)} extra or unknown phones dropped")
    phone_scores: dict[tuple[int, int], float | None] = {}
    for k, (i, j, ph) in enumerate(flat):
        if k in ppairs:
            v = _value(hyp_phones[ppairs[k]][1], 0, 10, f"phone {k} {ph}", repairs)
            phone_scores[(i, j)] = None if v is None else v / PHONE_SCALE
        else:
            phone_scores[(i, j)] = None
            if line is not None:
                repairs.append(f"phone {k} {ph}: missing")

    words = tuple(
        Word(
            text=w,
            phones=tuple(Phone(ph, phone_scores[(i, j)]) for j, ph in enumerate(phones)),
            **word_vals[i],
        )
        for i, (w, phones) in enumerate(reference)
    )
    return Assessment(
        text=" ".join(ref_words),
        sentence=Sentence(**sentence_vals),
        words=words,
        repairs=tuple(repairs),
        model=model,
    )
