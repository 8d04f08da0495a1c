"""Tests for apa.align (pocketsphinx forced alignment and GOP features) and its corpus file.

About 20 alignments of ~3 s clips: ~15 s on one core."""

from __future__ import annotations

import io
import math
import shutil
import subprocess
import tempfile
import threading

import numpy as np
import pytest

pytest.importorskip("pocketsphinx", reason="pocketsphinx not installed (pip install pocketsphinx==5.1.1)")

from apa import align as A  # noqa: E402

SR = 16000
N_CLIPS = 3

# "the quick brown fox jumps over the lazy dog", CMU phones
FOX = (
    ("THE", ("DH", "AH0")), ("QUICK", ("K", "W", "IH1", "K")), ("BROWN", ("B", "R", "AW1", "N")),
    ("FOX", ("F", "AA1", "K", "S")), ("JUMPS", ("JH", "AH1", "M", "P", "S")), ("OVER", ("OW1", "V", "ER0")),
    ("THE", ("DH", "AH0")), ("LAZY", ("L", "EY1", "Z", "IY0")), ("DOG", ("D", "AO1", "G")),
)  # fmt: skip


@pytest.fixture(scope="module")
def clips(so762_dir):
    from apa.data import load_split

    recs = load_split(so762_dir, "test")[:N_CLIPS]
    return [(r.utt_id, r.audio(), r.reference) for r in recs]


@pytest.fixture(scope="module")
def aligned(clips):
    return [A.align(audio, ref) for _, audio, ref in clips]


@pytest.fixture(scope="module")
def espeak_clip():
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    import soundfile as sf
    import soxr

    text = " ".join(w.lower() for w, _ in FOX)
    wav = subprocess.run(["espeak-ng", "-v", "en-us", "--stdout", text], capture_output=True, check=True).stdout
    x, sr = sf.read(io.BytesIO(wav), dtype="float32")
    return soxr.resample(x, sr, SR).astype(np.float32)


def check_structure(al: A.Alignment, audio: np.ndarray, reference) -> None:
    duration = len(audio) / SR
    assert [w.text for w in al.words] == [w for w, _ in reference]
    assert [p.symbol for p in al.phones] == [s for _, ph in reference for s in ph]
    assert [p.word for p in al.phones] == [i for i, (_, ph) in enumerate(reference) for _ in ph]
    starts = [p.start for p in al.phones]
    ends = [p.end for p in al.phones]
    assert all(0 <= s < e <= duration + 1e-9 for s, e in zip(starts, ends))
    assert all(e <= s2 + 1e-9 for e, s2 in zip(ends, starts[1:])), "phones overlap or go backwards"
    for i, w in enumerate(al.words):
        mine = [p for p in al.phones if p.word == i]
        assert 0 <= w.start <= w.end <= duration + 1e-9
        assert w.start == pytest.approx(mine[0].start) and w.end == pytest.approx(mine[-1].end)
    assert all(w1.end <= w2.start + 1e-9 for w1, w2 in zip(al.words, al.words[1:]))
    f = al.features()
    assert f.shape == (len(al.phones), A.N_FEATURES) and f.dtype == np.float32
    assert len(A.FEATURE_NAMES) == A.N_FEATURES == 1 + len(A.PHONES) + 4 and len(A.PHONES) == 40


def test_model_phones_cover_the_40():
    _hmm, order, offsets, n_sen = A._model()
    assert n_sen > len(order) > 1000 and len(offsets) == len(A.PHONES)
    assert np.all(np.diff(offsets) > 0)


def test_word_position_follows_pocketsphinx_numbering():
    from apa.weights.sphinx_mdef import WORD_BEGIN, WORD_END, WORD_INTERNAL, WORD_SINGLE

    wids = [0, 1, 1, 1, 2, 2]  # a one-phone word, a three-phone word, a two-phone word
    got = [A._word_position(wids, j) for j in range(len(wids))]
    assert got == [WORD_SINGLE, WORD_BEGIN, WORD_INTERNAL, WORD_END, WORD_BEGIN, WORD_END]


