"""Scoring with an audio LMM (`Qwen2AudioForConditionalGeneration`) + optional PEFT adapter.

Decoding is constrained to the target grammar. The words and phones are known from the
reference, so the answer is a fixed template (`apa.prompts.build_template`) whose only free
parts are score slots. We feed each stretch of forced text in one forward step and, at each
slot, read the model's distribution over the slot's allowed values:

    P(v) for v in {"0", ..., "10"}  (stress: {"5", "10"})

Values may span two tokens ("10" = "1" "0" with digit-splitting tokenizers). The slot's
value trie is at most two tokens deep; a one-step probe with the shared first token gives
P(second token | first) against P(end of slot), where "end" is the first token of the next
forced text. So each slot costs two small forward steps, and output is always parseable.

Two readings of the same pass: `greedy` (argmax value: exactly what greedy decoding would
emit under the grammar) and `expected` (the probability-weighted mean value, continuous,
which ranks better). The greedy value is what is fed back, so both come from one decode.

Training and decoding tokenise the target the same way, piece by piece (`encode_target`),
so the model never sees a token boundary at inference that it did not see in training.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from apa.prompts import MISSING, PHONE_SCALE, Reference, Slot, Template, build_prompt, build_template
from apa.schema import SENTENCE_ASPECTS, Assessment, Phone, Sentence, Word

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ADAPTER = REPO_ROOT / "assets" / "apa-mini-adapter"
MODES = ("expected", "greedy")


class Scorer(Protocol):
    """Anything that scores 16 kHz mono float32 audio against a reference sentence."""

    name: str

    def assess(self, audio: np.ndarray, text: str) -> Assessment: ...

    def assess_batch(self, items: Sequence[tuple[np.ndarray, str]]) -> list[Assessment]: ...


@dataclass(frozen=True)
class DecodeOptions:
    mode: str = "expected"  # which reading goes into the Assessment: "expected" | "greedy"
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is not None:
        return getattr(torch, dtype)
    return torch.bfloat16 if device.type == "cuda" else torch.float32


# ---- prompt and target tokens -------------------------------------------------------------
def chat_text(processor: Any, reference: Reference) -> str:
    """The chat-formatted prompt (audio placeholder + rubric), ending with the assistant turn."""
    conversation = [
        {"role": "user", "content": [{"type": "audio", "audio_url": "clip.wav"}, {"type": "text", "text": build_prompt(reference)}]}
    ]
    return processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)


def end_token_id(tokenizer: Any) -> int:
    """The token that closes the assistant turn (<|im_end|> in ChatML models)."""
    tid = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if tid is None or tid == tokenizer.unk_token_id:
        tid = tokenizer.eos_token_id
    return int(tid)


class PieceTokenizer:
    """Tokenises template pieces one at a time (cached): forced text and slot values."""

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
    """Target token ids (ending with the end-of-turn token) and a loss mask (False = ignore).

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


# ---- slot tries -----------------------------------------------------------------------------
@dataclass
class _Trie:
    """Values of a slot as token sequences of length 1 or 2."""

    values: tuple[str, ...]
    first: list[int]  # distinct first tokens
    # first token -> list of (value index, second token or None)
    branches: dict[int, list[tuple[int, int | None]]] = field(default_factory=dict)

    @property
    def probe_tokens(self) -> list[int]:
        """First tokens that both end a value and continue into another (need a probe)."""
        return [t for t, b in self.branches.items() if len(b) > 1]


def _build_trie(values: tuple[str, ...], pieces: PieceTokenizer) -> _Trie:
    trie = _Trie(values, [])
    for i, v in enumerate(values):
        toks = pieces(v)
        if not 1 <= len(toks) <= 2:
            raise ValueError(f"slot value {v!r} tokenises to {len(toks)} tokens; 1 or 2 supported")
        second = toks[1] if len(toks) == 2 else None
        if toks[0] not in trie.branches:
            trie.first.append(toks[0])
            trie.branches[toks[0]] = []
        trie.branches[toks[0]].append((i, second))
    for t, b in trie.branches.items():
        if sum(1 for _, s in b if s is None) > 1 or (len(b) > 1 and all(s is not None for _, s in b) and len(b) > 2):
            raise ValueError(f"ambiguous slot values {values}")
    return trie


