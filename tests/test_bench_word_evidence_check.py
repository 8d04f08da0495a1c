"""bench.word_evidence_check: the per-word table and the speaker-grouped cross-validation."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from apa.gopt import OUTPUT_NAMES
from apa.transcribe import WORD_EVIDENCE_NAMES
from bench.word_evidence_check import grouped_cv_pcc, word_table


def _record(utt, speaker, words):
    ws = [SimpleNamespace(accuracy=a, phones=[None] * n) for a, n in words]
    return SimpleNamespace(utt_id=utt, speaker=speaker, labels=SimpleNamespace(words=ws))


def test_word_table_reads_each_words_row_and_the_helper_on_its_first_phone():
    k = len(WORD_EVIDENCE_NAMES)
    words = {"a": np.arange(2 * k, dtype=np.float32).reshape(2, k), "b": np.full((1, k), np.nan, np.float32)}
    oof = {"a": np.zeros((3, len(OUTPUT_NAMES)), np.float32), "b": np.zeros((1, len(OUTPUT_NAMES)), np.float32)}
    oof["a"][:, OUTPUT_NAMES.index("pred_word_accuracy")] = [7.0, 7.0, 3.0]  # word 0: phones 0-1, word 1: phone 2
    records = [_record("a", "s1", [(9.0, 2), (4.0, 1)]), _record("b", "s2", [(8.0, 1)]), _record("c", "s3", [(5.0, 1)])]
    x, helper, y, groups = word_table(words, oof, records)
    np.testing.assert_array_equal(x, words["a"])  # b has no evidence, c no files
    np.testing.assert_array_equal(helper, [7.0, 3.0])
    np.testing.assert_array_equal(y, [9.0, 4.0])
    assert groups == ["s1", "s1"]


def test_grouped_cross_validation_finds_signal_and_not_noise():
    rng = np.random.default_rng(0)
    n = 600
    groups = [f"s{i % 12}" for i in range(n)]
    x = rng.standard_normal((n, 2))
    y = 2.0 * x[:, 0] + 0.3 * rng.standard_normal(n)
    assert grouped_cv_pcc(x, y, groups) > 0.9
    assert abs(grouped_cv_pcc(x[:, 1:], y, groups)) < 0.2
