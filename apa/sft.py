"""Supervised fine-tuning examples and the collator (prompt tokens masked with -100).

An example is (audio, reference, target slot values, optional phone evidence). The collator
runs the processor on the chat prompts (which expands the audio placeholder and computes
log-mel features), then appends the target tokens, built piece by piece exactly as the decoder
feeds them (`apa.decoding.tokens.encode_target`). Labels are -100 on the prompt, on padding and on slots
whose label is missing; the loss is on the target and the end-of-turn token.

With an `EvidenceConfig` (apa.evidence) the prompt carries each phone's match level ("text")
and/or the batch carries each phone's features and prompt position ("embedding"), which
`EvidenceHook` adds to the input embeddings through the trained projector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Trainer

from apa.audio import SAMPLE_RATE
from apa.data import Record
from apa.evidence import EvidenceConfig, EvidenceProjector
from apa.decoding.tokens import PieceTokenizer, encode_target, evidence_prompt
from apa.prompts import MISSING, Slot, build_template, format_score, slot_value, slots

BALANCED_KINDS = ("phone", "word.accuracy", "word.total")  # slots whose labels are mostly perfect

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Example:
    audio: np.ndarray  # (n_samples,) float32, 16 kHz
    reference: tuple[tuple[str, tuple[str, ...]], ...]
    values: tuple[str, ...]  # slot texts in template order ("-" = missing label)
    evidence: np.ndarray | None = None  # (n_phones, F) alignment features, NaN rows = unknown


def example_values(record: Record) -> tuple[str, ...]:
    """The record's slot texts in template order ("-" = missing label)."""
    return tuple(format_score(slot_value(record.labels, s), s.kind) for s in slots(build_template(record.reference)))


def example_from_record(record: Record, evidence: np.ndarray | None = None) -> Example:
    return Example(record.audio(), record.reference, example_values(record), evidence)


class SFTDataset(torch.utils.data.Dataset):
    """Records decoded lazily (Opus decoding is ~ms per clip, fine inside DataLoader workers).

    evidence: utterance id -> (n_phones, F) features (`apa.align.load_corpus_features`); an
    utterance missing from it gets NaN features (what a failed alignment gives at inference)."""

    def __init__(self, records: Sequence[Record], evidence: dict[str, np.ndarray] | None = None, n_features: int = 0):
        self.records = list(records)
        self.evidence = evidence
        self.n_features = n_features

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Example:
        rec = self.records[i]
        ev = None
        if self.evidence is not None:
            n = sum(len(p) for _, p in rec.reference)
            ev = self.evidence.get(rec.utt_id)
            if ev is None or len(ev) != n:
                ev = np.full((n, self.n_features), np.nan, dtype=np.float32)
        return example_from_record(rec, ev)




def balanced_slot_weights(examples_values: Sequence[tuple[str, ...]], template_kinds: Sequence[Sequence[str]],
                          alpha: float, cap: float = 8.0, preserve_mass: bool = False) -> dict[str, dict[str, float]]:
    """Loss weight per (slot kind, value) for BALANCED_KINDS: (count of the commonest value /
    count of this value) ** alpha, capped. Most phone and word labels are perfect, so without
    weighting the model learns the prior; alpha 0 gives every slot weight 1.

    preserve_mass: divide each kind's weights by their mean over the training slots, so that the
    kind's total weight (and so its share of the loss against the sentence slots, which the
    normalised loss would otherwise shrink) is what it was unweighted.

    examples_values: per example, its slot texts; template_kinds: per example, its slot kinds."""
    counts: dict[str, dict[str, int]] = {k: {} for k in BALANCED_KINDS}
    for values, kinds in zip(examples_values, template_kinds):
        for v, k in zip(values, kinds):
            if k in counts and v != MISSING:
                counts[k][v] = counts[k].get(v, 0) + 1
    out = {}
    for k, c in counts.items():
        top = max(c.values(), default=1)
        w = {v: float(min(cap, (top / n) ** alpha)) for v, n in c.items()}
        if preserve_mass and c:
            mean = sum(w[v] * n for v, n in c.items()) / sum(c.values())
            w = {v: x / mean for v, x in w.items()}
        out[k] = w
    return out


