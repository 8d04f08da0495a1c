"""training.merge_shards: shards of an evaluation merge into one table over the whole split."""

import json

import pytest


def _write_shard(path, records, k, n):
    path.mkdir()
    rows = [{"utt_id": r.utt_id, "expected": r.labels.to_dict(), "greedy": r.labels.to_dict()} for r in records[k::n]]
    (path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = {"split": "test", "decode_seconds": 1.5, "model": "m", "decoder": "fast", "batch_size": 8, "device": "cpu", "shard": f"{k}/{n}"}
    (path / "metrics.json").write_text(json.dumps(meta))


def test_shards_merge_to_the_whole_split_and_a_missing_shard_is_refused(tmp_path, so762_dir):
    from apa.data import load_split
    from training.merge_shards import main

    records = load_split(so762_dir, "test")
    for k in (0, 1):
        _write_shard(tmp_path / f"s{k}", records, k, 2)
    result = main([str(tmp_path / "s0"), str(tmp_path / "s1"), "--data", str(so762_dir), "--out", str(tmp_path / "out")])
    assert result["n"] == len(records) and result["decode_seconds"] == 3.0 and result["gopt_blend"] == 0.0
    assert result["expected"]["phone"]["pcc"] == pytest.approx(1.0)  # the labels themselves as predictions
    assert (tmp_path / "out" / "metrics.md").is_file() and (tmp_path / "out" / "predictions.jsonl.gz").is_file()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "s0"), "--data", str(so762_dir), "--out", str(tmp_path / "half")])
    with pytest.raises(SystemExit):  # a blend needs the helper and the features
        main([str(tmp_path / "s0"), str(tmp_path / "s1"), "--data", str(so762_dir), "--out", str(tmp_path / "b"),
              "--gopt-blend", "0.5"])


def test_blend_weights_come_from_a_number_or_the_adapter(tmp_path):
    from apa.gopt import BlendWeights
    from training.merge_shards import blend_weights

    assert blend_weights("0", None) == 0.0 and blend_weights("0.25", None) == 0.25
    with pytest.raises(SystemExit):
        blend_weights("1.5", None)
    with pytest.raises(SystemExit):
        blend_weights("half", None)
    with pytest.raises(SystemExit):  # no blend.json there
        blend_weights("adapter", str(tmp_path))
    fitted = BlendWeights(phone=0.9)
    fitted.save(tmp_path)
    assert blend_weights("adapter", str(tmp_path)) == fitted
