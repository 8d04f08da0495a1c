"""What the feedback says, independent of how it is shown: the weakest words and phones of an
assessment, the plain-language tip, and how scores and sounds are written (apa.render lays it out)."""

from __future__ import annotations

import math

from apa.schema import ERROR_OMISSION, MISPRONUNCIATION_BELOW, PHONE_ACCENTED_BELOW, Assessment, Phone, Word

# Sentence scores (0-10) are banded for the score tiles only.
SENTENCE_GOOD_FROM = 7.0
SENTENCE_FAIR_FROM = 4.0


# The tip talks about words below this accuracy (0-10) and phones below this score (0-2).
TIP_WORD_BELOW = 8.0
TIP_PHONE_BELOW = PHONE_ACCENTED_BELOW
TIP_MAX_WORDS = 2
TIP_COMPLETENESS_BELOW = 8.0  # sentence completeness (0-10) that triggers "read every word"
TIP_MAX_PHONES = 3


def fmt_score(value: float | None, digits: int = 1) -> str:
    """'7.5' for 7.5, '8' for 8.0, '–' for None / NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    s = f"{value:.{digits}f}"
    return s.rstrip("0").rstrip(".") if "." in s else s


def phone_ipa(phone: Phone) -> str:
    """IPA for a phone, '' when it cannot be converted (unknown symbol, apa.text unavailable)."""
    try:
        return phone.ipa
    except Exception:  # noqa: BLE001 - presentation must not fail on one odd phone
        return ""


def weakest_words(a: Assessment, n: int = TIP_MAX_WORDS, below: float = TIP_WORD_BELOW) -> list[Word]:
    """Up to n scored words with accuracy < below, weakest first (ties: reading order)."""
    scored = [(w.accuracy, i, w) for i, w in enumerate(a.words) if w.accuracy is not None and w.accuracy < below]
    return [w for _, _, w in sorted(scored, key=lambda t: (t[0], t[1]))[:n]]


def weakest_phones(
    a: Assessment | Word, n: int = TIP_MAX_PHONES, below: float = TIP_PHONE_BELOW
) -> list[tuple[Phone, Word]]:
    """Up to n distinct phones (by symbol without stress) scoring < below, weakest first,
    each with the word it occurs in."""
    words = a.words if isinstance(a, Assessment) else (a,)
    found: list[tuple[float, int, Phone, Word]] = []
    for i, w in enumerate(words):
        for p in w.phones:
            if p.score is not None and p.score < below:
                found.append((p.score, i, p, w))
    found.sort(key=lambda t: (t[0], t[1]))
    out, seen = [], set()
    for _, _, p, w in found:
        base = p.phone.rstrip("012")
        if base in seen:
            continue
        seen.add(base)
        out.append((p, w))
        if len(out) == n:
            break
    return out


def _sound(p: Phone) -> str:
    ipa = phone_ipa(p)
    return f"/{ipa}/ ({p.phone})" if ipa else p.phone


def tip_text(a: Assessment) -> str:
    """A short plain-language tip naming the weakest words and sounds (several sentences)."""
    if not a.words:
        return "We could not score any words. Please check the sentence and try again."
    parts: list[str] = []
    weak = weakest_words(a)
    if not weak:
        parts.append("Excellent! Every word sounded clear.")
    else:
        for w in weak:
            if w.error_type == ERROR_OMISSION:
                parts.append(
                    f'"{w.text}" sounded missing or very different ({fmt_score(w.accuracy)}/10): say every word.'
                )
                continue
            sounds = [p for p, _ in weakest_phones(w, n=2)]
            how = "needs work" if (w.accuracy or 0) < MISPRONUNCIATION_BELOW else "was nearly right"
            msg = f'Practise "{w.text}" ({fmt_score(w.accuracy)}/10, {how})'
            if sounds:
                msg += ": listen to the sound" + ("s " if len(sounds) > 1 else " ")
                msg += " and ".join(_sound(p) for p in sounds)
            parts.append(msg + ".")
        others = [(p, w) for p, w in weakest_phones(a) if w not in weak]
        if others:
            parts.append("Also watch " + ", ".join(f'{_sound(p)} in "{w.text}"' for p, w in others) + ".")
    s = a.sentence
    if s.completeness is not None and s.completeness < TIP_COMPLETENESS_BELOW:
        parts.append("Some words seem to be missing: read the whole sentence.")
    aspects = {k: getattr(s, k) for k in ("fluency", "prosodic") if getattr(s, k) is not None}
    if aspects:
        k, v = min(aspects.items(), key=lambda kv: kv[1])
        if v < SENTENCE_GOOD_FROM:
            parts.append(
                "Try reading more smoothly, without long pauses or restarts."
                if k == "fluency"
                else "Let your voice rise and fall naturally, and stress the important words."
            )
    return " ".join(parts)
