"""apa.transcribe: the reference text's score (`spoken_form`, `encoding_tokenizer`,
`WhisperTranscriber.transcribe_against` / `reference_pmi`), with the real Whisper in slow tests.
Transcription itself and the miscues it feeds are tested in tests/test_reading.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from apa.transcribe import Transcript, encoding_tokenizer, group_words, spoken_form

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