def phone_targets(template, values: Sequence[str]) -> list[float]:
    """The phone slots' labels in reference order on 0-1 (slot text / 10; NaN where missing)."""
    out = []
    k = 0
    for part in template:
        if isinstance(part, Slot):
            if part.kind == "phone":
                out.append(float("nan") if values[k] == MISSING else float(values[k]) / 10.0)
            k += 1
    return out


def target_weights(pieces: PieceTokenizer, template, values: Sequence[str], weights: dict[str, dict[str, float]]) -> list[float]:
    """Per target token (as `encode_target` lays them out, end token included), its loss weight:
    a slot's tokens get its (kind, value) weight, forced text 1."""
    out: list[float] = []
    k = 0
    for part in template:
        if isinstance(part, Slot):
            w = weights.get(part.kind, {}).get(values[k], 1.0)
            out += [w] * len(pieces(values[k]))
            k += 1
        else:
            out += [1.0] * len(pieces(part))
    return out + [1.0]


class SFTCollator:
    """Batch of Examples -> model inputs with labels (right padding).

    slot_weights (`balanced_slot_weights`): adds `loss_weights` (B, T) for a weighted loss."""

    def __init__(self, processor: Any, evidence: EvidenceConfig | None = None,
                 slot_weights: dict[str, dict[str, float]] | None = None):
        self.processor = processor
        self.evidence = evidence
        self.slot_weights = slot_weights
        self.tok = processor.tokenizer
        self.pieces = PieceTokenizer(self.tok)
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.pieces.end_id

    def __call__(self, batch: Sequence[Example]) -> dict[str, torch.Tensor]:
        self.tok.padding_side = "right"
        prompts, positions = [], []
        for ex in batch:
            chat, _, pos = evidence_prompt(self.processor, ex.reference, ex.evidence, self.evidence)
            prompts.append(chat)
            positions.append(pos)
        enc = self.processor(text=prompts, audio=[ex.audio for ex in batch], sampling_rate=SAMPLE_RATE, return_tensors="pt", padding=True)
        rows, labels, weights = [], [], []
        audio_id = self.tok.convert_tokens_to_ids(getattr(self.processor, "audio_token", "<|AUDIO|>"))
        for b, ex in enumerate(batch):
            prompt = enc["input_ids"][b][enc["attention_mask"][b].bool()].tolist()
            # positions were found in the prompt with one audio placeholder: shift past the expansion
            at, n_audio = prompt.index(audio_id), prompt.count(audio_id)
            positions[b] = [p + n_audio - 1 if p > at else p for p in positions[b]]
            template = build_template(ex.reference)
            target, keep = encode_target(self.pieces, template, ex.values)
            if self.slot_weights is not None:
                weights.append([1.0] * len(prompt) + target_weights(self.pieces, template, ex.values, self.slot_weights))
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
        out = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": label_t,
            "input_features": enc["input_features"],
            "feature_attention_mask": enc["feature_attention_mask"],
        }
        if self.slot_weights is not None:
            w = torch.ones((len(rows), T), dtype=torch.float32)
            for b, row in enumerate(weights):
                w[b, : len(row)] = torch.tensor(row)
            out["loss_weights"] = w
        if self.evidence is not None and self.evidence.uses_embedding:
            P = max(len(p) for p in positions)
            feats = torch.full((len(batch), P, self.evidence.n_features), float("nan"))
            pos_t = torch.full((len(batch), P), -1, dtype=torch.long)
            for b, (ex, pos) in enumerate(zip(batch, positions)):
                pos_t[b, : len(pos)] = torch.tensor(pos, dtype=torch.long)
                if ex.evidence is not None:
                    feats[b, : len(pos)] = torch.as_tensor(ex.evidence, dtype=torch.float32)
            out["evidence_features"], out["evidence_positions"] = feats, pos_t
            if self.evidence.aux_weight > 0:
                targets = torch.full((len(batch), P), float("nan"))
                for b, ex in enumerate(batch):
                    t = phone_targets(build_template(ex.reference), ex.values)
                    targets[b, : len(t)] = torch.tensor(t, dtype=torch.float32)
                out["evidence_targets"] = targets
        return out


