"""training.tower_states and a GOPT helper that reads the audio tower, end to end on the tiny random
model (CPU): states pooled per aligned phone, the helper fitted on them, an LMM trained with its
columns, and the scorer computing the same states itself at inference."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from apa.scorer import AudioLMMScorer, DecodeOptions, fixed_history

torch.set_num_threads(1)


def _clip(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def test_a_helper_on_tower_states_is_trained_with_and_scored_by_the_same_states(tiny_dir, tmp_path, so762_dir):
    from apa.align import FEATURE_NAMES, load_corpus_features
    from apa.data import load_split
    from apa.gopt import OUTPUT_NAMES, GOPTConfig, cross_fit, fit_tower_pca, reduced_normalisation
    from training.align_corpus import main as align_corpus
    from training.evaluate import main as evaluate
    from training.fit_gopt import save_oof, utterances
    from training.tower_states import load_tower_states, main as tower_states, tower_layers_of
    from training.train import main as train

    # 1. alignment features, then the tower's layers 1 and 2 pooled over the same phones
    feats, states = tmp_path / "train.npz", tmp_path / "tower.npz"
    align_corpus(["--data", str(so762_dir), "--split", "train", "--limit", "4", "--out", str(feats)])
    tower_states(["--features", str(feats), "--split", "train", "--out", str(states), "--model", str(tiny_dir),
                  "--data", str(so762_dir), "--layers", "1", "2", "--device", "cpu"])
    table, tower = load_corpus_features(feats), load_tower_states(states)
    scorer0 = AudioLMMScorer.from_pretrained(tiny_dir, device="cpu")
    width = scorer0.model.model.audio_tower.layer_norm.normalized_shape[0]
    assert tower_layers_of(states) == (1, 2) and set(tower) == set(table)
    for u, c in table.items():
        assert tower[u].shape == (len(c.symbols), 2 * width)
        assert np.isfinite(tower[u][np.isfinite(c.features).all(axis=1)]).all()

    # 2. the helper on features + states (2 components a layer), each utterance its own group
    ids, _, utts = utterances(str(feats), str(so762_dir), "train", str(states))
    assert utts[0].features.shape[1] == len(FEATURE_NAMES) + 2 * width
    pca = fit_tower_pca(utts, len(FEATURE_NAMES), 2, 2)
    config = GOPTConfig(tuple(FEATURE_NAMES), *reduced_normalisation(utts, len(FEATURE_NAMES), pca), width=8, layers=1,
                        heads=2, folds=2, tower_layers=(1, 2), tower_width=width, tower_pca=2)
    ens, oof = cross_fit(config, utts, ids, epochs=1, tower_pca=pca)
    gopt_dir = tmp_path / "gopt"
    gopt_dir.mkdir()
    ens.save(gopt_dir)
    save_oof(gopt_dir, ids, oof)

    # 3. an LMM trained with its out-of-fold columns; the tower must stay frozen for it
    args = ["--model", str(tiny_dir), "--data", str(so762_dir), "--max_train_samples", "4", "--max_steps", "1",
            "--per_device_train_batch_size", "2", "--lora_r", "4", "--report_to", "none", "--save_strategy", "no",
            "--dataloader_num_workers", "0", "--use_cpu", "True", "--evidence_features", str(feats),
            "--evidence_mode", "both", "--evidence_gopt", str(gopt_dir), "--evidence_level", "pred_phone"]
    with pytest.raises(ValueError, match="unfreeze_audio_layers"):
        train(args + ["--output_dir", str(tmp_path / "bad"), "--unfreeze_audio_layers", "1"])
    out = tmp_path / "run"
    train(args + ["--output_dir", str(out)])
    scorer = AudioLMMScorer.from_pretrained(tiny_dir, out / "adapter", device="cpu")
    assert scorer.gopt.config.tower_layers == (1, 2)

    # 4. at inference the scorer pools the states itself: the same as the file's, so the same predictions
    rec = next(r for r in load_split(so762_dir, "train") if r.utt_id == ids[0])
    c = table[ids[0]]
    (mine,) = scorer.tower_inputs([rec.audio()], [(c.start, c.end)])
    np.testing.assert_allclose(mine, tower[ids[0]], rtol=2e-3, atol=2e-3)  # the file holds float16
    full = scorer.evidence_inputs([c.features], [rec.reference], [rec.audio()], [(c.start, c.end)])[0]
    want = ens.predict([utts[0]])[0]
    np.testing.assert_allclose(full[:, len(FEATURE_NAMES):], want, rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="audio tower"):
        scorer.evidence_inputs([c.features], [rec.reference])  # no audio, no times: refused, not guessed
    unaligned = scorer.evidence_inputs([c.features], [rec.reference], [rec.audio()], [None])[0]
    assert np.isnan(unaligned[:, len(FEATURE_NAMES):]).all()
    result = scorer.assess(_clip(1.5, 0), "we call it bear")
    assert len(result.words) == 4 and all(w.accuracy is not None for w in result.words)
    with_helper = AudioLMMScorer(scorer.model, scorer.processor, options=DecodeOptions(history="helper"),
                                 evidence=scorer.evidence, projector=scorer.projector, gopt=scorer.gopt)
    with_helper.read_slots([rec.audio()], [rec.reference], evidence=[full])
    n_sentence = sum(s.kind.startswith("sentence.") for s in scorer.plan(rec.reference).slots)
    assert with_helper.stats["passes"] <= n_sentence + 1  # the word and phone slots in one pass
    assert with_helper.history_for(with_helper.plan(rec.reference), full) == fixed_history(with_helper.plan(rec.reference), full[:, -len(OUTPUT_NAMES):])

    # 5. evaluation from the corpus file takes the times from it
    res = evaluate(["--model", str(tiny_dir), "--adapter", str(out / "adapter"), "--data", str(so762_dir), "--split", "train",
                    "--limit", "2", "--evidence-features", str(feats), "--control", "none", "--device", "cpu",
                    "--out", str(tmp_path / "eval")])
    assert res["n"] == 2 and res["history"] == "greedy"
    rows = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert all(r["expected"]["extra"]["gopt_blend"] != 0.0 for r in rows)  # the helper's columns were there to blend

    # 6. a helper fitted on another tower's width (e.g. apa-mini's helper under Qwen2-Audio-7B) is refused
    from dataclasses import replace

    from apa.gopt import GOPTEnsemble
    from apa.scorer import check_tower

    other = GOPTEnsemble(replace(scorer.gopt.config, tower_width=width + 1))
    with pytest.raises(ValueError, match="audio tower"):
        check_tower(other, scorer.model, "elsewhere")
    check_tower(scorer.gopt, scorer.model, "here")  # its own passes
