"""apa.transcribe: the reference text's score (`spoken_form`, `encoding_tokenizer`,
`WhisperTranscriber.transcribe_against` / `reference_pmi`), with the real Whisper in slow tests.
Transcription itself and the miscues it feeds are tested in tests/test_reading.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from apa.transcribe import (
    LOGPROB_FLOOR, WORD_EVIDENCE_NAMES, Transcript, encoding_tokenizer, group_words, spoken_form, word_evidence_columns,
)

CLIP_TEXT = "WE CALL IT BEAR"


def test_spoken_form_writes_normalised_words_as_whisper_does():
    assert spoken_form("DORA IS NOT A CLEANER".split()) == " Dora is not a cleaner"
    assert spoken_form("WHERE AM I".split()) == " Where am I"
    assert spoken_form("I'M HOME AND I'LL STAY".split()) == " I'm home and I'll stay"
    assert spoken_form(["IT'S"]) == " It's"
    assert spoken_form([]) == ""


def test_transcript_is_unscored_by_default():
    t = Transcript(text="hello")
    assert t.reference == () and t.reference_pmi is None


def _tiny_tokenizer(tmp_path, merges):
    """A byte-level BPE tokenizer.json whose token 256 is "Ġt" (as in Whisper's), with `merges`."""
    vocab = {f"<{i}>": i for i in range(250)}
    vocab.update({"Ġ": 250, "t": 251, "o": 252, "h": 253, "e": 254, "a": 255, "Ġt": 256, "Ġto": 257})
    spec = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "vocab": vocab, "merges": merges},
    }
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


def test_encoding_tokenizer_puts_back_a_missing_first_merge(tmp_path):
    from tokenizers import Tokenizer

    path = _tiny_tokenizer(tmp_path, ["Ġt o"])  # "Ġ t" lost, as in the packaged Whisper base's file
    assert Tokenizer.from_file(str(path)).encode(" to", add_special_tokens=False).tokens != ["Ġto"]
    assert encoding_tokenizer(path).encode(" to", add_special_tokens=False).tokens == ["Ġto"]
    # the pair form of merges (newer tokenizer.json files) is repaired the same way
    pairs = _tiny_tokenizer(tmp_path, [["Ġt", "o"]])
    assert encoding_tokenizer(pairs).encode(" to", add_special_tokens=False).tokens == ["Ġto"]


def test_encoding_tokenizer_leaves_a_complete_file_alone(tmp_path):
    path = _tiny_tokenizer(tmp_path, ["Ġ t", "Ġt o"])
    tok = encoding_tokenizer(path)
    assert tok.encode(" to", add_special_tokens=False).tokens == ["Ġto"]
    assert json.loads(tok.to_str())["model"]["merges"] in (["Ġ t", "Ġt o"], [["Ġ", "t"], ["Ġt", "o"]])


def test_word_evidence_columns_sum_each_words_tokens_against_silence():
    lp = np.array([-0.1, -2.0, -0.5, -100.0])  # word 0: one token; word 1: two; word 2: one, all but ruled out
    prior = np.array([-1.0, -3.0, -0.5, -5.0])
    cols = word_evidence_columns(lp, prior, [(0, 1), (1, 3), (3, 4)], 3)
    c = {n: cols[:, k] for k, n in enumerate(WORD_EVIDENCE_NAMES)}
    assert cols.shape == (3, len(WORD_EVIDENCE_NAMES)) and cols.dtype == np.float32
    np.testing.assert_allclose(c["lp_sum"], [-0.1, -2.5, LOGPROB_FLOOR], rtol=1e-6)
    np.testing.assert_allclose(c["pmi_sum"], [0.9, 1.0, LOGPROB_FLOOR + 5.0], rtol=1e-6)
    np.testing.assert_allclose(c["lp_min"], [-0.1, -2.0, LOGPROB_FLOOR], rtol=1e-6)
    np.testing.assert_allclose(c["lp_mean"], [-0.1, -1.25, LOGPROB_FLOOR], rtol=1e-6)
    np.testing.assert_allclose(c["n_tokens"], [1, 2, 1])
    assert np.ptp(c["sent_lp"]) == 0 and c["sent_lp"][0] == pytest.approx((-0.1 - 2.0 - 0.5 + LOGPROB_FLOOR) / 4)


