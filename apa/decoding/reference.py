"""The reference decoder: step-by-step constrained decoding through the model's own forward.

What the fast path (`apa.decoding.speculative`) must reproduce: the processor pads the audio to
30 s, the full model runs the encoder on 3000 frames (padding masked) and the LLM prefill with
the LM head on every position, then one forward per stretch of forced text and one per probe
token, batched over clips (right-padded, pads masked). Slow; kept as the yardstick
(tests/test_fast_inference.py, bench/check_fast_vs_naive.py) and selected by
`DecodeOptions(fast=False)`.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

import numpy as np
import torch

from apa.decoding.tokens import PieceTokenizer, chat_text, forced_until_slot
from apa.decoding.trie import SlotReading, Trie, value_probs
from apa.prompts import Reference, Slot, build_template


class ReferenceDecoder:
    """Step-by-step decoding of a batch of clips with the model's own (transformers) forward.

    model: a Qwen2AudioForConditionalGeneration; trie(values): the trie of a slot's values."""

    def __init__(self, model: Any, processor: Any, pieces: PieceTokenizer, trie: Callable[[tuple[str, ...]], Trie]):
        self.model, self.processor, self.pieces, self.trie = model, processor, pieces, trie
        tok = processor.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else pieces.end_id

    def read(
        self, audios: Sequence[np.ndarray], references: Sequence[Reference], stats: MutableMapping[str, int],
        prompts: Sequence[str] | None = None,
    ) -> list[list[SlotReading]]:
        """Per clip ((n_samples,) float32 at 16 kHz), the readings of every slot in template order.
        prompts: the chat texts (None: `chat_text` of each reference). Adds to `stats` (forwards,
        llm_tokens, slots)."""
        from apa.audio import SAMPLE_RATE

        dev = next(self.model.parameters()).device
        B = len(audios)
        templates = [build_template(r) for r in references]
        texts = list(prompts) if prompts is not None else [chat_text(self.processor, r) for r in references]
        inputs = self.processor(
            text=texts, audio=[np.asarray(a, dtype=np.float32) for a in audios], sampling_rate=SAMPLE_RATE,
            return_tensors="pt", padding=True,
        ).to(dev)
        mask = inputs["attention_mask"]
        pos = mask.long().cumsum(-1) - 1
        out = self.model(
            input_ids=inputs["input_ids"], attention_mask=mask, position_ids=pos.clamp(min=0),
            input_features=inputs["input_features"].to(self.model.dtype),
            feature_attention_mask=inputs["feature_attention_mask"], use_cache=True,
        )
        stats["forwards"] += 1
        stats["llm_tokens"] += int(mask.numel())
        cache = out.past_key_values
        next_pos = mask.sum(-1).long()  # (B,) position of the next token per row
        feeds: list[list[int]] = []  # per row, the tokens the next step feeds
        cursors = [0] * B  # per row, index into its template
        for b, t in enumerate(templates):
            toks, cursors[b] = forced_until_slot(self.pieces, t, 0)
            feeds.append(toks)
        readings: list[list[SlotReading]] = [[] for _ in range(B)]
        while any(feeds):
            logits, mask, next_pos = self._step(feeds, cache, mask, next_pos, stats)  # (B, vocab) at last fed token
            logp = torch.log_softmax(logits.float(), -1)
            at_slot = [b for b in range(B)
                       if feeds[b] and cursors[b] < len(templates[b]) and isinstance(templates[b][cursors[b]], Slot)]
            tries = {b: self.trie(templates[b][cursors[b]].values) for b in at_slot}
            probe_lp = self._probes(at_slot, tries, cache, mask, next_pos, stats)
            new_feeds: list[list[int]] = [[] for _ in range(B)]
            for b in at_slot:
                slot = templates[b][cursors[b]]
                forced, cursors[b] = forced_until_slot(self.pieces, templates[b], cursors[b] + 1)
                end_tok = forced[0] if forced else self.pieces.end_id
                probs = value_probs(tries[b], logp[b], probe_lp[b], end_tok)
                readings[b].append(SlotReading(slot.kind, slot.values, probs))
                stats["slots"] += 1
                chosen = slot.values[int(np.argmax(probs))]
                # after the last slot there is nothing more to decode for this row
                new_feeds[b] = list(self.pieces(chosen)) + forced if cursors[b] < len(templates[b]) else []
            feeds = new_feeds
        return readings

    def _probes(
        self, at_slot: list[int], tries: dict[int, Trie], cache: Any, mask: torch.Tensor, next_pos: torch.Tensor,
        stats: MutableMapping[str, int],
    ) -> dict[int, dict[int, torch.Tensor]]:
        """Row -> probe token -> (vocab,) log-probs after it: one step per distinct probe token
        (usually just "1"), each rolled back out of the cache."""
        B = mask.shape[0]
        probe_lp: dict[int, dict[int, torch.Tensor]] = {b: {} for b in at_slot}
        for t in sorted({t for b in at_slot for t in tries[b].probe_tokens}):
            rows = [b for b in at_slot if t in tries[b].probe_tokens]
            pl, _, _ = self._step([[t] if b in rows else [] for b in range(B)], cache, mask, next_pos, stats)
            cache.crop(-1)  # roll the probe token back out of the KV cache
            plp = torch.log_softmax(pl.float(), -1)
            for b in rows:
                probe_lp[b][t] = plp[b]
        return probe_lp

    def _step(
        self, feeds: list[list[int]], cache: Any, mask: torch.Tensor, next_pos: torch.Tensor,
        stats: MutableMapping[str, int],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Feed a ragged batch of token lists (right-padded, pads masked) through the LLM.

        Returns (logits at each row's last fed token (B, vocab), the grown mask, next positions (B,))."""
        dev = mask.device
        B = len(feeds)
        T = max(1, max(len(f) for f in feeds))
        ids = torch.full((B, T), self.pad_id, dtype=torch.long, device=dev)
        new_mask = torch.zeros((B, T), dtype=mask.dtype, device=dev)
        for b, f in enumerate(feeds):
            if f:
                ids[b, : len(f)] = torch.tensor(f, device=dev)
                new_mask[b, : len(f)] = 1
        positions = next_pos[:, None] + torch.arange(T, device=dev)[None, :]
        full_mask = torch.cat([mask, new_mask], dim=1)
        out = self.model(input_ids=ids, attention_mask=full_mask, position_ids=positions, past_key_values=cache,
                         use_cache=True)
        stats["forwards"] = stats.get("forwards", 0) + 1
        stats["llm_tokens"] = stats.get("llm_tokens", 0) + B * T
        lens = torch.tensor([len(f) for f in feeds], device=dev)
        last = (lens - 1).clamp(min=0)
        logits = out.logits[torch.arange(B, device=dev), last]
        return logits, full_mask, next_pos + lens
