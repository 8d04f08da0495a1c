"""apa.drills: weak sounds and confusions from the history, minimal-pair words, library sentences."""

from __future__ import annotations

from apa import drills

HISTORY = [
    {"text": "x", "sounds": [["R", 0.2, "L"], ["TH", 1.0, ""]]},
    {"text": "y", "sounds": [["R", 0.4, "L"], ["V", 0.3, "W"]]},
    "junk",
    {"text": "z"},
]
LIBRARY = {"easy": ["A RED CAR", "MY BIG DOG"], "hard": ["THE RURAL ROAD RUNS THROUGH THE VILLAGE", "THINK THREE"]}


def test_weak_sounds_and_confusions():
    assert [s[0] for s in drills.weak_sounds(HISTORY)] == ["R", "V", "TH"]
    assert drills.weak_sounds(HISTORY)[0][2] == 2
    assert drills.confusions(HISTORY)[0] == ("R", "L", 2)
    assert drills.weak_sounds(HISTORY, last=1) == []  # the last attempt had no sounds
    assert drills.weak_sounds(None) == [] and drills.suggest([], LIBRARY) == []


def test_minimal_pair_words_differ_by_the_one_sound():
    from apa.text import corpus_lexicon

    pairs = drills.minimal_pair_words("R", "L", 3)
    assert len(pairs) == 3
    lex = corpus_lexicon()
    for a, b in pairs:
        pa = [p.rstrip("012") for p in lex[a][0]]
        pb = [p.rstrip("012") for p in lex[b][0]]
        diff = [(x, y) for x, y in zip(pa, pb) if x != y]
        assert len(pa) == len(pb) and diff == [("R", "L")]
    assert ("VEST", "WEST") in drills.minimal_pair_words("V", "W", 5)  # curated where the lexicon has none


def test_sentences_with_the_sound_most_first():
    assert drills.sentences_with("R", LIBRARY["easy"] + LIBRARY["hard"])[0] == "THE RURAL ROAD RUNS THROUGH THE VILLAGE"
    assert drills.sentences_with("ZH", LIBRARY["easy"]) == []


def test_suggest_pairs_first_then_sentences():
    out = drills.suggest(HISTORY, LIBRARY)
    assert out[0].kind == "pair" and "heard as" in out[0].label
    assert any(d.kind == "sentence" and "RURAL" in d.text for d in out)
    assert len(out) <= drills.MAX_DRILLS and len({d.text for d in out}) == len(out)