def _value_probs(trie: _Trie, logp_first: torch.Tensor, logp_probe: dict[int, torch.Tensor], end_tok: int) -> np.ndarray:
    """P(value) for each value of the trie, renormalised over the allowed set.

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


# ---- the scorer -----------------------------------------------------------------------------
@dataclass
class SlotReading:
    kind: str
    values: tuple[str, ...]
    probs: np.ndarray  # (n_values,)

    @property
    def greedy(self) -> float:
        return float(self.values[int(np.argmax(self.probs))])

    @property
    def expected(self) -> float:
        return float(np.dot(self.probs, np.array([float(v) for v in self.values])))


class AudioLMMScorer:
    """Scores speech with a Qwen2Audio-class model under the template grammar."""

    def __init__(self, model: Any, processor: Any, *, name: str = "", options: DecodeOptions = DecodeOptions()):
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.pieces = PieceTokenizer(self.tokenizer)
        self.name = name
        self.options = options
        self._tries: dict[tuple[str, ...], _Trie] = {}
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.pieces.end_id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike,
        adapter: str | os.PathLike | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        options: DecodeOptions = DecodeOptions(),
    ) -> AudioLMMScorer:
        """Load by Hub id or local dir; `adapter` is a PEFT adapter dir (merged for speed)."""
        from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

        dev = pick_device(device)
        dt = pick_dtype(dev, dtype)
        processor = AutoProcessor.from_pretrained(str(adapter) if adapter and (Path(adapter) / "tokenizer_config.json").exists() else str(model))
        net = Qwen2AudioForConditionalGeneration.from_pretrained(str(model), dtype=dt).to(dev)
        name = Path(str(model)).name
        if adapter is not None:
            net = load_adapter(net, adapter).merge_and_unload()
            name += f"+{Path(str(adapter)).name}"
        return cls(net, processor, name=name, options=options)

    def _trie(self, values: tuple[str, ...]) -> _Trie:
        if values not in self._tries:
            self._tries[values] = _build_trie(values, self.pieces)
        return self._tries[values]

    # -- public API --------------------------------------------------------------------------
    def assess(self, audio: np.ndarray, text: str) -> Assessment:
        """audio: (n_samples,) float32 at 16 kHz; text: the sentence (raises TextError)."""
        return self.assess_batch([(audio, text)])[0]

    def assess_batch(self, items: Sequence[tuple[np.ndarray, str]]) -> list[Assessment]:
        from apa.text import to_words

        refs = [tuple((w.text, w.phones) for w in to_words(text)) for _, text in items]
        return self.score([a for a, _ in items], refs)

    def score(self, audios: Sequence[np.ndarray], references: Sequence[Reference]) -> list[Assessment]:
        """Score clips against explicit references ((word, phones), ...), in batches."""
        out: list[Assessment] = []
        bs = self.options.batch_size
        for i in range(0, len(audios), bs):
            readings = self.read_slots(audios[i : i + bs], references[i : i + bs])
            out += [to_assessment(ref, r, self.options.mode, self.name) for ref, r in zip(references[i : i + bs], readings)]
        return out

    # -- decoding ----------------------------------------------------------------------------
    @torch.inference_mode()
    def read_slots(self, audios: Sequence[np.ndarray], references: Sequence[Reference]) -> list[list[SlotReading]]:
        """Constrained decode of one batch; per clip, the distribution at every slot."""
        from apa.audio import SAMPLE_RATE

        dev = self.device
        B = len(audios)
        templates = [build_template(r) for r in references]
        prompts = [chat_text(self.processor, r) for r in references]
        inputs = self.processor(
            text=prompts, audio=[np.asarray(a, dtype=np.float32) for a in audios], sampling_rate=SAMPLE_RATE,
            return_tensors="pt", padding=True,
        ).to(dev)
        mask = inputs["attention_mask"]
        pos = mask.long().cumsum(-1) - 1
        out = self.model(
            input_ids=inputs["input_ids"], attention_mask=mask, position_ids=pos.clamp(min=0),
            input_features=inputs["input_features"].to(self.model.dtype),
            feature_attention_mask=inputs["feature_attention_mask"], use_cache=True,
        )
        cache = out.past_key_values
        next_pos = mask.sum(-1).long()  # (B,) position of the next token per row
        # Queue per row: forced text before the first slot.
        feeds: list[list[int]] = []
        cursors = [0] * B  # index into template
        for b, t in enumerate(templates):
            toks, cursors[b] = self._forced_until_slot(t, 0)
            feeds.append(toks)
        readings: list[list[SlotReading]] = [[] for _ in range(B)]
        while any(feeds):
            logits, mask, next_pos = self._step(feeds, cache, mask, next_pos)  # (B, vocab) at last fed token
            logp = torch.log_softmax(logits.float(), -1)
            # Which rows are at a slot now?
            at_slot = [b for b in range(B) if feeds[b] and cursors[b] < len(templates[b]) and isinstance(templates[b][cursors[b]], Slot)]
            tries = {b: self._trie(templates[b][cursors[b]].values) for b in at_slot}
            # One probe step per distinct probe token (usually just "1").
            probe_lp: dict[int, dict[int, torch.Tensor]] = {b: {} for b in at_slot}
            probe_toks = sorted({t for b in at_slot for t in tries[b].probe_tokens})
            for t in probe_toks:
                rows = [b for b in at_slot if t in tries[b].probe_tokens]
                pl, _, _ = self._step([[t] if b in rows else [] for b in range(B)], cache, mask, next_pos)
                cache.crop(-1)  # roll the probe token back out of the KV cache
                plp = torch.log_softmax(pl.float(), -1)
                for b in rows:
                    probe_lp[b][t] = plp[b]
            new_feeds: list[list[int]] = [[] for _ in range(B)]
            for b in at_slot:
                slot = templates[b][cursors[b]]
                forced, nxt_cursor = self._forced_until_slot(templates[b], cursors[b] + 1)
                end_tok = forced[0] if forced else self.pieces.end_id
                probs = _value_probs(tries[b], logp[b], probe_lp[b], end_tok)
                reading = SlotReading(slot.kind, slot.values, probs)
                readings[b].append(reading)
                chosen = slot.values[int(np.argmax(probs))]
                cursors[b] = nxt_cursor
                # Last slot: nothing more to decode for this row.
                new_feeds[b] = list(self.pieces(chosen)) + forced if cursors[b] < len(templates[b]) else []
            feeds = new_feeds
        return readings

    def _forced_until_slot(self, template: Template, start: int) -> tuple[list[int], int]:
        """Token ids of forced text from `start` up to the next slot, and that slot's index."""
        toks: list[int] = []
        i = start
        while i < len(template) and not isinstance(template[i], Slot):
            toks += self.pieces(template[i])
            i += 1
        return toks, i

    def _step(self, feeds: list[list[int]], cache: Any, mask: torch.Tensor, next_pos: torch.Tensor):
        """Feed a ragged batch of token lists (right-padded, pads masked) through the LLM.

        Returns (logits at each row's last fed token (B, vocab), the grown mask, next positions).
        """
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
        out = self.model(input_ids=ids, attention_mask=full_mask, position_ids=positions, past_key_values=cache, use_cache=True)
        lens = torch.tensor([len(f) for f in feeds], device=dev)
        last = (lens - 1).clamp(min=0)
        logits = out.logits[torch.arange(B, device=dev), last]
        return logits, full_mask, next_pos + lens


