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

Two implementations of that decode give the same readings (greedy values identical; probabilities
equal to float rounding, ~1e-5 on apa-mini; tests/test_fast_inference.py, bench/check_fast_vs_naive.py):

* stock (`DecodeOptions(fast=False)`): the processor pads the audio to 30 s, the full model runs
  the encoder on 3000 frames (padding masked) and the LLM prefill with the LM head on every
  position, then one forward per stretch of forced text and one per probe, batched over clips.
* fast (the default): features and encoder on the real length (`log_mel_features`,
  `encode_audio_fast`), then *speculative* template decoding (`AudioLMMScorer._decode_fast`): a
  pass feeds many slots at once with guessed values, probes as side tokens under a tree mask, and
  keeps the readings up to the first wrong guess; a lean forward of the decoder (`_LeanDecoder`)
  with a preallocated KV cache, the fixed prompt prefix cached, and the LM head only on the rows
  and vocabulary columns that are read. On a 2-core CPU this is ~5-10x faster than the stock path
  (bench/cpu_latency.py). On a GPU the clips of a batch go together (`_decode_fast_batch`): one
  forward carries the next pass of every clip, each at its own offsets in its own cache row
  (bench/gpu_bench.py).
"""

from __future__ import annotations

import functools
import os
import threading
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
# Speculative template decoding (AudioLMMScorer._decode_fast): the first pass (the prompt) reads
# this many slots; a pass costs about this many tokens' compute on top of its tokens (weights read).
FAST_FIRST_WINDOW = 1
PASS_COST_TOKENS = 25
GUESS_MEMORY = 200  # guesses per region the running hit rate remembers


class Scorer(Protocol):
    """Anything that scores 16 kHz mono float32 audio against a reference sentence."""

    name: str

    def assess(self, audio: np.ndarray, text: str) -> Assessment: ...

    def assess_batch(self, items: Sequence[tuple[np.ndarray, str]]) -> list[Assessment]: ...


@dataclass(frozen=True)
class DecodeOptions:
    mode: str = "expected"  # which reading goes into the Assessment: "expected" | "greedy"
    batch_size: int = 8
    # True: the fast inference path (audio encoder on the real length, speculative template decoding
    # through a lean decoder forward: AudioLMMScorer._read_one_fast). False: the stock path (30 s
    # encoder, one decode step per slot plus probe steps, batched), the reference the fast path matches.
    fast: bool = True
    # Fast path with several clips: decode them together, one forward per pass of all
    # (`_decode_fast_batch`), or clip by clip. None: together on a GPU, clip by clip on a CPU
    # (where padding the clips to one length costs more than it saves).
    batch_clips: bool | None = None

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
    value_toks: list[tuple[int, ...]] = field(default_factory=list)  # the tokens of each value

    @functools.cached_property
    def probe_tokens(self) -> list[int]:
        """First tokens that both end a value and continue into another (need a probe)."""
        return [t for t, b in self.branches.items() if len(b) > 1]


def _build_trie(values: tuple[str, ...], pieces: PieceTokenizer) -> _Trie:
    trie = _Trie(values, [], value_toks=[pieces(v) for v in values])
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


# ---- fast inference: features and audio encoder on the real length ---------------------------
def log_mel_features(feature_extractor: Any, audio: np.ndarray) -> tuple[torch.Tensor, int]:
    """Whisper log-mel features of `audio` computed on its real length, not the 30 s padding.

    Returns (features (1, n_mels, F), n): n = the feature frames the processor marks valid
    (ceil(samples / hop), at most 30 s: longer audio is truncated, as the processor does) and
    F = min(n + 2, 3000) frames, equal (to float rounding) to `processor(...)["input_features"][..., :F]`:
    the 2 frames past n feed the last conv window of the encoder exactly as in the padded run.

    Why it matches: STFT frame f reads samples [hop*f - n_fft/2, hop*f + n_fft/2); zero-padding the
    clip to hop*(F+1) samples gives every frame < F the same window as the 30 s zero-padding does,
    and the `max - 8` floor of the log-mel is the same (frames beyond only hold zeros, log10(1e-10)).
    """
    feats, n = log_mel_features_batch(feature_extractor, [audio])
    return feats, n[0]


def log_mel_features_batch(
    feature_extractor: Any, audios: Sequence[np.ndarray], device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, list[int]]:
    """`log_mel_features` of several clips in one STFT on `device`: (features (B, n_mels, F), [n_b]),
    F = the largest clip's frames; clip b's features are [b, :, :min(n_b + 2, 3000)] (more zero
    padding changes no frame of a clip, nor its maximum)."""
    fe = feature_extractor
    hop = fe.hop_length
    total_frames = fe.n_samples // hop  # 3000
    xs = [np.asarray(a, dtype=np.float32).reshape(-1)[: fe.n_samples] for a in audios]
    ns = [min(-(-len(x) // hop), total_frames) for x in xs]
    frames = min(max(ns) + 2, total_frames)
    length = min(fe.n_samples, hop * (frames + 1))  # near 30 s: the padded run itself
    padded = np.zeros((len(xs), length), dtype=np.float32)
    for b, x in enumerate(xs):
        padded[b, : len(x)] = x
    dev = torch.device(device)
    feats = fe(list(padded), sampling_rate=fe.sampling_rate, padding="longest", truncation=False,
               return_attention_mask=False, return_tensors="pt", device=str(dev))["input_features"]
    return feats[..., :frames].to(dev), ns


def audio_token_count(n_frames: int) -> int:
    """<|AUDIO|> tokens the processor writes for n valid feature frames (25 per second)."""
    return ((n_frames - 1) // 2 + 1 - 2) // 2 + 1


def encode_audio_fast(model: Any, features: torch.Tensor, n_frames: int) -> torch.Tensor:
    """Projected audio embeddings (n_tokens, hidden) of one clip, the encoder run on its real length.

    Equals the stock path (Qwen2AudioModel.forward: 3000 frames, padding masked in the encoder's
    self-attention, then pooled, normed, projected and cut to the valid tokens) to float rounding:
    conv1/conv2 on the first n + 2 frames, keep the (n - 1) // 2 + 1 valid positions, add their
    position embeddings, run the layers with no mask (nothing to mask), 2x average pool, layer norm,
    projector. Inference only; training keeps the stock path.
    """
    x = features if features.dim() == 3 else features[None]
    return encode_audio_batch(model, x[..., : min(n_frames + 2, x.shape[-1])], [n_frames])[0]


def encode_audio_batch(model: Any, features: torch.Tensor, n_frames: Sequence[int]) -> list[torch.Tensor]:
    """`encode_audio_fast` for a batch: features (B, n_mels, F) from `log_mel_features_batch`; the
    encoder runs on the longest clip's valid length with the others' padding masked in its
    self-attention (as the stock path masks the 30 s padding). Returns [(n_tokens_b, hidden)]."""
    tower = model.model.audio_tower
    proj = model.model.multi_modal_projector
    n_tok = [audio_token_count(n) for n in n_frames]
    if max(n_tok) <= 0:  # under 3 frames (30 ms): the processor writes no audio token either
        return [proj.linear.weight.new_zeros((0, proj.linear.out_features)) for _ in n_frames]
    x = features.to(device=tower.conv1.weight.device, dtype=tower.conv1.weight.dtype)
    h = torch.nn.functional.gelu(tower.conv1(x))
    h = torch.nn.functional.gelu(tower.conv2(h))
    valid = [min((n - 1) // 2 + 1, h.shape[-1]) for n in n_frames]
    top = max(valid)
    h = h.permute(0, 2, 1)[:, :top] + tower.embed_positions.weight[:top]
    mask = None
    if min(valid) < top:
        from transformers.masking_utils import create_bidirectional_mask

        keep = torch.arange(top, device=h.device)[None] < torch.tensor(valid, device=h.device)[:, None]
        mask = create_bidirectional_mask(config=tower.config, inputs_embeds=h, attention_mask=keep.long())
    for layer in tower.layers:
        h = layer(h, mask)
        h = h[0] if isinstance(h, tuple) else h
    h = tower.avg_pooler(h.permute(0, 2, 1)).permute(0, 2, 1)
    h = proj(tower.layer_norm(h))
    return [h[b, : max(t, 0)] for b, t in enumerate(n_tok)]


# ---- fast inference: lean decoder forward with tree masks -------------------------------------
class _LeanDecoder:
    """Inference-only forward of a Llama/Qwen2-style decoder (the LLM of Qwen2Audio and apa-mini),
    with a preallocated KV cache and two kinds of query: `main` tokens (causal, a plain sequence)
    and `side` tokens (each attends to a prefix of the sequence and itself, nobody attends to it:
    the probe tokens of the template decoder, read in the same forward as everything else).

    Same operations, in the same order, as transformers' LlamaDecoderLayer / Qwen2DecoderLayer
    (RMSNorm in float32, default RoPE, SDPA, SiLU MLP); `build` returns None for anything else
    (another architecture, RoPE scaling, sliding windows, LoRA layers not merged), and the caller
    then uses transformers' own forward with a 4D mask (`_HFDecoder`).
    """

    def __init__(self, lm: Any, head: Any):
        cfg = lm.config
        self.lm, self.head = lm, head
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.layers = [
            (l.input_layernorm, l.self_attn.q_proj, l.self_attn.k_proj, l.self_attn.v_proj, l.self_attn.o_proj,
             l.post_attention_layernorm, l.mlp.gate_proj, l.mlp.up_proj, l.mlp.down_proj)
            for l in lm.layers[: cfg.num_hidden_layers]
        ]
        self.inv_freq = lm.rotary_emb.inv_freq
        self.rope_scale = float(getattr(lm.rotary_emb, "attention_scaling", 1.0))
        self._prefix: tuple[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] | None = None

    @classmethod
    def build(cls, lm: Any, head: Any) -> _LeanDecoder | None:
        cfg = getattr(lm, "config", None)
        if cfg is None or getattr(cfg, "model_type", None) not in ("llama", "qwen2"):
            return None
        rope = getattr(cfg, "rope_parameters", None) or {}
        if rope.get("rope_type", "default") != "default" or getattr(cfg, "hidden_act", None) != "silu":
            return None
        if getattr(cfg, "use_sliding_window", False) or getattr(cfg, "pretraining_tp", 1) != 1:
            return None
        if any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or ())):
            return None
        if getattr(cfg, "_attn_implementation", "sdpa") not in ("sdpa", "eager", None):
            return None
        try:
            dec = cls(lm, head)
        except AttributeError:
            return None
        linears = [m for layer in dec.layers for m in layer if not hasattr(m, "variance_epsilon")] + [head]
        if any(type(m) is not torch.nn.Linear for m in linears):  # e.g. unmerged LoRA
            return None
        norms = [m for layer in dec.layers for m in (layer[0], layer[5])] + [lm.norm]
        if any(not hasattr(m, "variance_epsilon") or getattr(m, "weight", None) is None for m in norms):
            return None
        return dec

    def new_cache(self, max_len: int, batch: int | None = None) -> Any:
        """K and V, each (layers, kv heads, max_len, head dim), or (layers, batch, kv heads, ...).
        A batch cache starts zeroed: a row reads (masked) columns it never wrote, and a masked
        NaN of uninitialised memory would still reach the output (0 * NaN)."""
        p = self.layers[0][1].weight
        if batch is None:
            shape = (len(self.layers), self.n_kv, max_len, self.head_dim)
            return torch.empty(shape, dtype=p.dtype, device=p.device), torch.empty(shape, dtype=p.dtype, device=p.device)
        shape = (len(self.layers), batch, self.n_kv, max_len, self.head_dim)
        return torch.zeros(shape, dtype=p.dtype, device=p.device), torch.zeros(shape, dtype=p.dtype, device=p.device)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm.embed_tokens(ids)

    def prefix(self, ids: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V (layers, kv heads, len(ids), head dim) of a fixed token prefix, computed once:
        the part of every prompt before the audio (system prompt, "Audio 1: <|audio_bos|>")."""
        if self._prefix is None or self._prefix[0] != ids:
            n = len(ids)
            cache = self.new_cache(n)
            dev = cache[0].device
            self.forward(cache, 0, self.embed(torch.tensor(ids, device=dev)), torch.arange(n, device=dev), n, ())
            self._prefix = (ids, cache)
        return self._prefix[1]

    @staticmethod
    def _rms(norm: Any, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and norm.weight.dtype == torch.float32:  # one fused kernel, same result
            return torch.nn.functional.rms_norm(x, norm.weight.shape, norm.weight, norm.variance_epsilon)
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        return norm.weight * h.to(x.dtype)

    def forward(
        self, cache: Any, past: int, x: torch.Tensor, pos: torch.Tensor, n_main: int, side_lim: Sequence[int]
    ) -> torch.Tensor:
        """x: (T, hidden) embeddings of n_main main tokens then T - n_main side tokens, at positions
        pos (T,); the cache holds `past` tokens. Side token s attends to the first side_lim[s]
        cache+main tokens and itself. Returns the final-normed hidden states (T, hidden); the
        cache then holds past + T tokens (callers continue from any shorter length)."""
        K, V = cache
        T = x.shape[0]
        n_side = T - n_main
        dev = x.device
        H, KV, D = self.n_heads, self.n_kv, self.head_dim
        end = past + T
        # RoPE as transformers computes it (cos/sin in float32, then the model dtype), applied as
        # (t1, t2) -> (t1 cos - t2 sin, t2 cos + t1 sin) per half: the same roundings as
        # t * cos + rotate_half(t) * sin, without the concatenations
        freqs = pos.to(torch.float32)[:, None] * self.inv_freq.to(device=dev, dtype=torch.float32)[None, :]
        cos = (freqs.cos() * self.rope_scale).to(x.dtype)
        sin = (freqs.sin() * self.rope_scale).to(x.dtype)
        half = D // 2

        def rope(t: torch.Tensor) -> torch.Tensor:  # (heads, T, D)
            t1, t2 = t[..., :half], t[..., half:]
            out = torch.empty_like(t)
            torch.mul(t1, cos, out=out[..., :half]).sub_(t2 * sin)
            torch.mul(t2, cos, out=out[..., half:]).add_(t1 * sin)
            return out

        x = x.clone()  # updated in place below
        # one boolean mask (T, past + T): main rows causal, side rows their prefix and themselves;
        # none (is_causal) for a plain sequence on an empty cache
        mask = None
        if past > 0 or n_side:
            cols = torch.arange(end, device=dev)
            rows = past + torch.arange(T, device=dev)
            lim = rows + 1
            if n_side:
                lim[n_main:] = torch.as_tensor(list(side_lim), device=dev)
            mask = (cols[None, :] < lim[:, None]) | (cols[None, :] == rows[:, None])
            mask = mask[None, None]
        sdpa = torch.nn.functional.scaled_dot_product_attention
        for i, (n1, wq, wk, wv, wo, n2, wg, wu, wd) in enumerate(self.layers):
            h = self._rms(n1, x)
            q = torch.nn.functional.linear(h, wq.weight, wq.bias).view(T, H, D).transpose(0, 1)
            k = torch.nn.functional.linear(h, wk.weight, wk.bias).view(T, KV, D).transpose(0, 1)
            v = torch.nn.functional.linear(h, wv.weight, wv.bias).view(T, KV, D).transpose(0, 1)
            q, k = rope(q), rope(k)
            K[i, :, past:end] = k
            V[i, :, past:end] = v
            kk, vv = K[i, :, :end][None], V[i, :, :end][None]
            qq = q[None]
            o = sdpa(qq, kk, vv, attn_mask=mask, is_causal=mask is None and T > 1, scale=self.scaling,
                     enable_gqa=H != KV)
            x += torch.nn.functional.linear(o[0].transpose(0, 1).reshape(T, H * D), wo.weight, wo.bias)
            h = self._rms(n2, x)
            gate = torch.nn.functional.silu(torch.nn.functional.linear(h, wg.weight, wg.bias))
            gate.mul_(torch.nn.functional.linear(h, wu.weight, wu.bias))
            x += torch.nn.functional.linear(gate, wd.weight, wd.bias)
        return self._rms(self.lm.norm, x)

    def forward_batch(
        self, cache: Any, x: torch.Tensor, pos: torch.Tensor, lim: torch.Tensor, write: torch.Tensor, n_keys: int
    ) -> torch.Tensor:
        """`forward` for R sequences at once, each at its own offsets in its own cache row.

        cache: K, V (layers, >= R, kv heads, max_len, head dim), rows 0..R-1 used; x: (R, T, hidden);
        pos, lim, write: (R, T) long: RoPE position, attention limit (token (r, t) attends to cache
        entries < lim[r, t] of row r, and to itself) and the cache column its K/V go to; every
        entry read is < n_keys. Returns the final-normed hidden states (R, T, hidden)."""
        K, V = cache
        R, T, _ = x.shape
        dev = x.device
        H, KV, D = self.n_heads, self.n_kv, self.head_dim
        freqs = pos.to(torch.float32)[..., None] * self.inv_freq.to(device=dev, dtype=torch.float32)
        cos = (freqs.cos() * self.rope_scale).to(x.dtype)[:, None]  # (R, 1, T, D/2)
        sin = (freqs.sin() * self.rope_scale).to(x.dtype)[:, None]
        half = D // 2

        def rope(t: torch.Tensor) -> torch.Tensor:  # (R, heads, T, D)
            t1, t2 = t[..., :half], t[..., half:]
            out = torch.empty_like(t)
            torch.mul(t1, cos, out=out[..., :half]).sub_(t2 * sin)
            torch.mul(t2, cos, out=out[..., half:]).add_(t1 * sin)
            return out

        cols = torch.arange(n_keys, device=dev)
        mask = ((cols < lim[..., None]) | (cols == write[..., None]))[:, None]  # (R, 1, T, n_keys)
        G = H // KV  # query heads per K/V head: they go into the query length (R, KV, G * T, D), so
        if G > 1:  # that memory-efficient SDPA kernels (masks, no grouped heads) need no K/V copies
            mask = mask.repeat(1, 1, G, 1)
        rows = torch.arange(R, device=dev)[:, None].expand(R, T)
        x = x.clone()
        sdpa = torch.nn.functional.scaled_dot_product_attention
        for i, (n1, wq, wk, wv, wo, n2, wg, wu, wd) in enumerate(self.layers):
            h = self._rms(n1, x)
            q = torch.nn.functional.linear(h, wq.weight, wq.bias).view(R, T, H, D).transpose(1, 2)
            k = torch.nn.functional.linear(h, wk.weight, wk.bias).view(R, T, KV, D).transpose(1, 2)
            v = torch.nn.functional.linear(h, wv.weight, wv.bias).view(R, T, KV, D)
            q, k = rope(q), rope(k)
            K[i][rows, :, write] = k.transpose(1, 2)  # (R, T, KV, D) into (row, :, column)
            V[i][rows, :, write] = v
            kk, vv = K[i][:R, :, :n_keys], V[i][:R, :, :n_keys]
            o = sdpa(q.reshape(R, KV, G * T, D), kk, vv, attn_mask=mask, scale=self.scaling).reshape(R, H, T, D)
            x += torch.nn.functional.linear(o.transpose(1, 2).reshape(R, T, H * D), wo.weight, wo.bias)
            h = self._rms(n2, x)
            gate = torch.nn.functional.silu(torch.nn.functional.linear(h, wg.weight, wg.bias))
            gate.mul_(torch.nn.functional.linear(h, wu.weight, wu.bias))
            x += torch.nn.functional.linear(gate, wd.weight, wd.bias)
        return self._rms(self.lm.norm, x)


class _HFDecoder:
    """The same interface over transformers' own language-model forward (a DynamicCache and a
    4D boolean mask): the fallback for architectures `_LeanDecoder` does not cover."""

    def __init__(self, lm: Any, head: Any):
        self.lm, self.head = lm, head

    def new_cache(self, max_len: int) -> Any:
        from transformers.cache_utils import DynamicCache

        return DynamicCache(config=self.lm.config)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm.get_input_embeddings()(ids)

    def forward(
        self, cache: Any, past: int, x: torch.Tensor, pos: torch.Tensor, n_main: int, side_lim: Sequence[int]
    ) -> torch.Tensor:
        extra = cache.get_seq_length() - past
        if extra > 0:
            cache.crop(-extra)
        dev = x.device
        T = x.shape[0]
        cols = torch.arange(past + T, device=dev)
        rows = past + torch.arange(T, device=dev)
        mask = cols[None, :] <= rows[:, None]
        if T > n_main:
            lim = torch.as_tensor(list(side_lim), device=dev)
            side = (cols[None, :] < lim[:, None]) | (cols[None, :] == rows[n_main:, None])
            mask = torch.cat((mask[:n_main], side), dim=0)
        out = self.lm(inputs_embeds=x[None], attention_mask=mask[None, None], position_ids=pos[None],
                      past_key_values=cache, use_cache=True)
        return out.last_hidden_state[0]


@dataclass
class _Plan:
    """Everything about one reference that does not depend on the audio (cached per reference)."""

    prompt_ids: list[int]  # chat prompt token ids with a single <|AUDIO|> placeholder
    audio_at: int  # index of that placeholder
    slots: list[Slot]
    tries: list[_Trie]
    forced: list[list[int]]  # forced[k]: tokens before slot k; forced[-1]: after the last slot
    end_tok: list[int]  # first token after slot k's value (the "end of value" token of the probe)
    value_toks: list[list[tuple[int, ...]]]  # per slot, the tokens of each value
    cols: list[int]  # vocabulary ids whose logits are read (see _plan_cols)
    specs: list[tuple]  # per slot, how to read them

    @property
    def template_tokens(self) -> int:
        return sum(len(f) for f in self.forced) + sum(max(len(v) for v in vt) for vt in self.value_toks)

    @functools.cached_property
    def max_decode_tokens(self) -> int:
        """Cache entries decoding may need after the prompt: the template, every probe as a side
        token, and one more."""
        return self.template_tokens + sum(len(t.probe_tokens) for t in self.tries) + 1


class _Guesser:
    """Guessed values (indices) for the slots of a speculative pass, and how many slots to take.

    Guess for slot k: for sentence scores (completeness apart: mostly 10), the previous sentence
    score (they move together); else what an earlier pass read at k (its context may have differed
    a slot or two before k: the reading still mostly holds); else the value most often chosen so
    far for that kind of slot (an odd low phone score is mostly followed by 10s again); else the
    largest value ("10", the usual score). (Tried and dropped, on 20 corpus clips with the shipped
    adapter: ignoring a reading made after another value of the same kind, 6.3 passes a clip
    instead of 5.4; copying the last value alone, 8.7; "10" alone, 8.8.)

    Window: the number of slots w that maximises (expected slots kept) / (cost of the pass), with
    cost = PASS_COST_TOKENS + tokens fed and slot i kept when the guesses of the slots before it in
    the pass hold (the long-run cost per kept slot). P(guess holds) is estimated per region,
    sentence scores vs word and phone scores, from this clip's hits and misses on top of `prior`
    (the scorer's running counts over earlier clips; to start with, 1/2 and 19/20).
    """

    def __init__(self, plan: _Plan, prior: Sequence[tuple[float, float]] = ((1.0, 2.0), (19.0, 20.0))):
        self.plan = plan
        S = len(plan.slots)
        self.ctx: dict[str, int] = {}  # kind -> value index of the last chosen value
        self.counts: dict[str, dict[int, int]] = {}  # kind -> value index -> times chosen
        self.chosen: list[int | None] = [None] * S  # greedy values found so far
        self.read_val: list[int | None] = [None] * S  # reading of slot k in an earlier pass
        self.prior = [tuple(p) for p in prior]  # per region: (hits, guesses) before this clip
        self.hits = [0, 0]  # [sentence, word/phone]
        self.misses = [0, 0]

    def _kind(self, k: int) -> str:
        kind = self.plan.slots[k].kind
        if kind.startswith("sentence.") and kind != "sentence.completeness":  # (completeness: mostly 10)
            return "sentence"
        return kind

    def _region(self, k: int) -> int:
        return 0 if self.plan.slots[k].kind.startswith("sentence.") else 1

    def guesses(self, j: int, kend: int) -> list[int]:
        ctx = dict(self.ctx)
        out: list[int] = []
        for k in range(j, kend + 1):
            kind = self._kind(k)
            gi = ctx.get(kind) if kind == "sentence" else None  # sentence scores: copy first
            if gi is None:
                gi = self.read_val[k]
            if gi is None:
                seen = self.counts.get(kind)
                gi = max(seen, key=seen.get) if seen else len(self.plan.slots[k].values) - 1
            out.append(gi)
            ctx[kind] = gi
        return out

    def read(self, k: int, value: int) -> None:
        """A pass read slot k as `value` (its context may have been wrong)."""
        self.read_val[k] = value

    def accept(self, k: int, value: int, guessed: int | None) -> None:
        """Slot k's greedy value is `value`; `guessed`: what the pass fed there (None: nothing)."""
        self.chosen[k] = value
        kind = self._kind(k)
        self.ctx[kind] = value
        seen = self.counts.setdefault(kind, {})
        seen[value] = seen.get(value, 0) + 1
        if guessed is not None:
            r = self._region(k)
            if guessed == value:
                self.hits[r] += 1
            else:
                self.misses[r] += 1

    def p_hit(self, k: int) -> float:
        r = self._region(k)
        prior_hit, prior_n = self.prior[r]
        return (self.hits[r] + prior_hit) / (self.hits[r] + self.misses[r] + prior_n)

    def window(self, j: int, first_tokens: int) -> int:
        """Slots for a pass that starts at slot j, feeding first_tokens before slot j's value."""
        S = len(self.plan.slots)
        best_w, best = 1, 0.0
        kept, reach, cost = 0.0, 1.0, PASS_COST_TOKENS + first_tokens
        for w in range(1, S - j + 1):
            k = j + w - 1
            kept += reach
            if kept / cost > best:
                best, best_w = kept / cost, w
            if k + 1 < S:
                reach *= self.p_hit(k)
                cost += 2 + len(self.plan.forced[k + 1])  # value (at most 2 tokens) + forced text
            if reach < 1e-3:
                break
        return best_w


def _plan_cols(plan_tries: Sequence[_Trie], end_toks: Sequence[int]) -> tuple[list[int], list[tuple]]:
    """The vocabulary columns the decoder ever reads, and per slot how to read them.

    Slot values are renormalised over the allowed set, so only the logits of allowed first tokens,
    of the probe's second tokens and of the end token matter: the LM head runs on those columns.
    Per slot: (first-token columns, [(position in first, probe token, [(value index, column)])],
    [(value index or -1 for a branch, position in first)] for single-branch first tokens)."""
    vocab: dict[int, int] = {}

    def col(t: int) -> int:
        return vocab.setdefault(t, len(vocab))

    specs = []
    seen: dict[tuple[int, int], tuple] = {}  # (trie, end token) -> spec: slots repeat a few of them
    firsts: dict[int, list[int]] = {}  # trie -> its first-token columns
    for trie, end in zip(plan_tries, end_toks):
        spec = seen.get((id(trie), end))
        if spec is not None:
            specs.append(spec)
            continue
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
        seen[(id(trie), end)] = (first_cols, probes, singles)
        specs.append(seen[(id(trie), end)])
    return list(vocab), specs


def _softmax_rows(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis of (rows, n)."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class _ClipDecode:
    """Speculative template decoding of one clip as a state machine, so that one forward can carry
    a pass of many clips (`AudioLMMScorer._decode_fast` explains the method).

    `plan_pass()` says what the next pass feeds: token ids (main tokens, then side probe tokens),
    their positions and attention limits, after `self.pre` (embeddings not yet in the cache, e.g.
    the prompt with its audio); `read_pass(logits)` reads the rows `self.need` of that pass and moves
    on. `self.past` is the number of this clip's tokens in the KV cache the next pass continues from.
    """

    def __init__(self, plan: _Plan, prompt: torch.Tensor | None, past: int, prior: Sequence[tuple[float, float]]):
        self.plan = plan
        self.pre = prompt  # (n, hidden) or None
        self.past = past
        self.guesser = _Guesser(plan, prior)
        self.readings: list[SlotReading] = []
        self.start = list(plan.forced[0])  # tokens before slot j's value not yet fed
        self.j = 0
        self.window = FAST_FIRST_WINDOW
        self.need: list[int] = []  # rows of the last pass whose logits read_pass wants, ascending
        self._pass: tuple = ()

    @property
    def done(self) -> bool:
        return self.j >= len(self.plan.slots)

    @property
    def n_pre(self) -> int:
        return 0 if self.pre is None else self.pre.shape[0]

    def plan_pass(self) -> tuple[list[int], list[int], list[int], int]:
        """(ids, positions, limits, n_main) of the next pass. Its rows are the n_pre embeddings of
        self.pre, then the ids; positions and limits cover all rows: row r attends to the cache
        entries < limits[r] and to itself (main rows: everything before them; side rows: the
        sequence up to their slot). n_main counts the main rows (self.pre included)."""
        plan, g_ = self.plan, self.guesser
        j = self.j
        kend = min(len(plan.slots) - 1, j + self.window - 1)
        g = g_.guesses(j, kend)
        n_pre, past = self.n_pre, self.past
        main = list(self.start)
        read_at: list[int] = []  # row of the token before each slot's value (its reading)
        for i, k in enumerate(range(j, kend + 1)):
            read_at.append(n_pre + len(main) - 1)
            if k < kend:
                main += plan.value_toks[k][g[i]]
                main += plan.forced[k + 1]
        n_main = n_pre + len(main)
        side: list[int] = []  # probe tokens read off the sequence
        side_lim: list[int] = []  # each attends to the first side_lim cache positions (+ itself)
        probe_rows: list[dict[int, int]] = []  # per slot: probe token -> row of its reading
        for i, k in enumerate(range(j, kend + 1)):
            rows: dict[int, int] = {}
            v = read_at[i] + 1  # row of the slot's first value token
            for t in plan.tries[k].probe_tokens:
                if k < kend and plan.value_toks[k][g[i]][0] == t:
                    rows[t] = v  # the guessed value starts with the probe token: read it there
                else:
                    rows[t] = n_main + len(side)
                    side.append(t)
                    side_lim.append(past + v)
            probe_rows.append(rows)
        self.need = sorted(set(read_at) | {r for rows in probe_rows for r in rows.values()})
        self._pass = (kend, g, read_at, probe_rows, n_main)
        pos = list(range(past, past + n_main)) + side_lim
        lim = list(range(past + 1, past + n_main + 1)) + side_lim
        return main + side, pos, lim, n_main

    def read_pass(self, logits: np.ndarray) -> None:
        """logits: (len(self.need), len(plan.cols)) float64, the LM head at the rows self.need."""
        plan, guesser = self.plan, self.guesser
        kend, g, read_at, probe_rows, n_main = self._pass
        j = self.j
        row_of = {r: i for i, r in enumerate(self.need)}
        # P(value) of every slot of the pass, slots with the same values (trie) at once
        n = kend - j + 1
        slot_probs: list[np.ndarray] = [None] * n  # type: ignore[list-item]
        groups: dict[int, list[int]] = {}
        for i in range(n):
            groups.setdefault(id(plan.tries[j + i]), []).append(i)
        for idx in groups.values():
            first_cols, probes, singles = plan.specs[j + idx[0]]  # the same first tokens in a group
            p_first = _softmax_rows(logits[np.ix_([row_of[read_at[i]] for i in idx], first_cols)])
            probs = np.zeros((len(idx), len(plan.slots[j + idx[0]].values)))
            for vi, fpos in singles:
                probs[:, vi] = p_first[:, fpos]
            for q, (fpos, t, branch) in enumerate(probes):
                rows = np.array([row_of[probe_rows[i][t]] for i in idx])[:, None]
                cols = np.array([[c for _, c in plan.specs[j + i][1][q][2]] for i in idx])  # the end token varies
                p_next = _softmax_rows(logits[rows, cols])
                for b, (vi, _) in enumerate(branch):
                    probs[:, vi] = p_first[:, fpos] * p_next[:, b]
            probs /= probs.sum(axis=1, keepdims=True)
            for a, i in enumerate(idx):
                slot_probs[i] = probs[a]
        stop, chosen = kend, 0
        for i, k in enumerate(range(j, kend + 1)):
            probs = slot_probs[i]
            c = int(np.argmax(probs))
            guesser.read(k, c)
            if stop < k:
                continue
            chosen = c
            self.readings.append(SlotReading(plan.slots[k].kind, plan.slots[k].values, probs))
            guesser.accept(k, chosen, g[i] if k < kend else None)
            if k < kend and chosen != g[i]:
                stop = k  # later slots of this pass saw a wrong value
        # keep the cache up to the stop slot's value; continue with its chosen value
        self.past += read_at[stop - j] + 1 if stop < kend else n_main
        self.pre = None
        self.start = list(plan.value_toks[stop][chosen]) + plan.forced[stop + 1]
        self.j = stop + 1
        if self.j < len(plan.slots):
            self.window = guesser.window(self.j, len(self.start))

    def update_prior(self, prior: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
        """The running guess-hit counts over clips, with this clip's added (decayed: the last
        ~GUESS_MEMORY guesses per region)."""
        out = []
        for r, (h, n) in enumerate(prior):
            h, n = h + self.guesser.hits[r], n + self.guesser.hits[r] + self.guesser.misses[r]
            if n > GUESS_MEMORY:
                h, n = h * GUESS_MEMORY / n, GUESS_MEMORY
            out.append((h, n))
        return out


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
        self._plans: dict[tuple, _Plan] = {}  # per reference (small LRU: dicts keep insertion order)
        self._lock = threading.Lock()
        self._dec: _LeanDecoder | _HFDecoder | None = None
        self._head_cache: tuple[Any, torch.Tensor, torch.Tensor | None] | None = None
        # Counters of the last read_slots call (for benchmarks): forward calls of the LLM and
        # tokens through it, template passes, slot readings.
        self.stats: dict[str, int] = {}
        self._guess_prior: list[tuple[float, float]] = [(1.0, 2.0), (19.0, 20.0)]  # see _Guesser

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
        readings = self.read_many(audios, references)
        return [to_assessment(ref, r, self.options.mode, self.name) for ref, r in zip(references, readings)]

    def read_many(
        self, audios: Sequence[np.ndarray], references: Sequence[Reference], progress: Any = None
    ) -> list[list[SlotReading]]:
        """`read_slots` over any number of clips, in batches of options.batch_size made of clips
        of similar prompt length (audio tokens + text: less padding); results in input order.
        progress(done, total) is called after each batch."""
        n = len(audios)
        plans = self._plans_for(references)  # each computed once (most sentences differ)
        length = [len(p.prompt_ids) + audio_token_count(-(-len(a) // 160)) for a, p in zip(audios, plans)]
        order = sorted(range(n), key=length.__getitem__)
        out: list[list[SlotReading]] = [[] for _ in range(n)]
        bs = self.options.batch_size
        for i in range(0, n, bs):
            idx = order[i : i + bs]
            batch = self.read_slots([audios[j] for j in idx], [references[j] for j in idx], plans=[plans[j] for j in idx])
            for j, r in zip(idx, batch):
                out[j] = r
            if progress is not None:
                progress(min(i + bs, n), n)
        return out

    # -- decoding ----------------------------------------------------------------------------
    @torch.inference_mode()
    def read_slots(
        self, audios: Sequence[np.ndarray], references: Sequence[Reference], plans: Sequence[_Plan] | None = None
    ) -> list[list[SlotReading]]:
        """Constrained decode of one batch; per clip, the distribution at every slot.

        options.fast (default): `_read_one_fast` clip by clip; else the stock batched decoder.
        `self.stats` then counts the LLM forwards and tokens of this call."""
        self.stats = {"clips": len(audios), "forwards": 0, "llm_tokens": 0, "passes": 0, "side_tokens": 0, "slots": 0}
        if self.options.fast:
            together = self.options.batch_clips
            if together is None:
                together = self.device.type != "cpu"
            plans = plans or [self._plan(r) for r in references]
            if together and len(audios) > 1 and isinstance(self._decoder(), _LeanDecoder):
                return self._read_batch_fast(audios, plans)
            return [self._read_one_fast(np.asarray(a, dtype=np.float32), p) for a, p in zip(audios, plans)]
        return self._read_slots_naive(audios, references)

    def _read_slots_naive(
        self, audios: Sequence[np.ndarray], references: Sequence[Reference]
    ) -> list[list[SlotReading]]:
        """The stock path: processor features (30 s), full model forward (30 s encoder, padding
        masked), then one LLM step per stretch of forced text and one probe step per slot."""
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
        self.stats["forwards"] += 1
        self.stats["llm_tokens"] += int(mask.numel())
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
                self.stats["slots"] += 1
                chosen = slot.values[int(np.argmax(probs))]
                cursors[b] = nxt_cursor
                # Last slot: nothing more to decode for this row.
                new_feeds[b] = list(self.pieces(chosen)) + forced if cursors[b] < len(templates[b]) else []
            feeds = new_feeds
        return readings

    # -- fast path -----------------------------------------------------------------------------
    def _decoder(self) -> _LeanDecoder | _HFDecoder:
        if self._dec is None:
            lm, head = self.model.model.language_model, self.model.lm_head
            self._dec = _LeanDecoder.build(lm, head) or _HFDecoder(lm, head)
        return self._dec

    def _plan(self, reference: Reference, prompt_ids: list[int] | None = None) -> _Plan:
        """The audio-independent part of decoding `reference` (cached, small LRU); prompt_ids: its
        tokenised chat prompt when the caller already has it (`_plans_for` tokenises many at once)."""
        key = tuple((w, tuple(p)) for w, p in reference)
        with self._lock:
            plan = self._plans.pop(key, None)
        if plan is None:
            template = build_template(reference)
            audio_tok = getattr(self.processor, "audio_token", "<|AUDIO|>")
            audio_id = self.model.config.audio_token_id
            if prompt_ids is None:
                prompt_ids = list(self.tokenizer(chat_text(self.processor, reference))["input_ids"])
            if prompt_ids.count(audio_id) != 1:
                raise ValueError(f"the chat prompt must hold exactly one {audio_tok} placeholder")
            forced: list[list[int]] = [[]]
            slots_: list[Slot] = []
            for part in template:
                if isinstance(part, Slot):
                    slots_.append(part)
                    forced.append([])
                else:
                    forced[-1] += self.pieces(part)
            tries = [self._trie(sl.values) for sl in slots_]
            end_tok = [forced[k + 1][0] if forced[k + 1] else self.pieces.end_id for k in range(len(slots_))]
            cols, specs = _plan_cols(tries, end_tok)
            plan = _Plan(prompt_ids=prompt_ids, audio_at=prompt_ids.index(audio_id), slots=slots_, tries=tries,
                         forced=forced, end_tok=end_tok, cols=cols, specs=specs,
                         value_toks=[self._trie(sl.values).value_toks for sl in slots_])
        with self._lock:
            self._plans[key] = plan
            while len(self._plans) > 256:
                self._plans.pop(next(iter(self._plans)))
        return plan

    def _plans_for(self, references: Sequence[Reference]) -> list[_Plan]:
        """`_plan` of each reference; the chat prompts are tokenised in one call (in parallel)."""
        texts = [chat_text(self.processor, r) for r in references]
        ids = self.tokenizer(texts)["input_ids"] if texts else []
        return [self._plan(r, list(i)) for r, i in zip(references, ids)]

    def _head_rows(self, cols: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """lm_head weight (and bias) rows of the vocabulary ids `cols`, in float32 (cached for the
        last set). The readings take the head in float32 from the final hidden state, whatever the
        model's dtype: a few rows and columns, and bf16 logits would add rounding to every reading."""
        head = self.model.lm_head
        key = (id(head.weight), tuple(cols))
        if self._head_cache is None or self._head_cache[0] != key:
            idx = torch.tensor(cols, device=head.weight.device)
            bias = head.bias[idx].float() if getattr(head, "bias", None) is not None else None
            self._head_cache = (key, head.weight[idx].float(), bias)
        return self._head_cache[1], self._head_cache[2]

    def _read_one_fast(self, audio: np.ndarray, plan: _Plan) -> list[SlotReading]:
        """One clip: features and encoder on the real length, then `_decode_fast`."""
        dec = self._decoder()
        feats, n_frames = log_mel_features(self.processor.feature_extractor, audio)
        audio_emb = encode_audio_fast(self.model, feats.to(self.device), n_frames)
        return self._decode_fast(dec, plan, self._prompt_embeds(dec, plan, audio_emb))

    def _prompt_embeds(self, dec: _LeanDecoder | _HFDecoder, plan: _Plan, audio_emb: torch.Tensor) -> torch.Tensor:
        """(prompt tokens, hidden): the chat prompt's embeddings with the audio's in place of <|AUDIO|>."""
        n_tok, a = audio_emb.shape[0], plan.audio_at
        ids = plan.prompt_ids[:a] + [plan.prompt_ids[a]] * n_tok + plan.prompt_ids[a + 1 :]
        prompt = dec.embed(torch.tensor(ids, device=audio_emb.device))
        prompt[a : a + n_tok] = audio_emb.to(prompt.dtype)
        return prompt

    def _decode_fast(self, dec: _LeanDecoder | _HFDecoder, plan: _Plan, prompt: torch.Tensor) -> list[SlotReading]:
        """Speculative template decoding: the greedy constrained decode, exactly, in few forwards.

        A pass feeds a window of the template with *guessed* values in its slots, plus, for each
        slot whose value may continue after its probe token ("1" -> "1" or "10") and whose guess
        does not start with that token, the probe token as a side token (it attends to the
        sequence up to the slot and to itself; nothing attends to it). One forward reads every slot
        of the window; readings are kept up to the first slot whose greedy value differs from its
        guess: those had exactly the context greedy decoding gives them. The cache is cut back to
        just before that slot's value and the next pass continues from there with the right value.

        The first pass carries the prompt (the fixed part before the audio comes from a cache) and
        reads only the first slot; `_Guesser` picks later windows and guesses. A model that keeps
        defeating the guesses gets small windows, so it costs about what step-by-step decoding costs.
        The per-clip bookkeeping lives in `_ClipDecode`; `_decode_fast_batch` runs many clips at once.
        """
        dev = prompt.device
        w_head, b_head = self._head_rows(plan.cols)
        cache = dec.new_cache(prompt.shape[0] + plan.max_decode_tokens)
        a = plan.audio_at
        clip = _ClipDecode(plan, prompt, 0, self._guess_prior)
        if isinstance(dec, _LeanDecoder) and a > 0:
            k_pre, v_pre = dec.prefix(tuple(plan.prompt_ids[:a]))
            cache[0][:, :, :a] = k_pre
            cache[1][:, :, :a] = v_pre
            clip = _ClipDecode(plan, prompt[a:], a, self._guess_prior)
        while not clip.done:
            n_pre = clip.n_pre
            pre = clip.pre
            ids, pos, lim, n_main = clip.plan_pass()
            x = dec.embed(torch.tensor(ids, device=dev))
            if pre is not None:
                x = torch.cat((pre, x.to(pre.dtype)))
            hidden = dec.forward(cache, clip.past, x, torch.tensor(pos, device=dev), n_main, lim[n_main:])
            # the LM head on the rows and vocabulary columns that are read, nothing else
            logits = torch.nn.functional.linear(hidden[clip.need].float(), w_head, b_head)
            clip.read_pass(logits.float().cpu().numpy().astype(np.float64))
            self.stats["forwards"] += 1
            self.stats["passes"] += 1
            self.stats["llm_tokens"] += n_pre + len(ids)
            self.stats["side_tokens"] += len(ids) + n_pre - n_main
        self.stats["slots"] += len(clip.readings)
        self._guess_prior = clip.update_prior(self._guess_prior)
        return clip.readings

    # -- fast path, many clips at once (GPU throughput) -----------------------------------------
    def _read_batch_fast(self, audios: Sequence[np.ndarray], plans: Sequence[_Plan]) -> list[list[SlotReading]]:
        """Features and encoder for the batch at once (padding masked), then `_decode_fast_batch`.
        Readings equal `_read_one_fast`'s clip by clip (to float rounding)."""
        dec = self._decoder()
        feats, n_frames = log_mel_features_batch(self.processor.feature_extractor, audios, device=self.device)
        embs = encode_audio_batch(self.model, feats, n_frames)
        prompts = [self._prompt_embeds(dec, plan, e) for plan, e in zip(plans, embs)]
        return self._decode_fast_batch(dec, plans, prompts)

    def _decode_fast_batch(self, dec: _LeanDecoder, plans: Sequence[_Plan], prompts: Sequence[torch.Tensor]) -> list[list[SlotReading]]:
        """`_decode_fast` for many clips: each forward carries the next pass of every unfinished clip,
        right-padded to the longest (padding rows attend to entry 0 only and write their K/V to a
        spare cache column nobody reads). A clip's cache row holds exactly what its own decode would
        hold, at its own offsets (`_LeanDecoder.forward_batch`), so readings are the same."""
        dev = self.device
        B = len(plans)
        self.stats["padded_tokens"] = self.stats["compactions"] = 0
        # one cache row per clip, + 1 spare column for padding writes
        max_len = max(p.shape[0] + plan.max_decode_tokens for plan, p in zip(plans, prompts)) + 1
        cache = dec.new_cache(max_len, batch=B)
        spare = max_len - 1
        clips: list[_ClipDecode] = []
        for b, (plan, prompt) in enumerate(zip(plans, prompts)):
            a = plan.audio_at
            if a > 0:
                k_pre, v_pre = dec.prefix(tuple(plan.prompt_ids[:a]))
                cache[0][:, b, :, :a] = k_pre
                cache[1][:, b, :, :a] = v_pre
            clips.append(_ClipDecode(plan, prompt[a:], a, self._guess_prior))
        # vocabulary columns read by any clip; per clip, where its plan's columns are among them
        union = sorted({c for plan in plans for c in plan.cols})
        at = {c: i for i, c in enumerate(union)}
        sel = [np.array([at[c] for c in plan.cols]) for plan in plans]
        w_head, b_head = self._head_rows(union)
        hidden_size = prompts[0].shape[-1]
        row_of = list(range(B))  # cache row of each clip (rows are compacted as clips finish)
        active = list(range(B))
        while active:
            # rows 0..R-1 of the cache take part; those of finished clips carry padding only
            R = max(row_of[b] for b in active) + 1
            passes = {}
            for b in active:
                c = clips[b]
                pre, n_pre, past = c.pre, c.n_pre, c.past
                passes[row_of[b]] = (b, pre, n_pre, past, *c.plan_pass())
            T = max(n_pre + len(ids) for _, _, n_pre, _, ids, *_ in passes.values())
            pos = np.zeros((R, T), dtype=np.int64)
            lim = np.ones((R, T), dtype=np.int64)  # padding rows attend to entry 0 only ...
            write = np.full((R, T), spare, dtype=np.int64)  # ... and write to the spare column
            x = torch.zeros((R, T, hidden_size), dtype=prompts[0].dtype, device=dev)
            flat_ids, id_r, id_t = [], [], []  # the fed ids, and the (row, pass position) of each
            for r, (b, pre, n_pre, past, ids, p, l, n_main) in passes.items():
                n = len(p)
                pos[r, :n] = p
                lim[r, :n] = l
                write[r, :n] = np.arange(past, past + n)
                if pre is not None:
                    x[r, :n_pre] = pre
                flat_ids.append(np.asarray(ids, dtype=np.int64))
                id_r.append(np.full(len(ids), r))
                id_t.append(np.arange(n_pre, n))
                self.stats["llm_tokens"] += n
                self.stats["side_tokens"] += n - n_main
            ids_all = torch.from_numpy(np.concatenate(flat_ids)).to(dev)
            if ids_all.numel():
                at_r, at_t = (torch.from_numpy(np.concatenate(v)).to(dev) for v in (id_r, id_t))
                x[at_r, at_t] = dec.embed(ids_all).to(x.dtype)
            n_keys = int(write.max(where=write != spare, initial=0)) + 1
            hidden = dec.forward_batch(cache, x, torch.from_numpy(pos).to(dev), torch.from_numpy(lim).to(dev),
                                       torch.from_numpy(write).to(dev), n_keys)  # (R, T, hidden)
            need_r = np.concatenate([np.full(len(clips[b].need), row_of[b]) for b in active])
            need_t = np.concatenate([np.asarray(clips[b].need) for b in active])
            h = hidden[torch.from_numpy(need_r).to(dev), torch.from_numpy(need_t).to(dev)]
            logits = torch.nn.functional.linear(h.float(), w_head, b_head).cpu().numpy().astype(np.float64)
            i = 0
            for b in active:
                n = len(clips[b].need)
                clips[b].read_pass(logits[i : i + n][:, sel[b]])
                i += n
            self.stats["forwards"] += 1
            self.stats["passes"] += len(active)
            self.stats["padded_tokens"] += R * T
            active = [b for b in active if not clips[b].done]
            if active and len(active) <= R * 3 // 4:
                # compact: the unfinished clips' cache rows move to the front, one layer at a time
                keep = torch.tensor([row_of[b] for b in active], device=dev)
                for K in cache:
                    for layer in range(K.shape[0]):
                        K[layer, : len(active)] = K[layer, keep]
                for i, b in enumerate(active):
                    row_of[b] = i
                self.stats["compactions"] += 1
        for c in clips:
            self.stats["slots"] += len(c.readings)
            self._guess_prior = c.update_prior(self._guess_prior)
        return [c.readings for c in clips]

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
        self.stats["forwards"] = self.stats.get("forwards", 0) + 1
        self.stats["llm_tokens"] = self.stats.get("llm_tokens", 0) + B * T
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
    from apa.mini import check_adapter_base
    check_adapter_base(model, adapter)  # another base than the adapter's: a warning (an error when strict)
    return AudioLMMScorer.from_pretrained(model, adapter, device=device, options=options)
