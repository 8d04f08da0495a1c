"""Drills for the weakest sounds of the last attempts: library sentences that contain them, and
minimal-pair words for the confusions heard (heard /l/ for /r/: "LIGHT RIGHT").

The history is the page's list of attempts (`apa.render.history_entry`: each has "sounds", the
phones that scored below 1.5 as [phone, score 0-2, heard instead or ""]). `suggest(history,
library)` -> `Drill`s; loading a drill puts its `text` in the sentence box.

Minimal pairs come from the Speechocean762 lexicon (everyday words, `apa.text.corpus_lexicon`): a
word with the sound asked for, and a word whose pronunciation is the same with that one sound
replaced by the sound heard (stress ignored), in the lexicon's most frequent pronunciation.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = ["Drill", "confusions", "minimal_pair_words", "sentences_with", "suggest", "weak_sounds"]

LAST_ATTEMPTS = 5  # attempts of the history that drills look at
MAX_SOUNDS = 3  # weakest sounds drilled
SENTENCES_PER_SOUND = 2
PAIRS_PER_CONFUSION = 2
MAX_DRILLS = 8


# Pairs the lexicon lacks, for common learner confusions (phone asked for, phone heard).
CURATED_PAIRS: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {
    ("V", "W"): (("VEST", "WEST"), ("VINE", "WINE"), ("VET", "WET")),
    ("W", "V"): (("WEST", "VEST"), ("WINE", "VINE"), ("WET", "VET")),
    ("R", "L"): (("RIGHT", "LIGHT"), ("RICE", "LICE")),
    ("L", "R"): (("LIGHT", "RIGHT"), ("LICE", "RICE")),
}


@dataclass(frozen=True)
class Drill:
    """One thing to practise: `text` goes into the sentence box; `label` says why (shown)."""

    label: str
    text: str
    kind: str  # "sentence" | "pair"


def _strip(p: str) -> str:
    return str(p).rstrip("012").upper()


def _recent_sounds(history: Iterable[Any] | None, last: int) -> list[list[Any]]:
    entries = [h for h in (history or []) if isinstance(h, dict)][-last:]
    out = []
    for h in entries:
        for s in h.get("sounds") or ():
            if isinstance(s, (list, tuple)) and len(s) >= 2 and isinstance(s[1], (int, float)):
                out.append([_strip(s[0]), float(s[1]), _strip(s[2]) if len(s) > 2 and s[2] else ""])
    return out


def weak_sounds(history: Iterable[Any] | None, last: int = LAST_ATTEMPTS, n: int = MAX_SOUNDS) -> list[tuple[str, float, int]]:
    """The n weakest sounds of the last attempts: (CMU phone, summed shortfall 2 - score, times
    low), most in need first."""
    need: dict[str, float] = defaultdict(float)
    count: Counter[str] = Counter()
    for phone, score, _heard in _recent_sounds(history, last):
        need[phone] += 2.0 - score
        count[phone] += 1
    ranked = sorted(need, key=lambda p: (-need[p], p))[:n]
    return [(p, round(need[p], 2), count[p]) for p in ranked]


def confusions(history: Iterable[Any] | None, last: int = LAST_ATTEMPTS) -> list[tuple[str, str, int]]:
    """(phone asked for, phone heard instead, times), most frequent first."""
    c = Counter((p, h) for p, _s, h in _recent_sounds(history, last) if h and h != p)
    return [(p, h, k) for (p, h), k in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))]


@lru_cache(maxsize=1)
def _lexicon_index() -> tuple[dict[tuple[str, ...], list[str]], dict[str, tuple[str, ...]]]:
    from apa.text import corpus_lexicon

    by_pron: dict[tuple[str, ...], list[str]] = defaultdict(list)
    pron_of: dict[str, tuple[str, ...]] = {}
    for word, variants in corpus_lexicon().items():
        if not variants or not word.isalpha() or len(word) < 2:
            continue
        pron = tuple(_strip(p) for p in variants[0])
        pron_of[word] = pron
        by_pron[pron].append(word)
    return dict(by_pron), pron_of


def minimal_pair_words(phone: str, heard: str, n: int = PAIRS_PER_CONFUSION) -> list[tuple[str, str]]:
    """Up to n (word with `phone`, word with `heard` in its place) pairs of everyday words, shortest
    first (the sound word-initially first), then CURATED_PAIRS, e.g. ("R", "L") -> [("RAW", "LAW"),
...]; [] when there is none."""
    phone, heard = _strip(phone), _strip(heard)
    by_pron, pron_of = _lexicon_index()
    found = []
    for word, pron in pron_of.items():
        for i, q in enumerate(pron):
            if q != phone:
                continue
            other = by_pron.get(pron[:i] + (heard,) + pron[i + 1 :])
            if other:
                found.append((i > 0, len(pron), word, sorted(other)[0]))
                break
    found.sort()
    pairs = [(a, b) for _, _, a, b in found]
    pairs += [pr for pr in CURATED_PAIRS.get((phone, heard), ()) if pr not in pairs]
    return pairs[:n]


@lru_cache(maxsize=8)
def _library_phones(sentences: tuple[str, ...]) -> tuple[tuple[str, Counter], ...]:
    from apa.text import to_words

    out = []
    for s in sentences:
        try:
            out.append((s, Counter(_strip(p) for w in to_words(s) for p in w.phones)))
        except Exception:  # noqa: BLE001 - a library sentence the text front end refuses is skipped
            continue
    return tuple(out)


def sentences_with(phone: str, sentences: Sequence[str], n: int = SENTENCES_PER_SOUND, skip: Iterable[str] = ()) -> list[str]:
    """Up to n library sentences with the most occurrences of `phone` (ties: shorter first)."""
    phone, skip = _strip(phone), set(skip)
    scored = [(-c[phone], len(s), s) for s, c in _library_phones(tuple(sentences)) if c[phone] and s not in skip]
    return [s for _, _, s in sorted(scored)[:n]]


def _sound(phone: str) -> str:
    from apa.ipa import arpabet_to_ipa

    try:
        return f"/{arpabet_to_ipa(phone)}/"
    except Exception:  # noqa: BLE001
        return phone


def suggest(history: Iterable[Any] | None, library: Mapping[str, Sequence[str]] | Sequence[str]) -> list[Drill]:
    """Drills from the last attempts: minimal-pair words for each confusion heard, then library
    sentences for each weak sound, at most MAX_DRILLS. [] when no sound was weak."""
    sentences = [s for v in library.values() for s in v] if isinstance(library, Mapping) else list(library)
    history = list(history or [])
    out: list[Drill] = []
    seen: set[str] = set()
    for phone, heard, _k in confusions(history)[:MAX_SOUNDS]:
        for a, b in minimal_pair_words(phone, heard):
            text = f"{a} {b}"
            if text not in seen:
                seen.add(text)
                out.append(Drill(f"{a.lower()} / {b.lower()} — {_sound(phone)} heard as {_sound(heard)}", text, "pair"))
    for phone, _need, k in weak_sounds(history):
        for s in sentences_with(phone, sentences, skip=seen):
            seen.add(s)
            out.append(Drill(f"{s.capitalize()} — practise {_sound(phone)} (weak {k}×)", s, "sentence"))
    pairs = [d for d in out if d.kind == "pair"]
    sentences = [d for d in out if d.kind == "sentence"]
    keep = sentences[: max(MAX_DRILLS // 2, MAX_DRILLS - len(pairs))]  # room for sentences either way
    return pairs[: MAX_DRILLS - len(keep)] + keep
