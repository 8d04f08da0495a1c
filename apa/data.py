"""Speechocean762 readers: the Kaldi/OpenSLR layout and the Hugging Face parquet layout.

Both give the same `Record`: utterance id, speaker, split, lazily decoded 16 kHz mono float32
audio, and the expert labels as an `Assessment` (reference text, words with canonical CMU
phones, all scores). Missing phone scores (`phones-accuracy: null` in the Dec-2020 snapshot)
stay `None`.

Layouts:

    Kaldi (OpenSLR SLR101, ../shared/speechocean762):
        {train,test}/wav.scp, text, utt2spk ; resource/scores.json ; WAVE/SPEAKERxxxx/*.WAV|.opus
    Hugging Face (mispeech/speechocean762):
        data/{train,test}-*.parquet with columns audio{bytes,path}, text, accuracy,
        completeness, fluency, prosodic, total, words[{text, accuracy, stress, total,
        phones, phones-accuracy, ...}], speaker, ...
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from apa.schema import Assessment, Phone, Sentence, Word

SPLITS = ("train", "test")
HF_DATASET_ID = "mispeech/speechocean762"
LABEL_SNAPSHOT = "speechocean762 (Dec-2020 annotation snapshot)"


@dataclass(frozen=True)
class Record:
    """One utterance: identity, audio source (decoded on demand) and expert labels."""

    utt_id: str
    speaker: str
    split: str
    labels: Assessment
    audio_source: Path | bytes

    @property
    def text(self) -> str:
        return self.labels.text

    @property
    def reference(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """((word, phones), ...) of the reference text."""
        return tuple((w.text, w.phone_symbols) for w in self.labels.words)

    def audio(self) -> np.ndarray:
        """(n_samples,) float32 at 16 kHz, untrimmed (the labels describe the whole clip)."""
        from apa.audio import decode, to_mono_16k

        samples, sr = decode(self.audio_source)
        return to_mono_16k(samples, sr)


def labels_from_json(d: dict[str, Any]) -> Assessment:
    """`scores.json` entry (or an HF row's label columns) -> Assessment."""
    words = []
    for w in d["words"]:
        phones = tuple(w["phones"])
        scores = w.get("phones-accuracy")
        if scores is None or len(scores) != len(phones):
            scores = [None] * len(phones)
        words.append(
            Word(
                text=w["text"].upper(),
                accuracy=_num(w.get("accuracy")),
                stress=_num(w.get("stress")),
                total=_num(w.get("total")),
                phones=tuple(Phone(p, _num(s)) for p, s in zip(phones, scores)),
            )
        )
    sentence = Sentence(**{k: _num(d.get(k)) for k in ("accuracy", "fluency", "prosodic", "completeness", "total")})
    return Assessment(text=" ".join(w.text for w in words), sentence=sentence, words=tuple(words), model="labels")


def _num(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if np.isnan(v) else v


# ---- Kaldi / OpenSLR layout -------------------------------------------------------------
def _read_table(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            key, _, value = line.strip().partition(" ") if "\t" not in line else line.strip().partition("\t")
            out[key] = value.strip()
    return out


def read_kaldi(root: str | os.PathLike, split: str) -> list[Record]:
    """Records of one split from the Kaldi layout (scores in resource/scores.json)."""
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    scores = json.loads((root / "resource" / "scores.json").read_text(encoding="utf-8"))
    wav = _read_table(root / split / "wav.scp")
    spk = _read_table(root / split / "utt2spk")
    records = []
    for utt, rel in wav.items():
        path = Path(rel)
        if not path.is_absolute():
            path = root / path
        if not path.exists():  # OpenSLR .WAV vs this copy's .opus
            for ext in (".WAV", ".wav", ".opus", ".flac"):
                if path.with_suffix(ext).exists():
                    path = path.with_suffix(ext)
                    break
        records.append(Record(utt, spk.get(utt, utt[:4]), split, labels_from_json(scores[utt]), path))
    return records


# ---- Hugging Face parquet layout --------------------------------------------------------
def read_parquet(files: Sequence[str | os.PathLike], split: str) -> list[Record]:
    """Records from parquet files with the columns of `mispeech/speechocean762`."""
    import pyarrow.parquet as pq

    records = []
    for f in files:
        table = pq.read_table(f)
        for i, row in enumerate(table.to_pylist()):
            audio = row["audio"]
            data = audio.get("bytes") if isinstance(audio, dict) else audio
            utt = Path((audio.get("path") or "") if isinstance(audio, dict) else "").stem or f"{Path(f).stem}-{i}"
            records.append(Record(utt, str(row.get("speaker", utt[:4])), split, labels_from_json(row), data))
    return records


def read_hf(source: str | os.PathLike, split: str) -> list[Record]:
    """Parquet layout from a local snapshot directory or, when online, a Hub dataset id."""
    path = Path(source)
    if not path.exists():
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(str(source), repo_type="dataset", allow_patterns=[f"*{split}*.parquet"]))
    files = sorted(p for p in path.rglob("*.parquet") if split in p.name)
    if not files:
        raise FileNotFoundError(f"no {split} parquet files under {path}")
    return read_parquet(files, split)


def load_split(source: str | os.PathLike, split: str) -> list[Record]:
    """Any layout: a Kaldi root (has resource/scores.json), a parquet folder, or a Hub id."""
    path = Path(source)
    if (path / "resource" / "scores.json").is_file():
        return read_kaldi(path, split)
    return read_hf(source, split)


def iter_records(source: str | os.PathLike, splits: Sequence[str] = SPLITS) -> Iterator[Record]:
    for split in splits:
        yield from load_split(source, split)