def to_assessment(reference: Reference, readings: Sequence[SlotReading], mode: str, model: str = "") -> Assessment:
    """Slot readings (in template order) -> Assessment with the chosen reading."""
    it = iter(readings)

    def take() -> float:
        r = next(it)
        return r.expected if mode == "expected" else r.greedy

    sentence = Sentence(**{a: take() for a in SENTENCE_ASPECTS})
    word_vals = [{"accuracy": take(), "stress": take(), "total": take()} for _ in reference]
    words = tuple(
        Word(text=w, phones=tuple(Phone(p, take() / PHONE_SCALE) for p in phones), **word_vals[i])
        for i, (w, phones) in enumerate(reference)
    )
    return Assessment(text=" ".join(w for w, _ in reference), sentence=sentence, words=words, model=model, extra={"mode": mode})


# ---- adapters and the default model ---------------------------------------------------------
def load_adapter(model: Any, adapter: str | os.PathLike) -> Any:
    """Attach a PEFT adapter; also loads extra trained weights saved beside it (projector)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter))


def load_scorer(
    model: str | None = None,
    adapter: str | None = None,
    *,
    device: str | None = None,
    options: DecodeOptions = DecodeOptions(),
) -> AudioLMMScorer:
    """The default (model=None) is apa-mini (assembled offline on first use) with the adapter
    shipped in assets/. `model`: Hub id or local dir; `adapter`: PEFT dir or "none".
    Environment variables APA_MODEL / APA_ADAPTER override the defaults."""
    model = model or os.environ.get("APA_MODEL")
    adapter = adapter or os.environ.get("APA_ADAPTER")
    if model is None:
        from apa.mini import assemble_apa_mini

        model = str(assemble_apa_mini())
        if adapter is None and DEFAULT_ADAPTER.exists():
            adapter = str(DEFAULT_ADAPTER)
    if adapter in (None, "", "none"):
        adapter = None
    return AudioLMMScorer.from_pretrained(model, adapter, device=device, options=options)