@pytest.mark.parametrize("groups, n_words", [([(0, 1), (1, 3)], 3), ([(0, 2), (2, 2)], 2), ([(0, 1), (1, 5)], 2)])
def test_word_evidence_columns_are_nan_when_the_tokens_do_not_map_onto_the_words(groups, n_words):
    cols = word_evidence_columns(np.zeros(3), np.zeros(3), groups, n_words)
    assert cols.shape == (n_words, len(WORD_EVIDENCE_NAMES)) and np.isnan(cols).all()


# ------------------------------------------------------------------------------ the real Whisper
@pytest.mark.slow
def test_the_packaged_tokenizer_encodes_as_whisper_writes(whisper):
    ids = whisper.encoder_tokenizer.encode(" Go to the shop.", add_special_tokens=False).ids
    pieces = [whisper.tokenizer.decode([i]) for i in ids]
    assert pieces == [" Go", " to", " the", " shop", "."]
    assert [w for w, _, _ in group_words(pieces)] == [" Go", " to", " the", " shop."]


@pytest.mark.slow
def test_real_whisper_scores_the_text_read_above_another(whisper, speech):
    from apa.audio import trim_silence
    from apa.miscues import TEXT_PMI_BELOW

    audio = trim_silence(speech)
    plain = whisper.transcribe(audio)
    scored = whisper.transcribe_against(audio, CLIP_TEXT.split())
    # the same transcript, scored on the same pass
    assert scored.text == plain.text and scored.words == plain.words and plain.reference_pmi is None
    assert scored.reference == tuple(CLIP_TEXT.split())
    assert scored.reference_pmi == pytest.approx(whisper.reference_pmi(audio, CLIP_TEXT.split()), abs=1e-3)
    own = scored.reference_pmi
    other = whisper.reference_pmi(audio, "THE WEATHER IS LOVELY IN SPRING TODAY".split())
    assert own > 0 > other and other < TEXT_PMI_BELOW
    # the prior is kept per text: forgetting it changes nothing but the time
    whisper.forget_priors()
    assert whisper.reference_pmi(audio, CLIP_TEXT.split()) == pytest.approx(own, abs=1e-3)
    assert whisper.reference_pmi(audio, []) is None
    assert whisper.transcribe_against(np.zeros(0, np.float32), CLIP_TEXT.split()).reference_pmi is None


@pytest.mark.slow
def test_real_whisper_word_evidence_marks_the_word_not_said(whisper, speech):
    from apa.audio import trim_silence

    audio = trim_silence(speech)
    said = whisper.word_evidence(audio, CLIP_TEXT.split())
    swapped = whisper.word_evidence(audio, "WE CALL IT LEMONADE".split())
    lp = WORD_EVIDENCE_NAMES.index("lp_mean")
    assert said.shape == (4, len(WORD_EVIDENCE_NAMES)) and np.isfinite(said).all()
    # the words read score as they did; the one not said scores far lower than the one that was
    np.testing.assert_allclose(said[:3, lp], swapped[:3, lp], atol=1e-3)
    assert swapped[3, lp] < said[3, lp] - 2.0
    assert np.isnan(whisper.word_evidence(np.zeros(0, np.float32), CLIP_TEXT.split())).all()


@pytest.mark.slow
def test_loading_a_one_thread_recogniser_leaves_torch_its_threads(whisper):
    import torch

    from apa.transcribe import WhisperTranscriber

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        WhisperTranscriber(whisper.model_dir, threads=1)  # CTranslate2 would set OpenMP's count to 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
