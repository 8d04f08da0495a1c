"""Supervised fine-tuning examples and the collator (prompt tokens masked with -100).

An example is (audio, reference, target slot values). The collator runs the processor on
the chat prompts (which expands the audio placeholder and computes log-mel features), then
appends the target tokens, built piece by piece exactly as the decoder feeds them
(`apa.decoding.tokens.encode_target`). Labels are -100 on the prompt, on padding and on slots whose
label is missing; the loss is on the target and the end-of-turn token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from apa.audio import SAMPLE_RATE
from apa.data import Record
from apa.decoding.tokens import PieceTokenizer, chat_text, encode_target
from apa.prompts import build_template, format_score, slot_value, slots

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Example:
    audio: np.ndarray  # (n_samples,) float32, 16 kHz
    reference: tuple[tuple[str, tuple[str, ...]], ...]
    values: tuple[str, ...]  # slot texts in template order ("-" = missing label)


def example_from_record(record: Record) -> Example:
    ref = record.reference
    values = tuple(format_score(slot_value(record.labels, s), s.kind) for s in slots(build_template(ref)))
    return Example(record.audio(), ref, values)


class SFTDataset(torch.utils.data.Dataset):
    """Records decoded lazily (Opus decoding is ~ms per clip, fine inside DataLoader workers)."""

    def __init__(self, records: Sequence[Record]):
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Example:
        return example_from_record(self.records[i])


class SFTCollator:
    """Batch of Examples -> model inputs with labels (right padding)."""

    def __init__(self, processor: Any):
        self.processor = processor
        self.tok = processor.tokenizer
        self.pieces = PieceTokenizer(self.tok)
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.pieces.end_id

    def __call__(self, batch: Sequence[Example]) -> dict[str, torch.Tensor]:
        self.tok.padding_side = "right"
        prompts = [chat_text(self.processor, ex.reference) for ex in batch]
        enc = self.processor(text=prompts, audio=[ex.audio for ex in batch], sampling_rate=SAMPLE_RATE, return_tensors="pt", padding=True)
        rows, labels = [], []
        for b, ex in enumerate(batch):
            prompt = enc["input_ids"][b][enc["attention_mask"][b].bool()].tolist()
            target, keep = encode_target(self.pieces, build_template(ex.reference), ex.values)
            rows.append(prompt + target)
            labels.append([IGNORE_INDEX] * len(prompt) + [t if k else IGNORE_INDEX for t, k in zip(target, keep)])
        T = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), T), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), T), dtype=torch.long)
        label_t = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)
        for b, (r, lab) in enumerate(zip(rows, labels)):
            input_ids[b, : len(r)] = torch.tensor(r)
            attention_mask[b, : len(r)] = 1
            label_t[b, : len(lab)] = torch.tensor(lab)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": label_t,
            "input_features": enc["input_features"],
            "feature_attention_mask": enc["feature_attention_mask"],
        }
