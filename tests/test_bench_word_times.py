"""bench.word_times: the pause finder, the pause-edge matching and the DTW edge mapping (synthetic
inputs, no model, no corpus)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from bench.word_times import (
    HOP_S,
    REF_EDGE_S,
    dtw_word_times,
    espeak_words,
    map_edges,
    pause_edge_errors,
    quiet_runs,
    refine,
    vad_pauses,
)

FRAME = 0.032


def test_vad_pauses_are_the_long_non_speech_runs_inside_the_speech():
    # silence, speech, a 5-frame gap, speech, a 2-frame gap, speech, silence
    p = np.array([0.0] * 3 + [0.9] * 4 + [0.1] * 5 + [0.9] * 3 + [0.1] * 2 + [0.9] * 3 + [0.0] * 4)
    got = vad_pauses(p, FRAME, on=0.5, off=0.35, min_s=0.15)
    assert got == [pytest.approx((7 * FRAME, 12 * FRAME))]  # the 2-frame gap is too short; edges are not pauses
    # hysteresis: 0.4 keeps speech going once it started, but does not start it
    q = np.array([0.4, 0.9, 0.4, 0.4, 0.4, 0.4, 0.4, 0.9])
    assert vad_pauses(q, FRAME, on=0.5, off=0.35, min_s=0.1) == []
    assert vad_pauses(np.zeros(10), FRAME, on=0.5, off=0.35) == []


def test_quiet_runs_and_refine():
    rng = np.random.default_rng(0)
    x = np.concatenate([0.3 * rng.standard_normal(8000), 1e-4 * rng.standard_normal(4000), 0.3 * rng.standard_normal(8000)])
    runs = quiet_runs(x.astype(np.float32))
    assert any(abs(a - 0.5) <= 0.01 and abs(b - 0.75) <= 0.01 for a, b in runs)
    # a coarse VAD pause is moved to the quiet run it overlaps ...
    assert refine((0.48, 0.8), runs) == pytest.approx((0.5, 0.75), abs=0.011)
    # ... and kept where none overlaps
    assert refine((2.0, 2.3), [(0.5, 0.75)]) == (2.0, 2.3)


def test_pause_edge_errors_use_the_nearest_word_boundary():
    words = [(0.1, 0.5), (0.8, 1.2), (1.25, 1.6)]
    errs = pause_edge_errors([(0.52, 0.75)], words)
    assert errs == [pytest.approx((0.5 - 0.52, 0.8 - 0.75))]
    # a pause where the aligner put no gap still gets its nearest boundary (and fails the tolerance)
    errs = pause_edge_errors([(1.0, 1.2)], words)
    assert errs == [pytest.approx((1.2 - 1.0, 1.25 - 1.2))]
    assert pause_edge_errors([(0.5, 0.7)], [(0.1, 0.5)]) == []


def test_map_edges_follows_the_path():
    # reference frames 0..9, learner frames 0..19: learner twice as slow, then a learner pause at 10-13
    path = [(i, 2 * i) for i in range(5)] + [(4, 9), (4, 10), (4, 11), (4, 12), (4, 13)]
    path += [(5 + k, 14 + k) for k in range(5)]
    got = map_edges(np.array(path), [(0.0, 0.05), (0.05, 0.10)], 10)
    # word 1 = ref frames 0-4 -> learner frames 0 .. 13 (the pause joins the frame before it)
    assert got[0] == pytest.approx((0.0, 14 * HOP_S))
    assert got[1] == pytest.approx((14 * HOP_S, 19 * HOP_S))


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_dtw_finds_the_words_of_the_same_rendering_shifted():
    ref, edges = espeak_words(["we", "call", "it", "bear"])
    assert len(edges) == 4 and edges[0][0] == pytest.approx(REF_EDGE_S)
    assert all(a < b <= c for (a, b), (c, _) in zip(edges, edges[1:]))
    shift = 0.3
    rng = np.random.default_rng(1)
    audio = np.concatenate([1e-3 * rng.standard_normal(int(shift * 16000)).astype(np.float32), ref])
    got = dtw_word_times(audio, ["we", "call", "it", "bear"])
    for (s, e), (gs, ge) in zip(edges, got):
        assert gs == pytest.approx(s + shift, abs=0.03) and ge == pytest.approx(e + shift, abs=0.03)