def test_candidates_are_scored_by_their_triphone_else_their_ci_phone():
    table, states, ci_ids = A._triphone_senones()
    assert table.shape == (40, 40, 40, 4) and states.shape[1] == 3
    q, l, r = A.PHONE_INDEX["L"], A.PHONE_INDEX["AY"], A.PHONE_INDEX["K"]  # "l" of "like" between AY and K
    wpos = next(w for w in range(4) if table[q, l, r, w] >= 0)
    sen = A._candidate_senones(l, r, wpos)
    assert sen.shape == (40, 3)
    assert np.array_equal(sen[q], states[table[q, l, r, wpos]])
    # where the model has no triphone of a candidate in that context, its CI phone's own senones
    missing = [(c, w) for c in range(40) for w in range(4) if (table[c, l, r] < 0).all()]
    assert missing, "every candidate has a triphone here: pick another context"
    c, w = missing[0]
    assert np.array_equal(A._candidate_senones(l, r, w)[c], states[ci_ids[c]])
    # another word position of the same triphone before the CI phone
    other = [(c, w) for c in range(40) for w in range(4) if table[c, l, r, w] < 0 and (table[c, l, r] >= 0).any()]
    if other:
        c, w = other[0]
        found = table[c, l, r][table[c, l, r] >= 0]
        assert np.array_equal(A._candidate_senones(l, r, w)[c], states[found.min()])


def test_corpus_clips_align(clips, aligned):
    for (_, audio, ref), al in zip(clips, aligned):
        assert al.ok, al.reason
        assert al.reason == "" and al.frame_s == A.FRAME_S
        check_structure(al, audio, ref)
        f = al.features()
        assert np.isfinite(f).all()
        for p, row in zip(al.phones, f):
            c = A.PHONE_INDEX[p.symbol.rstrip("012")]
            assert p.lpp <= 0 and p.lpr[c] == 0 and p.lpr.shape == (40,)
            assert row[0] == pytest.approx(p.lpp) and row[A.FEATURE_NAMES.index("lpr_" + A.PHONES[c])] == 0
            assert row[A.FEATURE_NAMES.index("log_frames")] == pytest.approx(math.log(p.frames))
            assert p.frames == round((p.end - p.start) / A.FRAME_S) or p.end == pytest.approx(len(audio) / SR)
            assert p.score_per_frame <= 0 and 0 <= p.post_mean <= 1 and 0 <= p.top1_frac <= 1
            probs = [q for _, q in p.heard]
            assert len(p.heard) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
            assert all(h in A.PHONES for h, _ in p.heard)
        # speech starts after the leading silence of these recordings
        assert al.words[0].start > 0.1


def test_espeak_sentence(espeak_clip):
    al = A.align(espeak_clip, FOX)
    assert al.ok, al.reason
    check_structure(al, espeak_clip, FOX)
    # synthetic speech in the right order: the canonical phone is usually among the top 3 heard
    hits = np.mean([p.symbol.rstrip("012") in [h for h, _ in p.heard] for p in al.phones])
    assert hits > 0.4
    # the forced choice: a finite score for every candidate but SIL, over a window of >= the phone's frames
    for p in al.phones:
        assert p.choice_ll.shape == (40,) and p.choice_ll[A.PHONE_INDEX["SIL"]] == -np.inf
        assert np.isfinite(np.delete(p.choice_ll, A.PHONE_INDEX["SIL"])).all()
        assert p.choice_frames >= p.frames
    # ... and without any prior the phone that was said is usually among its 3 best
    top3 = [A.PHONE_INDEX[p.symbol.rstrip("012")] in np.argsort(-p.choice_ll)[:3] for p in al.phones]
    assert np.mean(top3) > 0.6


def test_no_state_across_utterances(clips, aligned):
    """A, then B, then A again: the same A (every call has its own decoder)."""
    (_, a, ra), (_, b, rb) = clips[0], clips[1]
    first = aligned[0]
    A.align(b, rb)
    again = A.align(a, ra)
    assert again == first
    assert np.array_equal(again.features(), first.features())


