"""training.word_evidence and a GOPT helper that reads Whisper's word evidence, end to end: the
split's file from the real Whisper base, the helper fitted on it, an LMM (the tiny random model)
trained with its columns, and the scorer computing the same evidence itself at inference, or
scoring without it when the recogniser fails."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from apa.scorer import AudioLMMScorer

torch.set_num_threads(1)


class FailingWordScorer:
    def word_evidence(self, audio, words):
        raise RuntimeError("recogniser crashed")


@pytest.mark.slow
def test_a_helper_on_word_evidence_is_trained_with_and_scored_by_the_same_evidence(whisper, tiny_dir, tmp_path, so762_dir, caplog,
                                                                                   monkeypatch):
    from apa.align import FEATURE_NAMES, load_corpus_features
    from apa.data import load_split
    from apa.gopt import OUTPUT_NAMES, GOPTConfig, cross_fit, fit_normalisation
    from apa.transcribe import WORD_EVIDENCE_NAMES
    from training.align_corpus import main as align_corpus
    from training.fit_gopt import save_oof, utterances
    from training.train import main as train
    from training.word_evidence import load_word_evidence, main as word_evidence

    # 1. alignment features and the word evidence of the same clips
    feats, words = tmp_path / "train.npz", tmp_path / "words.npz"
    align_corpus(["--data", str(so762_dir), "--split", "train", "--limit", "4", "--out", str(feats)])
    word_evidence(["--data", str(so762_dir), "--split", "train", "--limit", "4", "--out", str(words)])
    table, evidence = load_corpus_features(feats), load_word_evidence(words)
    records = {r.utt_id: r for r in load_split(so762_dir, "train")}
    assert set(evidence) == set(table)
    for u, e in evidence.items():
        assert e.shape == (len(records[u].reference), len(WORD_EVIDENCE_NAMES)) and np.isfinite(e).all()

    # 2. the helper on features + two word columns, each utterance its own group
    cols = ("lp_mean", "pmi_sum")
    ids, _, utts = utterances(str(feats), str(so762_dir), "train", word_path=str(words), word_columns=cols)
    assert utts[0].features.shape[1] == len(FEATURE_NAMES) + 2
    word = np.asarray(table[ids[0]].word)
    np.testing.assert_allclose(utts[0].features[:, len(FEATURE_NAMES)], evidence[ids[0]][word, WORD_EVIDENCE_NAMES.index("lp_mean")])
    with pytest.raises(ValueError, match="word_model"):
        GOPTConfig(tuple(FEATURE_NAMES), *fit_normalisation(utts), word_columns=cols)
    config = GOPTConfig(tuple(FEATURE_NAMES), *fit_normalisation(utts), width=8, layers=1, heads=2, folds=2,
                        word_columns=cols, word_model="whisper-base")
    ens, oof = cross_fit(config, utts, ids, epochs=1)
    gopt_dir = tmp_path / "gopt"
    gopt_dir.mkdir()
    ens.save(gopt_dir)
    save_oof(gopt_dir, ids, oof)

    # 3. an LMM trained with its out-of-fold columns (training needs no recogniser)
    out = tmp_path / "run"
    train(["--model", str(tiny_dir), "--data", str(so762_dir), "--max_train_samples", "4", "--max_steps", "1",
           "--per_device_train_batch_size", "2", "--lora_r", "4", "--report_to", "none", "--save_strategy", "no",
           "--dataloader_num_workers", "0", "--use_cpu", "True", "--evidence_features", str(feats),
           "--evidence_mode", "both", "--evidence_gopt", str(gopt_dir), "--evidence_level", "pred_phone",
           "--output_dir", str(out)])
    scorer = AudioLMMScorer.from_pretrained(tiny_dir, out / "adapter", device="cpu")
    assert scorer.gopt.config.word_columns == cols and scorer.gopt.config.word_model == "whisper-base"

    # 4. at inference the scorer reads the words itself: the same as the file's, so the same predictions
    rec, c = records[ids[0]], table[ids[0]]
    (mine,) = scorer.word_evidence([rec.audio()], [rec.reference])
    np.testing.assert_allclose(mine, evidence[ids[0]], atol=1e-4)
    full = scorer.evidence_inputs([c.features], [rec.reference], [rec.audio()])[0]
    want = ens.predict([utts[0]])[0]
    assert full.shape == (len(c.features), len(FEATURE_NAMES) + len(OUTPUT_NAMES))
    np.testing.assert_allclose(full[:, len(FEATURE_NAMES):], want, rtol=1e-4, atol=1e-4)
    given = scorer.evidence_inputs([c.features], [rec.reference], words=[evidence[ids[0]]])[0]
    np.testing.assert_allclose(given, full, rtol=1e-5, atol=1e-5)

    # 5. a recogniser that fails costs the word columns, not the scores
    broken = AudioLMMScorer(scorer.model, scorer.processor, evidence=scorer.evidence, projector=scorer.projector,
                            gopt=scorer.gopt, word_scorer=FailingWordScorer())
    with caplog.at_level(logging.WARNING, logger="apa.scorer"):
        blind = broken.evidence_inputs([c.features], [rec.reference], [rec.audio()])[0]
    assert "word evidence failed" in caplog.text
    aligned = np.isfinite(c.features).all(axis=1)
    assert np.isfinite(blind[aligned, len(FEATURE_NAMES):]).all()
    assert not np.allclose(blind[aligned, len(FEATURE_NAMES):], full[aligned, len(FEATURE_NAMES):])
    (assessment,) = broken.score([rec.audio()], [rec.reference])
    assert len(assessment.words) == len(rec.reference)

    # 6. a recogniser that cannot be loaded: tried once, logged, and the scores stay defined
    import apa.transcribe

    calls = []

    def no_whisper(choice):
        calls.append(choice)
        raise FileNotFoundError("no weight packages")

    unloadable = AudioLMMScorer(scorer.model, scorer.processor, evidence=scorer.evidence, projector=scorer.projector,
                                gopt=scorer.gopt)
    monkeypatch.setattr(apa.transcribe, "load_word_scorer", no_whisper)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="apa.scorer"):
        assert unloadable.word_evidence([rec.audio(), rec.audio()], [rec.reference] * 2) == [None, None]
        again = unloadable.evidence_inputs([c.features], [rec.reference], [rec.audio()])[0]
    assert calls == ["whisper-base"] and "no word scorer" in caplog.text
    np.testing.assert_allclose(again, blind, rtol=1e-5, atol=1e-5)  # the same as a failing recogniser's
