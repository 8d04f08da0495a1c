"""apa.gopt: the GOPT-style helper whose predictions join the phone evidence."""

from dataclasses import asdict

import numpy as np
import pytest
import torch

from apa.gopt import (
    GOPT, OUTPUT_NAMES, PHONES, BlendWeights, GOPTConfig, GOPTEnsemble, Utterance, append_predictions, cross_fit, fit_normalisation,
    fold_assignment, phone_ids, reference_inputs, train_one,
)

torch.set_num_threads(1)
F = 3


def synthetic(n_utts: int, seed: int = 0) -> list[Utterance]:
    """Phone score = 2 * sigmoid(feature 0); word accuracy = 10 * mean of its phones / 2; sentence = mean."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_utts):
        n_words = int(rng.integers(1, 4))
        word = np.repeat(np.arange(n_words), rng.integers(1, 4, n_words))
        x = rng.normal(size=(len(word), F)).astype(np.float32)
        phone = (2 / (1 + np.exp(-2 * x[:, 0]))).astype(np.float32)
        wacc = np.array([5 * phone[word == w].mean() for w in range(n_words)], np.float32)
        words = np.stack([wacc, wacc], axis=1)
        sent = np.full(4, 5 * phone.mean(), np.float32)
        phones = tuple(rng.choice(PHONES, len(word)))
        out.append(Utterance(x, phones, word, phone, words, sent))
    return out


def small_config(utts, folds: int = 2) -> GOPTConfig:
    mean, std = fit_normalisation(utts)
    return GOPTConfig(feature_names=tuple(f"f{i}" for i in range(F)), mean=mean, std=std, width=16, layers=1, heads=2, folds=folds)


def test_phone_ids_drop_stress_and_mark_unknown():
    assert phone_ids(["AA1", "B", "XX"]) == [PHONES.index("AA"), PHONES.index("B"), len(PHONES)]


def test_reference_inputs_index_words():
    phones, word = reference_inputs([("a", ("AH0",)), ("cat", ("K", "AE1", "T"))])
    assert phones == ("AH0", "K", "AE1", "T") and word.tolist() == [0, 1, 1, 1]


def test_training_learns_the_phone_signal():
    utts = synthetic(120)
    config = small_config(utts)
    model = train_one(config, utts, epochs=15, batch_size=10, lr=3e-3)
    ens = GOPTEnsemble(config.__class__(**{**config.__dict__, "folds": 1}), [model])
    test = synthetic(40, seed=1)
    pred = np.concatenate([p[:, 0] for p in ens.predict(test)])
    truth = np.concatenate([u.phone_score for u in test])
    assert np.corrcoef(pred, truth)[0, 1] > 0.8


def test_predictions_shape_levels_and_failed_rows():
    utts = synthetic(4)
    config = small_config(utts)
    ens = GOPTEnsemble(config)
    u = utts[0]
    feats = u.features.copy()
    feats[0] = np.nan  # this phone did not align
    (pred,) = ens.predict([Utterance(feats, u.phones, u.word)])
    assert pred.shape == (len(u.phones), len(OUTPUT_NAMES))
    assert np.isnan(pred[0]).all() and np.isfinite(pred[1:]).all()
    ok = np.arange(len(u.phones)) > 0
    for w in np.unique(u.word[ok]):  # word columns repeat within a word, sentence columns everywhere
        rows = pred[ok & (u.word == w)]
        assert np.allclose(rows[:, 1:3], rows[0, 1:3])
    assert np.allclose(pred[ok, 3:], pred[ok][0, 3:])
    assert (pred[ok, 0] >= -1).all()


def test_save_load_round_trip(tmp_path):
    utts = synthetic(6)
    ens = GOPTEnsemble(small_config(utts))
    for p in ens.parameters():  # not the zero-ish init: make a difference visible
        torch.nn.init.normal_(p, std=0.3)
    ens.save(tmp_path)
    again = GOPTEnsemble.load(tmp_path)
    for a, b in zip(ens.predict(utts), again.predict(utts)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert GOPTEnsemble.load(tmp_path / "missing") is None


def test_folds_keep_groups_together():
    groups = [f"spk{i % 7}" for i in range(50)]
    folds = fold_assignment(groups, 3, seed=4)
    for g in set(groups):
        assert len({f for f, h in zip(folds, groups) if h == g}) == 1
    assert sorted(set(folds.tolist())) == [0, 1, 2]
    with pytest.raises(ValueError):
        fold_assignment(["a", "b"], 3)


def test_cross_fit_predicts_each_utterance_with_its_held_out_model():
    utts = synthetic(30)
    groups = [f"s{i % 6}" for i in range(30)]
    config = small_config(utts, folds=3)
    ens, oof = cross_fit(config, utts, groups, epochs=1)
    folds = fold_assignment(groups, 3)
    assert len(ens.models) == 3 and len(oof) == 30
    for i in (0, 7, 13):
        np.testing.assert_allclose(oof[i], ens.predict([utts[i]], members=[int(folds[i])])[0], rtol=1e-5)
        other = (int(folds[i]) + 1) % 3
        assert not np.allclose(oof[i], ens.predict([utts[i]], members=[other])[0])


def test_append_predictions_checks_the_phone_count():
    utts = synthetic(3)
    ens = GOPTEnsemble(small_config(utts))
    ref = [("a", ("AH0",)), ("cat", ("K", "AE1", "T"))]
    out = append_predictions(ens, np.zeros((4, F), np.float32), ref)
    assert out.shape == (4, F + len(OUTPUT_NAMES)) and (out[:, :F] == 0).all()
    with pytest.raises(ValueError):
        append_predictions(ens, np.zeros((3, F), np.float32), ref)


def test_batched_prediction_equals_one_by_one_and_keeps_threads():
    utts = synthetic(9, seed=3)
    ens = GOPTEnsemble(small_config(utts))
    for p in ens.parameters():
        torch.nn.init.normal_(p, std=0.3)
    torch.set_num_threads(1)
    together = ens.predict(utts + [Utterance(np.zeros((0, F), np.float32), (), np.zeros(0, np.int64))], batch_size=4)
    assert together[-1].shape == (0, len(OUTPUT_NAMES))
    for u, p in zip(utts, together):
        np.testing.assert_allclose(p, ens.predict([u])[0], rtol=1e-4, atol=1e-5)
    assert torch.get_num_threads() == 1


def _assessment():
    from apa.schema import Assessment, Phone, Sentence, Word

    words = (Word("A", accuracy=8.0, stress=10.0, total=8.0, phones=(Phone("AH0", 2.0),)),
             Word("CAT", accuracy=6.0, stress=10.0, total=6.0, phones=(Phone("K", 1.0), Phone("AE1", 2.0), Phone("T", 0.0))))
    return Assessment(text="A CAT", sentence=Sentence(6.0, 7.0, 8.0, 10.0, 6.0), words=words, model="m")


def test_blend_mixes_each_level_and_keeps_what_the_helper_does_not_predict():
    from apa.gopt import blend

    a = _assessment()
    pred = np.zeros((4, len(OUTPUT_NAMES)))
    pred[:, 0] = [0.0, 2.0, 1.0, 2.0]  # phones
    pred[0, 1:3] = [2.0, 4.0]  # word A accuracy / total
    pred[1:, 1:3] = [10.0, 8.0]  # word CAT
    pred[:, 3:] = [10.0, 9.0, 0.0, 4.0]  # sentence accuracy, fluency, prosodic, total
    b = blend(a, pred, 0.25)
    assert [p.score for p in b.phones] == pytest.approx([1.5, 1.25, 1.75, 0.5])
    assert (b.words[0].accuracy, b.words[0].total, b.words[1].accuracy, b.words[1].total) == pytest.approx((6.5, 7.0, 7.0, 6.5))
    s = b.sentence
    assert (s.accuracy, s.fluency, s.prosodic, s.total) == pytest.approx((7.0, 7.5, 6.0, 5.5))
    assert s.completeness == 10.0 and b.words[1].stress == 10.0
    assert b.extra["gopt_blend"] == asdict(BlendWeights.uniform(0.25))


def test_blend_weights_apply_per_aspect_and_travel_with_the_helper(tmp_path):
    from apa.gopt import blend

    a = _assessment()
    pred = np.zeros((4, len(OUTPUT_NAMES)))
    pred[:, 0] = [0.0, 2.0, 1.0, 2.0]
    weights = BlendWeights(phone=1.0, word_accuracy=0.0, word_total=0.5, sentence_accuracy=0.0, sentence_fluency=0.0,
                           sentence_prosodic=0.0, sentence_total=1.0)
    b = blend(a, pred, weights)
    assert [p.score for p in b.phones] == pytest.approx([0.0, 2.0, 1.0, 2.0])  # the helper's alone
    assert [w.accuracy for w in b.words] == [w.accuracy for w in a.words]  # the LMM's alone
    assert b.words[0].total == pytest.approx(a.words[0].total / 2) and b.sentence.total == 0.0
    assert b.sentence.fluency == a.sentence.fluency
    with pytest.raises(ValueError):
        BlendWeights(phone=1.5)
    config = GOPTConfig(feature_names=("a", "b"), mean=(0.0, 0.0), std=(1.0, 1.0), width=8, layers=1, heads=2, folds=2)
    GOPTEnsemble(config).save(tmp_path)
    assert GOPTEnsemble.load(tmp_path).blend_weights is None
    weights.save(tmp_path)
    assert GOPTEnsemble.load(tmp_path).blend_weights == weights == BlendWeights.load(tmp_path)


def test_blend_leaves_unaligned_rows_and_zero_weight_alone():
    from apa.gopt import blend

    a = _assessment()
    pred = np.full((4, len(OUTPUT_NAMES)), np.nan)
    assert blend(a, pred, 0.5).phones == a.phones and blend(a, pred, 0.5).extra["gopt_blend"] == 0.0
    pred[1:] = 0.0  # word A not aligned, CAT aligned
    b = blend(a, pred, 0.5)
    assert b.words[0] == a.words[0] and b.words[1].accuracy == 3.0
    assert blend(a, np.zeros((4, len(OUTPUT_NAMES))), 0.0).words == a.words


def test_blend_keeps_scores_in_the_labels_range():
    from apa.gopt import blend

    a = _assessment()
    high = np.full((4, len(OUTPUT_NAMES)), 30.0)
    b = blend(a, high, 1.0)
    assert all(p.score == 2.0 for p in b.phones) and all(w.accuracy == 10.0 for w in b.words) and b.sentence.total == 10.0
    assert all(p.score == 0.0 for p in blend(a, -high, 1.0).phones)


def test_dropout_is_configurable_and_old_configs_load_with_the_default(tmp_path):
    import json

    utts = synthetic(4)
    config = GOPTConfig(**{**small_config(utts).__dict__, "dropout": 0.3})
    drops = [m.p for m in GOPT(config).modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(p == 0.3 for p in drops)
    GOPTEnsemble(config).save(tmp_path)
    assert GOPTConfig.load(tmp_path).dropout == 0.3
    saved = json.loads((tmp_path / "gopt.json").read_text())
    del saved["dropout"]  # a helper saved before the field existed
    (tmp_path / "gopt.json").write_text(json.dumps(saved))
    assert GOPTConfig.load(tmp_path).dropout == 0.1
    assert all(m.p == 0.1 for m in GOPTEnsemble.load(tmp_path).modules() if isinstance(m, torch.nn.Dropout))


def test_cross_fit_passes_the_learning_rate_and_keeps_the_folds():
    utts = synthetic(30)
    groups = [f"s{i % 6}" for i in range(30)]
    config = small_config(utts, folds=3)
    frozen, oof0 = cross_fit(config, utts, groups, epochs=1, lr=0.0)  # no step moves a weight
    for k, model in enumerate(frozen.models):
        torch.manual_seed(k)  # train_one's initialisation, seed 0 + fold k
        init = GOPT(config)
        for a, b in zip(model.state_dict().values(), init.state_dict().values()):
            assert torch.equal(a, b)
    moved, oof1 = cross_fit(config, utts, groups, epochs=1, lr=1e-2)
    assert any(not torch.equal(a, b) for a, b in zip(moved.state_dict().values(), frozen.state_dict().values()))
    folds = fold_assignment(groups, 3)  # the same held-out model scores each utterance at any lr
    for i in (0, 7, 13):
        np.testing.assert_allclose(oof1[i], moved.predict([utts[i]], members=[int(folds[i])])[0], rtol=1e-5)


def test_fit_arguments_expose_lr_and_dropout():
    from training.fit_gopt import FitArguments

    args = FitArguments(features="f", out="o")
    assert (args.lr, args.dropout, args.seed, args.folds) == (1e-3, 0.1, 0, 5)


def test_pool_phone_states_averages_each_phones_positions():
    from apa.gopt import pool_phone_states

    states = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)  # position k holds k
    start = np.array([0.0, 0.04, 0.05, 0.19, np.nan])
    end = np.array([0.04, 0.08, 0.051, 0.30, np.nan])
    out = pool_phone_states(states, start, end, 0.02)
    assert out.shape == (5, 2)
    np.testing.assert_allclose(out[:4, 0], [0.5, 2.5, 2.0, 9.0])  # [0, 2), [2, 4), one position, clipped to the end
    assert np.isnan(out[4]).all()  # no alignment: no states
    # times as the corpus files store them (float32) pool the same positions as float64 ones
    t = np.arange(0, 0.2, 0.01)
    np.testing.assert_array_equal(pool_phone_states(states, t.astype(np.float32), (t + 0.03).astype(np.float32), 0.02),
                                  pool_phone_states(states, t, t + 0.03, 0.02))
    assert np.isnan(pool_phone_states(np.zeros((0, 2), np.float32), start[:1], end[:1], 0.02)).all()


def test_a_helper_that_reads_the_tower_takes_its_columns(tmp_path):
    utts = synthetic(12)
    tower = [np.random.default_rng(i).normal(size=(len(u.phones), 4)).astype(np.float32) for i, u in enumerate(utts)]
    wide = [Utterance(np.concatenate([u.features, t], 1), u.phones, u.word, u.phone_score, u.word_scores, u.sentence)
            for u, t in zip(utts, tower)]
    mean, std = fit_normalisation(wide)
    with pytest.raises(ValueError, match="mean/std"):
        GOPTConfig(feature_names=tuple(f"f{i}" for i in range(F)), mean=mean, std=std, tower_layers=(1, 2), tower_width=3)
    cfg = GOPTConfig(feature_names=tuple(f"f{i}" for i in range(F)), mean=mean, std=std, width=8, layers=1, heads=2,
                     folds=2, tower_layers=(1, 2), tower_width=2)
    assert cfg.n_inputs == F + 4
    ens, _ = cross_fit(cfg, wide, [str(i) for i in range(12)], epochs=1)
    ens.save(tmp_path)
    again = GOPTEnsemble.load(tmp_path)
    assert again.config.tower_layers == (1, 2) and again.config.tower_width == 2
    u0 = utts[0]
    ref = tuple((f"W{w}", tuple(p for p, k in zip(u0.phones, u0.word) if k == w)) for w in range(int(u0.word.max()) + 1))
    out = append_predictions(again, utts[0].features, ref, tower[0])
    assert out.shape == (len(u0.phones), F + len(OUTPUT_NAMES))  # the evidence keeps the alignment's columns only
    np.testing.assert_allclose(out[:, F:], again.predict([wide[0]])[0], rtol=1e-6)
    with pytest.raises(ValueError, match="tower"):
        append_predictions(again, utts[0].features, ref)  # the states are required
    with pytest.raises(ValueError, match="tower"):
        append_predictions(again, utts[0].features, ref, tower[0][:, :3])


def test_tower_pca_reduces_each_layer_and_travels_with_the_weights(tmp_path):
    from apa.gopt import fit_tower_pca, reduced_normalisation

    rng = np.random.default_rng(0)
    utts = synthetic(12)
    # layer 1's states vary along one direction only, layer 2's along another
    wide = []
    for u in utts:
        a, b = rng.normal(size=(len(u.phones), 1)), rng.normal(size=(len(u.phones), 1))
        t = np.concatenate([a * [1, 1, 0], 5 + b * [0, 0, 2]], axis=1).astype(np.float32)
        wide.append(Utterance(np.concatenate([u.features, t], 1), u.phones, u.word, u.phone_score, u.word_scores, u.sentence))
    mean, basis = fit_tower_pca(wide, F, 2, 1)
    assert mean.shape == (2, 3) and basis.shape == (2, 3, 1)
    np.testing.assert_allclose(np.abs(basis[0, :, 0]), [2 ** -0.5, 2 ** -0.5, 0], atol=1e-6)
    np.testing.assert_allclose(np.abs(basis[1, :, 0]), [0, 0, 1], atol=1e-6)
    np.testing.assert_allclose(mean[1, 2], 5, atol=1.0)
    cfg = GOPTConfig(tuple(f"f{i}" for i in range(F)), *reduced_normalisation(wide, F, (mean, basis)), width=8, layers=1,
                     heads=2, folds=2, tower_layers=(1, 2), tower_width=3, tower_pca=1)
    assert (cfg.n_inputs, cfg.n_model_inputs) == (F + 6, F + 2)
    with pytest.raises(ValueError, match="fit_tower_pca"):
        train_one(cfg, wide, epochs=1)
    ens, _ = cross_fit(cfg, wide, [str(i) for i in range(12)], epochs=1, tower_pca=(mean, basis))
    ens.save(tmp_path)
    again = GOPTEnsemble.load(tmp_path)
    torch.testing.assert_close(again.models[1].tower_basis, torch.as_tensor(basis))
    np.testing.assert_allclose(again.predict(wide[:3])[2], ens.predict(wide[:3])[2], rtol=1e-6)


def test_word_inputs_repeat_each_words_columns_on_its_phones():
    from apa.gopt import word_inputs
    from apa.transcribe import WORD_EVIDENCE_NAMES

    words = np.arange(2 * len(WORD_EVIDENCE_NAMES), dtype=np.float32).reshape(2, -1)
    word = np.array([0, 0, 1])
    got = word_inputs(words, word, ("pmi_sum", "lp_sum"))
    k = WORD_EVIDENCE_NAMES.index("pmi_sum")
    np.testing.assert_array_equal(got, [[k, 0], [k, 0], [len(WORD_EVIDENCE_NAMES) + k, len(WORD_EVIDENCE_NAMES)]])
    assert np.isnan(word_inputs(None, word, ("lp_sum",))).all() and word_inputs(None, word, ("lp_sum",)).shape == (3, 1)
    with pytest.raises(ValueError, match="for 2 words"):
        word_inputs(words[:1], word, ("lp_sum",))


def test_a_config_names_only_known_word_columns_and_their_model():
    from apa.gopt import GOPTConfig

    with pytest.raises(ValueError, match="not among"):
        GOPTConfig(("lpp",), (0.0, 0.0), (1.0, 1.0), word_columns=("loudness",), word_model="whisper-base")
    c = GOPTConfig(("lpp",), (0.0, 0.0), (1.0, 1.0), word_columns=("lp_sum",), word_model="whisper-base")
    assert c.n_direct == 2 and c.n_inputs == 2 and c.n_model_inputs == 2