@pytest.mark.parametrize(
    "case",
    ["silence", "noise", "tone", "empty", "short", "nan", "2d", "empty_text", "bad_phone", "no_phones", "bad_ref"],
)
def test_fallback_never_raises(case, clips):
    _, audio, ref = clips[0]
    rng = np.random.default_rng(0)
    t = np.arange(3 * SR) / SR
    x, r = {
        "silence": (np.zeros(3 * SR, np.float32), ref),
        "noise": ((0.1 * rng.standard_normal(3 * SR)).astype(np.float32), ref),
        "tone": ((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), ref),
        "empty": (np.zeros(0, np.float32), ref),
        "short": (audio[: SR // 20], ref),
        "nan": (np.full(3 * SR, np.nan, np.float32), ref),
        "2d": (audio[None], ref),
        "empty_text": (audio, ()),
        "bad_phone": (audio, (("WORD", ("W", "QQ1")),)),
        "no_phones": (audio, (("WORD", ()),)),
        "bad_ref": (audio, 42),
    }[case]
    al = A.align(x, r)
    assert not al.ok and al.reason
    if case in ("empty_text", "bad_ref"):
        assert al.phones == () and al.features().shape == (0, A.N_FEATURES)
        return
    assert [p.symbol for p in al.phones] == [s for _, ph in r for s in ph]
    f = al.features()
    assert f.shape == (len(al.phones), A.N_FEATURES)
    lf = A.FEATURE_NAMES.index("log_frames")
    assert np.isnan(np.delete(f, lf, axis=1)).all() and np.isfinite(f[:, lf]).all()
    assert all(p.heard == () for p in al.phones)
    # even spread over the clip (0 when the audio is unusable as such)
    n = len(al.phones)
    dur = len(x) / SR if x.ndim == 1 and case != "empty" else 0.0
    assert [p.start for p in al.phones] == pytest.approx([j * dur / n for j in range(n)])
    assert [p.end for p in al.phones] == pytest.approx([(j + 1) * dur / n for j in range(n)])


def test_wrong_text_scores_low(clips, aligned):
    """Another sentence's text: it may align (forced), but its phones score far lower."""
    (_, a, _), (_, _, rb) = clips[0], clips[1]
    al = A.align(a, rb)
    if al.ok:
        assert np.mean([p.lpp for p in al.phones]) < np.mean([p.lpp for p in aligned[0].phones]) - 1.0
    else:
        assert al.reason


def test_integer_pcm(clips, aligned):
    _, audio, ref = clips[0]
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    al = A.align(pcm, ref)
    assert al.ok and [p.start for p in al.phones] == [p.start for p in aligned[0].phones]


def test_threads(clips, aligned):
    results: dict[int, A.Alignment] = {}

    def work(i):
        _, audio, ref = clips[i % len(clips)]
        results[i] = A.align(audio, ref)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, al in results.items():
        assert al == aligned[i % len(clips)]
    assert len(results) == 4


def test_no_files_left(clips, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    _, audio, ref = clips[1]
    assert A.align(audio, ref).ok
    A.align(np.zeros(SR, np.float32) + 0.05 * np.random.default_rng(1).standard_normal(SR).astype(np.float32), ref)
    assert list(tmp_path.iterdir()) == []


def test_corpus_file_roundtrip(clips, aligned, tmp_path):
    from training.align_corpus import pack, save

    bad = A.align(np.zeros(0, np.float32), clips[2][2])
    packed = {clips[0][0]: pack(aligned[0]), clips[1][0]: pack(aligned[1]), "bad": pack(bad)}
    path = save(tmp_path / "f.npz", packed, "test")
    got = A.load_corpus_features(path)
    meta = A.load_corpus_meta(path)
    assert list(got) == list(packed)
    assert meta["feature_names"] == A.FEATURE_NAMES and meta["phones"] == A.PHONES and meta["split"] == "test"
    assert meta["pocketsphinx_version"] == A.pocketsphinx_version()
    for al, u in ((aligned[0], clips[0][0]), (aligned[1], clips[1][0]), (bad, "bad")):
        g = got[u]
        assert g.ok == al.ok and g.symbols == tuple(p.symbol for p in al.phones)
        np.testing.assert_array_equal(g.features, al.features())
        np.testing.assert_allclose(g.start, [p.start for p in al.phones], atol=1e-6)
        np.testing.assert_allclose(g.word_end, [w.end for w in al.words], atol=1e-6)
        assert [A.PHONES[i] for i in g.heard[0] if i >= 0] == [h for h, _ in al.phones[0].heard]
    assert got["bad"].reason == bad.reason and got["bad"].split == "test"
