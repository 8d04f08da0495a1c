"""Tests for tools.build_text_resources: the shipped apa/resources/ files are what the builders write."""

import random

from apa import text
from apa.text import fallback_g2p
from tools import build_text_resources


def edit_distance(a, b) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def test_shipped_corpus_resources_are_reproducible(so762_dir, tmp_path):
    lex, prompts = build_text_resources.build_so762_resources(so762_dir, tmp_path)
    assert lex.read_bytes() == text.SO762_LEXICON_FILE.read_bytes()
    assert prompts.read_bytes() == text.SO762_PROMPTS_FILE.read_bytes()
    assert len(text.corpus_lexicon()) == 2604  # distinct words of resource/lexicon.txt


def test_fallback_quality_on_holdout():
    """Held-out CMUdict words never seen by the shipped table: PER 11.7%, word accuracy 56.6%
    (with stress digits; 9.0% / 61.4% without)."""
    vocab = build_text_resources.fallback_vocabulary()
    holdout = build_text_resources.fallback_holdout()
    assert len(holdout) == build_text_resources.FALLBACK_HOLDOUT_SIZE and set(holdout) <= set(vocab)
    errors = length = correct = 0
    for w in holdout:
        ref = text.corpus_stress(vocab[w])
        hyp = fallback_g2p(w)
        errors += edit_distance(hyp, ref)
        length += len(ref)
        correct += hyp == ref
    per, acc = errors / length, correct / len(holdout)
    print(f"\nfallback on {len(holdout)} held-out CMUdict words: PER {per:.4f}, word accuracy {acc:.3f}")
    assert per < 0.125
    assert acc > 0.54


def test_build_fallback_table_learns_training_words():
    vocab = build_text_resources.fallback_vocabulary()
    entries = {w: vocab[w] for w in random.Random(1).sample(sorted(vocab), 1500)}
    table = build_text_resources.build_fallback_table(entries)
    assert table["0'"] == "" and table["0X"] == "K S"
    acc = sum(fallback_g2p(w, table) == text.corpus_stress(p) for w, p in entries.items()) / len(entries)
    assert acc > 0.85