class EvidenceHook:
    """Adds `projector(features)` to the input embeddings at the phones' prompt positions.

    A forward hook on the model's input-embedding module: the caller sets `pending` to
    (features (B, P, F), positions (B, P), -1 = none) for one forward and clears it after.
    Works for training (through the model's own forward) and leaves other calls untouched.
    Each utterance's phones go through the projector together (a projector with context layers
    sees only its own utterance); its label predictions, if it makes any, are kept in `aux`
    ((B, P), NaN where no phone) for the trainer's auxiliary loss."""

    def __init__(self, model: Any, projector: EvidenceProjector):
        self.projector = projector
        self.pending: tuple[torch.Tensor, torch.Tensor] | None = None
        self.aux: torch.Tensor | None = None
        self.handle = model.get_input_embeddings().register_forward_hook(self._add)

    def _add(self, module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
        if self.pending is None or output.dim() != 3:
            return output
        feats, pos = self.pending
        if output.shape[0] != pos.shape[0]:
            return output
        dev = output.device
        rows, cols, deltas, aux = [], [], [], []
        for b in range(pos.shape[0]):
            p = (pos[b] >= 0).nonzero(as_tuple=True)[0]
            if not len(p):
                continue
            delta, pred = self.projector.forward_with_aux(feats[b, p].to(dev))  # (n, H), (n,) | None
            rows.append(torch.full((len(p),), b, dtype=torch.long, device=dev))
            cols.append(pos[b, p].to(dev))
            deltas.append(delta)
            if pred is not None:
                aux.append((b, p, pred))
        if aux:
            self.aux = torch.full(pos.shape, float("nan"), device=dev)
            for b, p, pred in aux:
                self.aux = self.aux.index_put((torch.full_like(p, b).to(dev), p.to(dev)), pred.float())
        if not deltas:
            return output
        return output.index_put((torch.cat(rows), torch.cat(cols)), torch.cat(deltas).to(output.dtype), accumulate=True)

    def remove(self) -> None:
        self.handle.remove()


class EvidenceTrainer(Trainer):
    """transformers' Trainer that hands each batch's evidence (collator keys `evidence_features`,
    `evidence_positions`) to an `EvidenceHook` for the forward, instead of to the model; with
    `evidence_targets` it adds aux_weight x the mean squared error of the projector's label
    predictions (phones with a label only)."""

    def __init__(self, *args: Any, evidence_hook: EvidenceHook | None = None, aux_weight: float = 0.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.evidence_hook = evidence_hook
        self.aux_weight = aux_weight

    def compute_loss(self, model: Any, inputs: dict, return_outputs: bool = False, **kwargs: Any):
        feats, pos = inputs.pop("evidence_features", None), inputs.pop("evidence_positions", None)
        targets = inputs.pop("evidence_targets", None)
        weights = inputs.pop("loss_weights", None)
        hook = self.evidence_hook
        if hook is not None and feats is not None:
            hook.pending, hook.aux = (feats, pos), None
        try:
            if weights is None:
                out = super().compute_loss(model, inputs, return_outputs=True, **kwargs)
            else:
                out = weighted_loss(model, inputs, weights)
            loss, outputs = out
            if hook is not None and hook.aux is not None and targets is not None and self.aux_weight > 0:
                loss = loss + self.aux_weight * aux_loss(hook.aux, targets.to(hook.aux.device))
            return (loss, outputs) if return_outputs else loss
        finally:
            if hook is not None:
                hook.pending = hook.aux = None


def aux_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the entries where both are finite; pred, target: (B, P)."""
    ok = torch.isfinite(pred) & torch.isfinite(target)
    if not ok.any():
        return pred.new_zeros(())
    return F.mse_loss(pred[ok], target[ok])


def weighted_loss(model: Any, inputs: dict, weights: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """Next-token cross-entropy with a weight per target token: sum(w * ce) / sum(w) over the
    tokens whose label is not -100. weights: (B, T), aligned with inputs["labels"]."""
    labels = inputs.pop("labels")
    outputs = model(**inputs)
    logits = outputs.logits[:, :-1].float()  # (B, T-1, V): position t predicts token t+1
    target, w = labels[:, 1:], weights[:, 1:].to(logits.device)
    ce = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE_INDEX, reduction="none")
    w = w * (target != IGNORE_INDEX)
    return (ce * w).sum() / w.sum().clamp(min=1e-8), outputs
