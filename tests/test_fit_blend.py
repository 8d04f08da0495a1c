"""training.fit_blend: blend weights per aspect from held-out clips, and the held-out fold's ids."""

import json

import numpy as np
import pytest

from apa.gopt import BLEND_ASPECTS, OUTPUT_NAMES, BlendWeights


def test_each_aspect_gets_the_weight_that_correlates_best():
    from training.fit_blend import GRID, fit_weights

    rng = np.random.default_rng(0)
    label = rng.normal(size=2000)
    good, bad = label + rng.normal(scale=0.5, size=2000), label + rng.normal(scale=3.0, size=2000)
    pairs = {
        "phone": (bad, good, label),  # the helper is the better one: weight near 1
        "word_accuracy": (good, bad, label),  # the LMM is: weight near 0
        "word_total": (label + rng.normal(size=2000), label + rng.normal(size=2000), label),  # equal, independent noise
    }
    best, curves = fit_weights(pairs)
    assert best["phone"] >= 0.9 and best["word_accuracy"] <= 0.1 and 0.3 <= best["word_total"] <= 0.7
    assert len(curves["phone"]) == len(GRID) and max(curves["word_total"]) > curves["word_total"][0]


def test_pairs_take_one_entry_per_phone_word_and_clip_and_skip_unknown_labels(so762_dir):
    from apa.data import load_split
    from training.fit_blend import aspect_pairs

    recs = load_split(so762_dir, "train")[:3]
    rows, oof = [], {}
    for r in recs:
        a = r.labels.to_dict()
        rows.append({"utt_id": r.utt_id, "expected": a})
        n = sum(len(w.phones) for w in r.labels.words)
        oof[r.utt_id] = np.full((n, len(OUTPUT_NAMES)), 1.0)
    del oof[recs[2].utt_id]  # no helper prediction: left out
    pairs = aspect_pairs(rows, oof, {r.utt_id: r for r in recs})
    assert set(pairs) == set(BLEND_ASPECTS)
    labelled = [p.score for r in recs[:2] for w in r.labels.words for p in w.phones if p.score is not None]
    lmm, helper, label = pairs["phone"]
    assert len(lmm) == len(labelled) and np.allclose(helper, 1.0) and np.allclose(lmm, label)
    assert len(pairs["word_accuracy"][0]) == sum(len(r.labels.words) for r in recs[:2])
    assert len(pairs["sentence_total"][0]) == 2


def test_fit_writes_weights_the_scorer_can_load(tmp_path, so762_dir):
    from apa.data import load_split
    from training.fit_blend import main
    from training.fit_gopt import save_oof

    recs = load_split(so762_dir, "train")[:40]
    rng = np.random.default_rng(1)
    rows, preds = [], []
    for r in recs:
        rows.append({"utt_id": r.utt_id, "expected": r.labels.to_dict()})  # a perfect LMM
        n = sum(len(w.phones) for w in r.labels.words)
        preds.append(rng.uniform(0, 2, size=(n, len(OUTPUT_NAMES))).astype(np.float32))  # a useless helper
    gopt = tmp_path / "gopt"
    gopt.mkdir()
    save_oof(gopt, [r.utt_id for r in recs], preds)
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    main(["fit", "--predictions", str(tmp_path / "p.jsonl"), "--gopt", str(gopt), "--data", str(so762_dir), "--out", str(tmp_path / "b")])
    w = BlendWeights.load(tmp_path / "b")
    assert w is not None and w.phone == 0.0 and w.sentence_total == 0.0  # the perfect reading wins
    assert "| phone |" in (tmp_path / "b" / "blend.md").read_text()


def test_fit_pools_several_folds_and_refuses_a_clip_twice(tmp_path, so762_dir):
    """Two held-out folds' files (one gzipped) are fitted as one set; a clip in both is refused."""
    import gzip

    from apa.data import load_split
    from training.fit_blend import main
    from training.fit_gopt import save_oof

    recs = load_split(so762_dir, "train")[:40]
    rng = np.random.default_rng(2)
    preds = []
    for r in recs:
        n = sum(len(w.phones) for w in r.labels.words)
        preds.append(rng.uniform(0, 2, size=(n, len(OUTPUT_NAMES))).astype(np.float32))  # a useless helper
    gopt = tmp_path / "gopt"
    gopt.mkdir()
    save_oof(gopt, [r.utt_id for r in recs], preds)
    rows = ["".join(json.dumps({"utt_id": r.utt_id, "expected": r.labels.to_dict()}) + "\n" for r in part)
            for part in (recs[:20], recs[20:])]
    (tmp_path / "a.jsonl").write_text(rows[0])
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        f.write(rows[1])
    main(["fit", "--predictions", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl.gz"), "--gopt", str(gopt),
          "--data", str(so762_dir), "--out", str(tmp_path / "w")])
    md = (tmp_path / "w" / "blend.md").read_text()
    assert "on 40 held-out train clips" in md and BlendWeights.load(tmp_path / "w").phone == 0.0
    with pytest.raises(SystemExit, match="more than one"):
        main(["fit", "--predictions", str(tmp_path / "a.jsonl"), str(tmp_path / "a.jsonl"), "--gopt", str(gopt),
              "--data", str(so762_dir), "--out", str(tmp_path / "x")])
