"""Prompt and target tokens: the chat prompt of a clip, and the answer template tokenised piece
by piece.

Training (`apa.sft`) and decoding tokenise the target the same way, one template piece at a
time (`encode_target`), so the model never meets a token boundary at inference that it did not
meet in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from apa.evidence import EvidenceConfig, token_positions
from apa.prompts import MISSING, Reference, Slot, Template, build_prompt, build_prompt_spans


def chat_text(processor: Any, reference: Reference, rubric: str | None = None) -> str:
    """The chat-formatted prompt (audio placeholder + rubric), ending with the assistant turn.

    rubric: the user text after the audio; None: `apa.prompts.build_prompt(reference)`. (A caller
    that adds per-clip text to the prompt passes its own.)"""
    text = build_prompt(reference) if rubric is None else rubric
    conversation = [
        {"role": "user", "content": [{"type": "audio", "audio_url": "clip.wav"}, {"type": "text", "text": text}]}
    ]
    return processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)


def evidence_prompt(
    processor: Any, reference: Reference, evidence: np.ndarray | None, config: EvidenceConfig | None
) -> tuple[str, list[int], list[int]]:
    """The chat prompt (one audio placeholder) of `reference` with its phone evidence
    ((n_phones, F) features, or None), its token ids, and the token position of each phone's
    entry (where its evidence embedding goes). With no config (a model that takes no evidence)
    or no text levels the rubric is the plain `build_prompt(reference)`."""
    levels = config.levels(evidence) if config is not None and config.uses_text and evidence is not None else None
    rubric, spans = build_prompt_spans(reference, levels)
    chat = chat_text(processor, reference, rubric=rubric)
    ids, positions = token_positions(processor.tokenizer, chat, rubric, spans)
    return chat, ids, positions


def end_token_id(tokenizer: Any) -> int:
    """The token that closes the assistant turn (<|im_end|> in ChatML models, else EOS)."""
    tid = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if tid is None or tid == tokenizer.unk_token_id:
        tid = tokenizer.eos_token_id
    return int(tid)


class PieceTokenizer:
    """Tokenises template pieces one at a time, cached: forced text and slot values.

    `pieces(text)` -> token ids (no special tokens); `pieces.end_id`: the end-of-turn token."""

    def __init__(self, tokenizer: Any):
        self.tok = tokenizer
        self._cache: dict[str, tuple[int, ...]] = {}
        self.end_id = end_token_id(tokenizer)

    def __call__(self, text: str) -> tuple[int, ...]:
        ids = self._cache.get(text)
        if ids is None:
            ids = tuple(self.tok.encode(text, add_special_tokens=False))
            self._cache[text] = ids
        return ids


def encode_target(pieces: PieceTokenizer, template: Template, values: Sequence[str]) -> tuple[list[int], list[bool]]:
    """Target token ids (ending with the end-of-turn token) and a loss mask (False = ignore),
    both of the same length.

    values[k] is the text of slot k; MISSING ("-") slots are masked out of the loss.
    """
    ids: list[int] = []
    keep: list[bool] = []
    k = 0
    for part in template:
        if isinstance(part, Slot):
            toks = pieces(values[k])
            keep += [values[k] != MISSING] * len(toks)
            k += 1
        else:
            toks = pieces(part)
            keep += [True] * len(toks)
        ids += toks
    ids.append(pieces.end_id)
    keep.append(True)
    return ids, keep


def forced_until_slot(pieces: PieceTokenizer, template: Template, start: int) -> tuple[list[int], int]:
    """Token ids of the forced text of `template` from part `start` up to the next slot, and
    the index of that slot (len(template) when there is none)."""
    toks: list[int] = []
    i = start
    while i < len(template) and not isinstance(template[i], Slot):
        toks += pieces(template[i])
        i += 1
    return toks, i
