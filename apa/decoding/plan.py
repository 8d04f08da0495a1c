"""The audio-independent part of decoding a clip: its prompt tokens, the answer template's
forced tokens and slots, and which vocabulary columns the decoder reads (`Plan`), built and
cached by a `Planner`.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from apa.decoding.tokens import PieceTokenizer, chat_text, evidence_prompt
from apa.evidence import EvidenceConfig
from apa.decoding.trie import Trie, build_trie
from apa.prompts import Reference, Slot, build_template

# How to read a slot from the read columns: (first-token columns, [(position in first, probe
# token, [(value index, column)])], [(value index, position in first)] of single-branch first tokens)
SlotSpec = tuple[list[int], list[tuple[int, int, list[tuple[int, int]]]], list[tuple[int, int]]]
PLAN_CACHE_SIZE = 256  # plans kept (least recently used dropped)


@dataclass
class Plan:
    """Everything about one clip's decode that does not depend on its audio."""

    prompt_ids: list[int]  # chat prompt token ids with a single <|AUDIO|> placeholder
    audio_at: int  # index of that placeholder
    slots: list[Slot]
    tries: list[Trie]
    forced: list[list[int]]  # forced[k]: tokens before slot k; forced[-1]: after the last slot
    end_tok: list[int]  # first token after slot k's value (the "end of value" token of the probe)
    value_toks: list[list[tuple[int, ...]]]  # per slot, the tokens of each value
    cols: list[int]  # vocabulary ids whose logits are read (see plan_cols)
    specs: list[SlotSpec]  # per slot, how to read them
    phone_pos: tuple[int, ...] = ()  # prompt position of each reference phone's entry (phone evidence)

    @property
    def template_tokens(self) -> int:
        """Tokens of the answer with the longest value in every slot."""
        return sum(len(f) for f in self.forced) + sum(max(len(v) for v in vt) for vt in self.value_toks)

    @functools.cached_property
    def max_decode_tokens(self) -> int:
        """Cache entries decoding may need after the prompt: the template, every probe as a side
        token, and one more."""
        return self.template_tokens + sum(len(t.probe_tokens) for t in self.tries) + 1


def plan_cols(plan_tries: Sequence[Trie], end_toks: Sequence[int]) -> tuple[list[int], list[SlotSpec]]:
    """The vocabulary columns the decoder ever reads, and per slot how to read them (`SlotSpec`,
    column indices into the returned list).

    Slot values are renormalised over the allowed set, so only the logits of allowed first tokens,
    of the probe's second tokens and of the end token matter: the LM head runs on those columns."""
    vocab: dict[int, int] = {}

    def col(t: int) -> int:
        return vocab.setdefault(t, len(vocab))

    specs: list[SlotSpec] = []
    seen: dict[tuple[int, int], SlotSpec] = {}  # (trie, end token) -> spec: slots repeat a few of them
    firsts: dict[int, list[int]] = {}  # trie -> its first-token columns
    for trie, end in zip(plan_tries, end_toks):
        spec = seen.get((id(trie), end))
        if spec is None:
            first_cols = firsts.get(id(trie))
            if first_cols is None:
                first_cols = firsts[id(trie)] = [col(t) for t in trie.first]
            singles, probes = [], []
            for pos, t in enumerate(trie.first):
                branch = trie.branches[t]
                if len(branch) == 1:
                    singles.append((branch[0][0], pos))
                else:
                    probes.append((pos, t, [(i, col(end if s is None else s)) for i, s in branch]))
            spec = seen[(id(trie), end)] = (first_cols, probes, singles)
        specs.append(spec)
    return list(vocab), specs


