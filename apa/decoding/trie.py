"""Slot values as token tries, and what a slot reads.

A slot's values ("0" ... "10", or "5"/"10" for stress) may span two tokens ("10" = "1" "0" with
digit-splitting tokenizers). The trie is at most two tokens deep: P(value) is P(first token)
at the slot, times, where a first token both ends a value and continues into another, the
probe's P(second token | first) against P(end of slot), "end" being the first token of the
forced text after the slot.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch

from apa.decoding.tokens import PieceTokenizer


@dataclass(frozen=True)
class SlotReading:
    """The model's distribution over one slot's allowed values.

    kind: the slot kind ("sentence.accuracy", "word.stress", "phone", ...); values: the value
    strings; probs: (n_values,) float64, summing to 1."""

    kind: str
    values: tuple[str, ...]
    probs: np.ndarray

    @property
    def greedy(self) -> float:
        """The argmax value: what greedy decoding under the grammar emits."""
        return float(self.values[int(np.argmax(self.probs))])

    @property
    def expected(self) -> float:
        """The probability-weighted mean value (continuous; ranks better than `greedy`)."""
        return float(np.dot(self.probs, np.array([float(v) for v in self.values])))


@dataclass
class Trie:
    """Values of a slot as token sequences of length 1 or 2."""

    values: tuple[str, ...]
    first: list[int]  # distinct first tokens, in value order
    # first token -> [(value index, second token or None)]
    branches: dict[int, list[tuple[int, int | None]]] = field(default_factory=dict)
    value_toks: list[tuple[int, ...]] = field(default_factory=list)  # the tokens of each value

    @functools.cached_property
    def probe_tokens(self) -> list[int]:
        """First tokens that both end a value and continue into another (they need a probe)."""
        return [t for t, b in self.branches.items() if len(b) > 1]


def build_trie(values: tuple[str, ...], pieces: PieceTokenizer) -> Trie:
    """The trie of `values` as `pieces` tokenises them; ValueError if a value is not 1 or 2
    tokens long or two values cannot be told apart by one probe."""
    trie = Trie(values, [], value_toks=[pieces(v) for v in values])
    for i, v in enumerate(values):
        toks = pieces(v)
        if not 1 <= len(toks) <= 2:
            raise ValueError(f"slot value {v!r} tokenises to {len(toks)} tokens; 1 or 2 supported")
        second = toks[1] if len(toks) == 2 else None
        if toks[0] not in trie.branches:
            trie.first.append(toks[0])
            trie.branches[toks[0]] = []
        trie.branches[toks[0]].append((i, second))
    for b in trie.branches.values():
        if sum(1 for _, s in b if s is None) > 1 or (len(b) > 1 and all(s is not None for _, s in b) and len(b) > 2):
            raise ValueError(f"ambiguous slot values {values}")
    return trie


def value_probs(trie: Trie, logp_first: torch.Tensor, logp_probe: dict[int, torch.Tensor], end_tok: int) -> np.ndarray:
    """P(value) (n_values,) for each value of the trie, renormalised over the allowed set.

    logp_first: (vocab,) log-probs at the slot start; logp_probe[t]: (vocab,) log-probs after
    feeding first token t; end_tok: first token of the text after the slot.
    """
    firsts = torch.tensor(trie.first, device=logp_first.device)
    p_first = torch.softmax(logp_first[firsts].float(), -1).cpu().numpy()
    probs = np.zeros(len(trie.values))
    for k, t in enumerate(trie.first):
        branch = trie.branches[t]
        if len(branch) == 1:
            probs[branch[0][0]] = p_first[k]
            continue
        lp = logp_probe[t]
        nxt = [end_tok if s is None else s for _, s in branch]
        p_next = torch.softmax(lp[torch.tensor(nxt, device=lp.device)].float(), -1).cpu().numpy()
        for (i, _), p in zip(branch, p_next):
            probs[i] = p_first[k] * p
    return probs / probs.sum()
