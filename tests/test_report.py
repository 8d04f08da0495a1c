"""training.report: the README's results tables from metrics.json files."""

from __future__ import annotations

import json

from apa.metrics import ASPECTS
from training.report import main


def _metrics(pcc: float, control: float | None = None) -> dict:
    aspects = {a: {"pcc": pcc, "scc": pcc / 2} for a in ASPECTS}
    m = {"model": "m", "labels": "snapshot X", "split": "test", "n": 3, "expected": aspects, "greedy": aspects}
    if control is not None:
        m["control"] = {a: {"pcc": control, "scc": None} for a in ASPECTS}
    return m


def test_one_column_per_model_and_the_deaf_control(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_metrics(0.8, control=0.2)))
    b.write_text(json.dumps(_metrics(0.1)))
    out = main([str(a), str(b), "--names", "new", "old"])
    assert "snapshot X, test split, 3 utterances" in out
    assert "| phone | **0.80** / **0.40** | 0.10 / 0.05 | 0.38 / 0.34 | 0.61 |" in out
    assert "Deaf control, new" in out and "Deaf control, old" not in out
    assert "| phone | 0.80 / 0.40 | 0.20 / n/a | 75% / n/a |" in out