class Planner:
    """Builds `Plan`s for one model's processor, caching tries (per value set) and plans (per
    reference and prompt tokens: a clip whose prompt carries its own text gets its own plan)."""

    def __init__(self, processor: Any, audio_token_id: int, pieces: PieceTokenizer | None = None):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.pieces = pieces or PieceTokenizer(self.tokenizer)
        self.audio_token_id = int(audio_token_id)
        self._tries: dict[tuple[str, ...], Trie] = {}
        self._plans: dict[tuple, Plan] = {}  # LRU: dicts keep insertion order
        self._lock = threading.Lock()

    def trie(self, values: tuple[str, ...]) -> Trie:
        """The (cached) trie of a slot's values."""
        trie = self._tries.get(values)
        if trie is None:
            trie = self._tries[values] = build_trie(values, self.pieces)
        return trie

    def prompt_ids(self, references: Sequence[Reference], prompts: Sequence[str] | None = None) -> list[list[int]]:
        """Token ids of the chat prompts (one tokenizer call for all). prompts: the chat texts
        when the caller built them (`chat_text`); None: the default prompt of each reference."""
        texts = list(prompts) if prompts is not None else [chat_text(self.processor, r) for r in references]
        return [list(i) for i in self.tokenizer(texts)["input_ids"]] if texts else []

    def plan(self, reference: Reference, prompt_ids: Sequence[int] | None = None, phone_pos: Sequence[int] = ()) -> Plan:
        """The plan of decoding `reference` after the chat prompt `prompt_ids` (None: the default
        prompt of the reference, tokenised here); phone_pos: where each phone's entry is in it
        (for evidence embeddings; a function of the prompt, so the cache key need not hold it)."""
        if prompt_ids is None:
            prompt_ids = self.prompt_ids([reference])[0]
        prompt_ids = list(prompt_ids)
        key = (tuple((w, tuple(p)) for w, p in reference), tuple(prompt_ids))
        with self._lock:
            plan = self._plans.pop(key, None)
        if plan is None:
            plan = self._build(reference, prompt_ids, tuple(phone_pos))
        with self._lock:
            self._plans[key] = plan
            while len(self._plans) > PLAN_CACHE_SIZE:
                self._plans.pop(next(iter(self._plans)))
        return plan

    def plans(self, references: Sequence[Reference], prompts: Sequence[str] | None = None) -> list[Plan]:
        """`plan` of each reference, the prompts tokenised in one call."""
        ids = self.prompt_ids(references, prompts)
        return [self.plan(r, i) for r, i in zip(references, ids)]

    def evidence_plans(self, references: Sequence[Reference], evidence: Sequence[np.ndarray | None],
                       config: EvidenceConfig) -> list[Plan]:
        """Plans of clips whose prompt carries their phone evidence (`evidence_prompt`)."""
        out = []
        for r, e in zip(references, evidence):
            _, ids, pos = evidence_prompt(self.processor, r, e, config)
            out.append(self.plan(r, ids, pos))
        return out

    def _build(self, reference: Reference, prompt_ids: list[int], phone_pos: tuple[int, ...] = ()) -> Plan:
        if prompt_ids.count(self.audio_token_id) != 1:
            audio_tok = getattr(self.processor, "audio_token", "<|AUDIO|>")
            raise ValueError(f"the chat prompt must hold exactly one {audio_tok} placeholder")
        forced: list[list[int]] = [[]]
        slots_: list[Slot] = []
        for part in build_template(reference):
            if isinstance(part, Slot):
                slots_.append(part)
                forced.append([])
            else:
                forced[-1] += self.pieces(part)
        tries = [self.trie(sl.values) for sl in slots_]
        end_tok = [forced[k + 1][0] if forced[k + 1] else self.pieces.end_id for k in range(len(slots_))]
        cols, specs = plan_cols(tries, end_tok)
        return Plan(prompt_ids=prompt_ids, audio_at=prompt_ids.index(self.audio_token_id), slots=slots_,
                    tries=tries, forced=forced, end_tok=end_tok, cols=cols, specs=specs,
                    value_toks=[t.value_toks for t in tries], phone_pos=phone_pos)
