"""bench.phone_collapse: the between / within split of phone PCC and the collapsed clips."""

import gzip
import json

import numpy as np
import pytest


def test_split_pcc_separates_clip_means_from_phones_within_clips():
    from bench.phone_collapse import split_pcc

    label = [np.array([2.0, 2.0, 0.0]), np.array([1.0, 2.0, 2.0]), np.array([2.0, 2.0, 2.0, 1.0])]
    _, between, within = split_pcc(label, label)
    assert between == pytest.approx(1.0) and within == pytest.approx(1.0)
    # each clip's phones mirrored about its own mean: the clip means hold, the phones within invert
    mirrored = [2 * x.mean() - x for x in label]
    _, between, within = split_pcc(mirrored, label)
    assert between == pytest.approx(1.0) and within == pytest.approx(-1.0)


def test_report_counts_a_collapsed_clip(tmp_path, so762_dir):
    from apa.data import load_split
    from bench.phone_collapse import main
    from training.fit_gopt import save_oof

    recs = load_split(so762_dir, "train")[:6]
    rows, preds = [], []
    for i, r in enumerate(recs):
        d = r.labels.to_dict()
        if i == 0:  # the LMM reads every phone of the first clip as 0
            for w in d["words"]:
                for p in w["phones"]:
                    p["score"] = 0.0
        rows.append({"utt_id": r.utt_id, "expected": d})
        n = sum(len(w.phones) for w in r.labels.words)
        preds.append((1.9 + 0.05 * np.random.default_rng(i).standard_normal((n, 7))).astype(np.float32))  # the helper: all good
    oof = tmp_path / "gopt"
    oof.mkdir()
    save_oof(oof, [r.utt_id for r in recs], preds)
    with gzip.open(tmp_path / "p.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "report.md"
    assert main(["--predictions", str(tmp_path / "p.jsonl.gz"), "--split", "train", "--data", str(so762_dir),
                 "--oof", str(oof), "--out", str(out)]) == 0
    text = out.read_text()
    assert "Collapsed clips" in text and ": 1 of 6 " in text
