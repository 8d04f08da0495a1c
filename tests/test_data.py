"""apa.data: the Kaldi/OpenSLR reader on the local corpus, and the Hugging Face parquet reader."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from apa.data import SPLITS, Record, labels_from_json, load_split, read_hf, read_kaldi
from apa.schema import Assessment, Phone, Sentence, Word

SENTENCE_KEYS = ("accuracy", "fluency", "prosodic", "completeness", "total")


# ---- Kaldi layout (the local corpus) ----------------------------------------------------
@pytest.fixture(scope="module")
def kaldi(so762_dir) -> dict[str, list[Record]]:
    return {split: read_kaldi(so762_dir, split) for split in SPLITS}


@pytest.fixture(scope="module")
def scores_json(so762_dir) -> dict:
    return json.loads((so762_dir / "resource" / "scores.json").read_text(encoding="utf-8"))


def test_split_sizes_and_speakers(kaldi):
    for split in SPLITS:
        recs = kaldi[split]
        assert len(recs) == 2500
        assert len({r.utt_id for r in recs}) == 2500
        assert all(r.split == split for r in recs)
        assert len({r.speaker for r in recs}) == 125
    assert not {r.speaker for r in kaldi["train"]} & {r.speaker for r in kaldi["test"]}
    assert not {r.utt_id for r in kaldi["train"]} & {r.utt_id for r in kaldi["test"]}


def test_speaker_matches_utt2spk(kaldi, so762_dir):
    for split in SPLITS:
        utt2spk = dict(line.split() for line in (so762_dir / split / "utt2spk").read_text().splitlines() if line.strip())
        assert {r.utt_id: r.speaker for r in kaldi[split]} == utt2spk


def test_text_matches_kaldi_text_file(kaldi, so762_dir):
    for split in SPLITS:
        text = {}
        for line in (so762_dir / split / "text").read_text(encoding="utf-8").splitlines():
            if line.strip():
                utt, _, t = line.replace("\t", " ").partition(" ")
                text[utt] = " ".join(t.split())
        for r in kaldi[split]:
            assert r.text == text[r.utt_id]
            assert r.text == " ".join(w.text for w in r.labels.words)


def test_every_word_has_phones_and_audio_exists(kaldi):
    n_words = 0
    for split in SPLITS:
        for r in kaldi[split]:
            assert r.labels.words, r.utt_id
            assert r.labels.model == "labels" and r.labels.repairs == ()
            for w in r.labels.words:
                n_words += 1
                assert w.phones, (r.utt_id, w.text)
                assert all(p.phone and p.phone == p.phone.strip() for p in w.phones)
            assert r.reference == tuple((w.text, w.phone_symbols) for w in r.labels.words)
            assert isinstance(r.audio_source, Path) and r.audio_source.is_file(), r.audio_source
    assert n_words == 31816  # README: 1,804 of 31,816 words lack phone scores


def test_null_phone_scores_are_none_never_zero(kaldi, scores_json):
    total_null = 0
    for split in SPLITS:
        for r in kaldi[split]:
            raw_words = scores_json[r.utt_id]["words"]
            assert len(raw_words) == len(r.labels.words)
            for raw, w in zip(raw_words, r.labels.words):
                assert [p.phone for p in w.phones] == list(raw["phones"])
                if raw.get("phones-accuracy") is None:
                    total_null += 1
                    assert all(p.score is None for p in w.phones), (r.utt_id, w.text)
                else:
                    assert [p.score for p in w.phones] == [float(s) for s in raw["phones-accuracy"]]
                    assert all(p.score is not None for p in w.phones)
    measured = sum(1 for split in SPLITS for r in kaldi[split] for w in r.labels.words if all(p.score is None for p in w.phones))
    assert measured == total_null == 1804


def test_scores_within_range(kaldi):
    for split in SPLITS:
        for r in kaldi[split]:
            s = r.labels.sentence
            for k in SENTENCE_KEYS:
                v = getattr(s, k)
                assert v is not None and 0 <= v <= 10, (r.utt_id, k, v)
            for w in r.labels.words:
                assert w.accuracy is not None and 0 <= w.accuracy <= 10
                assert w.total is not None and 0 <= w.total <= 10
                assert w.stress in (5, 10)
                for p in w.phones:
                    assert p.score is None or 0 <= p.score <= 2


def test_first_train_record(kaldi):
    r = kaldi["train"][0]
    assert r.utt_id == "000010011" and r.speaker == "0001" and r.text == "WE CALL IT BEAR"
    assert r.labels.sentence == Sentence(accuracy=8, fluency=9, prosodic=9, completeness=10, total=7)
    assert r.reference == (("WE", ("W", "IY0")), ("CALL", ("K", "AO0", "L")), ("IT", ("IH0", "T")), ("BEAR", ("B", "EH0", "R")))
    assert [p.score for p in r.labels.phones] == [2.0, 2.0, 2.0, 1.8, 1.8, 2.0, 2.0, None, None, None]


def test_load_split_dispatches_to_kaldi(so762_dir, kaldi):
    recs = load_split(so762_dir, "test")
    assert [r.utt_id for r in recs] == [r.utt_id for r in kaldi["test"]]


def test_bad_split_rejected(so762_dir):
    with pytest.raises(ValueError):
        read_kaldi(so762_dir, "dev")


def test_kaldi_record_audio(kaldi):
    pytest.importorskip("apa.audio")
    x = kaldi["train"][0].audio()
    assert x.dtype == np.float32 and x.ndim == 1
    assert 16000 * 0.5 < len(x) < 16000 * 30
    assert np.isfinite(x).all() and np.abs(x).max() <= 1.0 + 1e-6


# ---- labels_from_json --------------------------------------------------------------------
def test_labels_from_json_uppercases_and_handles_bad_lengths():
    d = {
        "accuracy": 7, "completeness": 9.5, "fluency": 8, "prosodic": 8, "total": 7, "text": "x",
        "words": [
            {"text": "we", "accuracy": 9, "stress": 10, "total": 9, "phones": ["W", "IY0"], "phones-accuracy": [2, 1.6]},
            {"text": "go", "accuracy": 3, "stress": 5, "total": 3, "phones": ["G", "OW0"], "phones-accuracy": [1.0]},
            {"text": "on", "accuracy": None, "stress": None, "total": float("nan"), "phones": ["AA0", "N"]},
        ],
    }
    a = labels_from_json(d)
    assert a.text == "WE GO ON"
    assert a.sentence.completeness == 9.5
    assert [p.score for p in a.words[0].phones] == [2.0, 1.6]
    assert [p.score for p in a.words[1].phones] == [None, None]  # length mismatch: unknown, not 0
    assert [p.score for p in a.words[2].phones] == [None, None]
    assert a.words[2].accuracy is None and a.words[2].total is None  # NaN -> None


# ---- Hugging Face parquet layout ---------------------------------------------------------
def _wav_bytes(seconds: float = 1.0, sr: int = 16000, freq: float = 440.0) -> bytes:
    import soundfile as sf

    t = np.arange(int(seconds * sr)) / sr
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _word(text, acc, stress, total, phones, phone_acc):
    return {
        "text": text,
        "accuracy": acc,
        "stress": stress,
        "total": total,
        "phones": phones,
        "phones-accuracy": phone_acc,
        "mispronunciations": (
            [] if acc >= 7 else [{"canonical-phone": phones[0], "index": 0, "pronounced-phone": "<unk>"}]
        ),
    }


HF_ROWS = {
    "train": [
        dict(
            utt="000010011", text="WE CALL IT BEAR", accuracy=8, completeness=10.0, fluency=9, prosodic=9, total=7,
            speaker="0001", gender="m", age=6,
            words=[
                _word("WE", 10, 10, 10, ["W", "IY0"], [2.0, 2.0]),
                _word("CALL", 10, 10, 10, ["K", "AO0", "L"], [2.0, 1.8, 1.8]),
                _word("IT", 10, 10, 10, ["IH0", "T"], [2.0, 2.0]),
                _word("BEAR", 6, 10, 6, ["B", "EH0", "R"], None),  # no phone scores
            ],
        ),
        dict(
            utt="000010035", text="ZERO THREE", accuracy=3, completeness=8.3, fluency=4, prosodic=5, total=3,
            speaker="0001", gender="m", age=6,
            words=[
                _word("ZERO", 2, 5, 2, ["Z", "IH1", "R", "OW0"], [0.0, 0.4, 1.2, 0.6]),
                _word("THREE", 0, 5, 0, ["TH", "R", "IY1"], [0.0, 0.0, 0.0]),
            ],
        ),
    ],
    "test": [
        dict(
            utt="000030012", text="I SEE", accuracy=9, completeness=10.0, fluency=9, prosodic=8, total=9,
            speaker="0003", gender="f", age=25,
            words=[_word("I", 9, 10, 9, ["AY1"], [1.8]), _word("SEE", 10, 10, 10, ["S", "IY1"], [2.0, 2.0])],
        ),
    ],
}


def _expected(row) -> Assessment:
    words = tuple(
        Word(
            w["text"], w["accuracy"], w["stress"], w["total"],
            tuple(Phone(p, None if w["phones-accuracy"] is None else s)
                  for p, s in zip(w["phones"], w["phones-accuracy"] or [None] * len(w["phones"]))),
        )
        for w in row["words"]
    )
    s = Sentence(**{k: row[k] for k in SENTENCE_KEYS})
    return Assessment(text=row["text"], sentence=s, words=words, model="labels")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    word_t = pa.struct([
        ("accuracy", pa.int64()),
        ("mispronunciations", pa.list_(pa.struct([
            ("canonical-phone", pa.string()), ("index", pa.int64()), ("pronounced-phone", pa.string())]))),
        ("phones", pa.list_(pa.string())),
        ("phones-accuracy", pa.list_(pa.float64())),
        ("stress", pa.int64()),
        ("text", pa.string()),
        ("total", pa.int64()),
    ])
    schema = pa.schema([
        ("accuracy", pa.int64()),
        ("completeness", pa.float64()),
        ("fluency", pa.int64()),
        ("prosodic", pa.int64()),
        ("text", pa.string()),
        ("total", pa.int64()),
        ("words", pa.list_(word_t)),
        ("speaker", pa.string()),
        ("gender", pa.string()),
        ("age", pa.int64()),
        ("audio", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
    ])
    root = tmp_path_factory.mktemp("hf") / "speechocean762"
    (root / "data").mkdir(parents=True)
    audio = {}
    for split, rows in HF_ROWS.items():
        cols = {name: [] for name in schema.names}
        for k, row in enumerate(rows):
            wav = _wav_bytes(freq=220.0 * (k + 1))
            audio[row["utt"]] = wav
            for name in schema.names:
                if name == "audio":
                    cols[name].append({"bytes": wav, "path": f"{row['utt']}.wav"})
                else:
                    cols[name].append(row[name])
        pq.write_table(pa.table(cols, schema=schema), root / "data" / f"{split}-00000-of-00001.parquet")
    return root, audio


@pytest.mark.parametrize("split", SPLITS)
def test_read_hf_labels_equal_written(hf_dir, split):
    root, audio = hf_dir
    recs = read_hf(root, split)
    rows = HF_ROWS[split]
    assert len(recs) == len(rows)
    for rec, row in zip(recs, rows):
        assert rec.utt_id == row["utt"]
        assert rec.speaker == row["speaker"]
        assert rec.split == split
        assert rec.text == row["text"]
        assert rec.labels == _expected(row)
        assert rec.audio_source == audio[row["utt"]]
        assert rec.reference == tuple((w["text"], tuple(w["phones"])) for w in row["words"])


def test_read_hf_keeps_missing_phone_scores_as_none(hf_dir):
    root, _ = hf_dir
    rec = read_hf(root, "train")[0]
    bear = rec.labels.words[3]
    assert bear.text == "BEAR" and [p.score for p in bear.phones] == [None, None, None]
    assert rec.labels.words[2].phones[0].score == 2.0
    # a zero score stays a zero
    assert [p.score for p in read_hf(root, "train")[1].labels.words[1].phones] == [0.0, 0.0, 0.0]


def test_read_hf_same_labels_type_as_kaldi(hf_dir):
    root, _ = hf_dir
    rec = read_hf(root, "train")[0]
    assert rec.labels.sentence.completeness == 10.0
    assert isinstance(rec.labels.sentence.accuracy, float)
    assert all(isinstance(p.score, float) for p in rec.labels.words[0].phones)


def test_load_split_dispatches_to_parquet(hf_dir):
    root, _ = hf_dir
    assert [r.utt_id for r in load_split(root, "test")] == ["000030012"]


def test_read_hf_missing_split_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_hf(tmp_path, "train")


def test_hf_audio_bytes_decode_with_soundfile(hf_dir):
    import soundfile as sf

    root, _ = hf_dir
    x, sr = sf.read(io.BytesIO(read_hf(root, "train")[0].audio_source), dtype="float32")
    assert sr == 16000 and x.shape == (16000,)


def test_hf_record_audio(hf_dir):
    pytest.importorskip("apa.audio")
    root, _ = hf_dir
    x = read_hf(root, "train")[0].audio()
    assert x.dtype == np.float32 and x.shape == (16000,)
    assert 0.25 < np.abs(x).max() < 0.35
