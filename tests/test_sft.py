"""Supervised fine-tuning on the tiny random model (CPU): training.train changes only the LoRA
weights and the projector, and a saved adapter loads back to identical scores."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import torch

from apa.scorer import AudioLMMScorer

REF = (("WE", ("W", "IY0")), ("CALL", ("K", "AO0", "L")), ("IT", ("IH0", "T")), ("BEAR", ("B", "EH0", "R")))


def _clip(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def test_training_changes_only_lora_and_projector(tiny_dir, tmp_path, so762_dir):
    from training.train import main

    out = tmp_path / "run"
    main([
        "--model", str(tiny_dir), "--data", str(so762_dir), "--max_train_samples", "6",
        "--max_steps", "3", "--per_device_train_batch_size", "2", "--learning_rate", "1e-2",
        "--lora_r", "4", "--modules_to_save", "multi_modal_projector", "--output_dir", str(out),
        "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1", "--dataloader_num_workers", "0",
        "--use_cpu", "True",
    ])
    from peft import PeftModel
    from transformers import Qwen2AudioForConditionalGeneration

    base = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_dir)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    tuned = PeftModel.from_pretrained(Qwen2AudioForConditionalGeneration.from_pretrained(tiny_dir), out / "adapter")
    merged = tuned.merge_and_unload().state_dict()
    changed = {k for k in before if not torch.equal(before[k], merged[k])}
    assert changed, "training changed nothing"
    lora_targets = (".q_proj.", ".k_proj.", ".v_proj.", ".o_proj.", ".gate_proj.", ".up_proj.", ".down_proj.")
    for k in changed:
        assert "multi_modal_projector" in k or ("language_model" in k and any(t in k for t in lora_targets)), k
    assert any("multi_modal_projector" in k for k in changed)
    cfg = json.loads((out / "resolved_config.json").read_text())
    assert cfg["lora"]["lora_r"] == 4 and cfg["n_train"] == 6


def test_adapter_roundtrip_identical(tiny_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    torch.manual_seed(0)
    base = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=r".*language_model.*\.(q_proj|v_proj)$", modules_to_save=["multi_modal_projector"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "ad")
    processor = AutoProcessor.from_pretrained(tiny_dir)
    s1 = AudioLMMScorer(peft_model.merge_and_unload(), processor)
    s2 = AudioLMMScorer.from_pretrained(tiny_dir, tmp_path / "ad", device="cpu")
    clip = _clip(1.5, 7)
    r1, r2 = s1.read_slots([clip], [REF])[0], s2.read_slots([clip], [REF])[0]
    for x, y in zip(r1, r2):
        np.testing.assert_allclose(x.probs, y.probs, atol=1e-5)
    base_only = AudioLMMScorer.from_pretrained(tiny_dir, device="cpu").read_slots([clip], [REF])[0]
    assert any(not np.allclose(x.probs, y.probs, atol=1e-3) for x, y in zip(r1, base_only)), "adapter had no effect"


def test_training_with_contextual_evidence_and_aux_loss_saves_what_the_scorer_loads(tiny_dir, tmp_path, so762_dir):
    from training.align_corpus import main as align_corpus
    from training.train import main

    feats = tmp_path / "train.npz"
    align_corpus(["--data", str(so762_dir), "--split", "train", "--limit", "4", "--out", str(feats)])
    out = tmp_path / "run"
    main([
        "--model", str(tiny_dir), "--data", str(so762_dir), "--max_train_samples", "4",
        "--max_steps", "2", "--per_device_train_batch_size", "2", "--learning_rate", "1e-2",
        "--lora_r", "4", "--output_dir", str(out), "--report_to", "none", "--save_strategy", "no",
        "--logging_steps", "1", "--dataloader_num_workers", "0", "--use_cpu", "True",
        "--evidence_features", str(feats), "--evidence_mode", "both", "--evidence_context_layers", "1",
        "--evidence_aux_weight", "1.0", "--slot_balance", "1.0", "--slot_balance_mass", "True",
    ])
    cfg = json.loads((out / "resolved_config.json").read_text())
    assert cfg["evidence"]["context_layers"] == 1 and cfg["evidence"]["aux_weight"] == 1.0
    phone_w = cfg["slot_weights"]["phone"]
    assert min(phone_w.values()) < 1.0 < max(phone_w.values())  # mass-preserving: the common label below 1
    scorer = AudioLMMScorer.from_pretrained(tiny_dir, out / "adapter", device="cpu")
    assert scorer.projector is not None and scorer.projector.context is not None
    assert any(v.abs().sum() > 0 for k, v in scorer.projector.state_dict().items() if k.startswith("net.2"))
    result = scorer.assess(_clip(1.5, 0), "we call it bear")
    assert len(result.words) == 4 and all(w.accuracy is not None for w in result.words)


def test_training_with_gopt_predictions_saves_what_the_scorer_loads(tiny_dir, tmp_path, so762_dir):
    from apa.gopt import DEFAULT_BLEND, OUTPUT_NAMES, BlendWeights, GOPTConfig, cross_fit, fit_normalisation
    from training.align_corpus import main as align_corpus
    from training.fit_gopt import save_oof, utterances
    from training.train import main

    feats = tmp_path / "train.npz"
    align_corpus(["--data", str(so762_dir), "--split", "train", "--limit", "4", "--out", str(feats)])
    ids, _, utts = utterances(str(feats), str(so762_dir), "train")
    from apa.align import FEATURE_NAMES

    config = GOPTConfig(tuple(FEATURE_NAMES), *fit_normalisation(utts), width=8, layers=1, heads=2, folds=2)
    ens, oof = cross_fit(config, utts, ids, epochs=1)  # each utterance its own group
    gopt_dir = tmp_path / "gopt"
    gopt_dir.mkdir()
    ens.save(gopt_dir)
    save_oof(gopt_dir, ids, oof)
    out = tmp_path / "run"
    main([
        "--model", str(tiny_dir), "--data", str(so762_dir), "--max_train_samples", "4",
        "--max_steps", "1", "--per_device_train_batch_size", "2", "--lora_r", "4", "--output_dir", str(out),
        "--report_to", "none", "--save_strategy", "no", "--dataloader_num_workers", "0", "--use_cpu", "True",
        "--evidence_features", str(feats), "--evidence_mode", "both", "--evidence_gopt", str(gopt_dir),
        "--evidence_level", "pred_phone",
    ])
    cfg = json.loads((out / "resolved_config.json").read_text())
    names = cfg["evidence"]["feature_names"]
    assert names[-len(OUTPUT_NAMES):] == list(OUTPUT_NAMES) and cfg["evidence"]["level_feature"] == names.index("pred_phone")
    scorer = AudioLMMScorer.from_pretrained(tiny_dir, out / "adapter", device="cpu")
    assert scorer.gopt is not None and len(scorer.gopt.models) == 2
    ref = (("WE", ("W", "IY0")), ("CALL", ("K", "AO0", "L")))
    raw = [np.zeros((5, len(FEATURE_NAMES)), np.float32), None]
    full = scorer.evidence_inputs(raw, [ref, ref])
    assert full[0].shape == (5, len(names)) and full[1] is None
    assert scorer.evidence_inputs(full, [ref, ref])[0] is full[0]  # already complete: unchanged
    result = scorer.assess(_clip(1.5, 0), "we call it bear")
    assert len(result.words) == 4 and all(w.accuracy is not None for w in result.words)
    # the reported scores lean on the helper where the clip aligned (gopt_blend), and only then
    assert scorer.blend_weights == DEFAULT_BLEND  # no blend.json fitted yet
    assert result.extra["gopt_blend"] in (0.0, asdict(BlendWeights.uniform(DEFAULT_BLEND)))
    silent = scorer.assess(np.zeros(24000, np.float32), "we call it bear")
    assert silent.extra["gopt_blend"] == 0.0

    # 2. held out: one utterance left out of training, then scored alone with the helper's
    #    out-of-fold columns and no blend (training.fit_blend's inputs)
    from apa.align import load_corpus_features
    from apa.data import load_split
    from training.evaluate import main as evaluate
    from training.train import DataArguments, load_training_data

    held = tmp_path / "heldout.txt"
    held.write_text(ids[0] + "\n")
    dataset, _, _ = load_training_data(DataArguments(data=str(so762_dir), max_train_samples=4, exclude_ids=str(held)))
    assert len(dataset) == 4 and ids[0] not in {r.utt_id for r in dataset.records}  # the next one takes its place
    res = evaluate(["--model", str(tiny_dir), "--adapter", str(out / "adapter"), "--data", str(so762_dir), "--split", "train",
                    "--ids", str(held), "--evidence-features", str(feats), "--evidence-oof", str(gopt_dir),
                    "--gopt-blend", "0", "--control", "none", "--device", "cpu", "--out", str(tmp_path / "eval")])
    assert res["n"] == 1 and res["gopt_blend"] == 0.0
    row = json.loads((tmp_path / "eval" / "predictions.jsonl").read_text())
    assert row["utt_id"] == ids[0] and row["expected"]["extra"]["gopt_blend"] == 0.0

    # the same clip aligned here in worker processes gives the features of the corpus file
    from training.evaluate import align_in_processes

    rec = next(r for r in load_split(so762_dir, "train") if r.utt_id == ids[0])
    (feat,), ((start, end),) = align_in_processes([rec.audio()], [rec.reference], 2)
    corpus = load_corpus_features(feats)[ids[0]]
    np.testing.assert_allclose(feat, corpus.features, rtol=1e-5, equal_nan=True)
    np.testing.assert_allclose(start, corpus.start, atol=1e-6)  # the times travel with the features
    np.testing.assert_allclose(end, corpus.end, atol=1e-6)

    # 3. fitted weights saved with the adapter are what the scorer blends with
    fitted = BlendWeights(phone=1.0, word_accuracy=0.2)
    fitted.save(out / "adapter")
    assert AudioLMMScorer.from_pretrained(tiny_dir, out / "adapter", device="cpu").blend_weights == fitted

