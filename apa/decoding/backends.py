"""Decoder backends: the language model's forward over a KV cache with *tree* attention.

A pass of the template decoder feeds `main` tokens (a plain causal sequence) and `side` tokens
(probe tokens: each attends to a prefix of the sequence and to itself; nothing attends to it),
so one forward reads every slot of a window. `DecoderBackend` is what the decoders need;
`LeanDecoder` is an inference-only forward of Llama/Qwen2-style decoders with a preallocated
cache (and many sequences at once, `forward_batch`); `HFDecoder` runs transformers' own forward
with a 4D mask, for anything `LeanDecoder.build` does not cover.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable, Protocol

import torch

Linear = torch.nn.functional.linear


def tree_mask(n_keys: int, lim: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """Boolean attention mask (*lim.shape, n_keys): the query at [..., t] sees the cache entries
    < lim[..., t] and its own entry own[..., t]. Main tokens have lim = own + 1 (causal)."""
    cols = torch.arange(n_keys, device=lim.device)
    return (cols < lim[..., None]) | (cols == own[..., None])


def sequence_limits(
    past: int, T: int, n_main: int, side_lim: Sequence[int], device: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """(lim, own) (T,) of a pass of T tokens on a cache holding `past`: main token t sees
    everything before it; side token s the first side_lim[s] entries; each token itself."""
    own = past + torch.arange(T, device=device)
    lim = own + 1
    if T > n_main:
        lim[n_main:] = torch.as_tensor(list(side_lim), device=device)
    return lim, own


class HeadRows:
    """lm_head weight (and bias) rows of some vocabulary ids, in float32, cached for the last set.

    The readings take the head in float32 from the final hidden state whatever the model's dtype:
    only a few rows are read, and bf16 logits would add rounding to every reading."""

    def __init__(self, head: Any):
        self.head = head
        self._cache: tuple[Any, torch.Tensor, torch.Tensor | None] | None = None

    def __call__(self, cols: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight (len(cols), hidden) float32, bias (len(cols),) float32 or None)."""
        head = self.head
        key = (id(head.weight), tuple(cols))
        cached = self._cache
        if cached is None or cached[0] != key:
            idx = torch.tensor(list(cols), device=head.weight.device)
            bias = head.bias[idx].float() if getattr(head, "bias", None) is not None else None
            cached = self._cache = (key, head.weight[idx].float(), bias)
        return cached[1], cached[2]


class DecoderBackend(Protocol):
    """The language model as the template decoders drive it.

    Tensors: x (T, hidden) input embeddings; pos (T,) long RoPE positions; hidden states out are
    final-normed (T, hidden), in the model dtype. `batched` backends also run `forward_batch`."""

    batched: bool
    head_rows: HeadRows

    def new_cache(self, max_len: int, batch: int | None = None) -> Any:
        """An empty KV cache for max_len tokens (of `batch` sequences, for `forward_batch`)."""
        ...

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings (*ids.shape, hidden)."""
        ...

    def load_prefix(self, cache: Any, ids: Sequence[int], row: int | None = None) -> int:
        """Put the K/V of the token prefix `ids` (the same for every prompt) at the start of the
        cache (of its row `row`); returns how many tokens it put there (0: not supported)."""
        ...

    def forward(
        self, cache: Any, past: int, x: torch.Tensor, pos: torch.Tensor, n_main: int, side_lim: Sequence[int]
    ) -> torch.Tensor:
        """n_main main tokens then T - n_main side tokens after the `past` tokens in the cache;
        side token s attends to the first side_lim[s] cache+main tokens and itself. Returns
        (T, hidden); the cache then holds past + T tokens (callers continue from any shorter length)."""
        ...

    def forward_batch(
        self, cache: Any, x: torch.Tensor, pos: torch.Tensor, lim: torch.Tensor, write: torch.Tensor, n_keys: int
    ) -> torch.Tensor:
        """R sequences at once, each in its own cache row (see `LeanDecoder.forward_batch`)."""
        ...


def _rope(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE applied as (t1, t2) -> (t1 cos - t2 sin, t2 cos + t1 sin) per half of the last axis:
    the same roundings as transformers' t * cos + rotate_half(t) * sin, without concatenations."""
    half = t.shape[-1] // 2
    t1, t2 = t[..., :half], t[..., half:]
    out = torch.empty_like(t)
    torch.mul(t1, cos, out=out[..., :half]).sub_(t2 * sin)
    torch.mul(t2, cos, out=out[..., half:]).add_(t1 * sin)
    return out


# attend(layer, q (..., H, T, D), k (..., KV, T, D), v (..., T, KV, D)) -> attention output (..., T, H * D)
Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class LeanDecoder:
    """Inference-only forward of a Llama/Qwen2-style decoder (the LLM of Qwen2Audio and apa-mini)
    with a preallocated KV cache, main and side tokens (`DecoderBackend`).

    Same operations, in the same order, as transformers' LlamaDecoderLayer / Qwen2DecoderLayer
    (RMSNorm in float32, default RoPE, SDPA, SiLU MLP); `build` returns None for anything else
    (another architecture, RoPE scaling, sliding windows, LoRA layers not merged): use `HFDecoder`.
    """

    batched = True

    def __init__(self, lm: Any, head: Any):
        cfg = lm.config
        self.lm, self.head = lm, head
        self.head_rows = HeadRows(head)
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
    def build(cls, lm: Any, head: Any) -> LeanDecoder | None:
        """A LeanDecoder over `lm` (the decoder model, e.g. `model.model.language_model`) and
        `head` (the LM head), or None when the model is not one it reproduces exactly."""
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

    def new_cache(self, max_len: int, batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V, each (layers, kv heads, max_len, head dim), or (layers, batch, kv heads, ...).
        A batch cache starts zeroed: a row reads (masked) columns it never wrote, and a masked
        NaN of uninitialised memory would still reach the output (0 * NaN)."""
        p = self.layers[0][1].weight
        if batch is None:
            shape = (len(self.layers), self.n_kv, max_len, self.head_dim)
            make = torch.empty
        else:
            shape = (len(self.layers), batch, self.n_kv, max_len, self.head_dim)
            make = torch.zeros
        return make(shape, dtype=p.dtype, device=p.device), make(shape, dtype=p.dtype, device=p.device)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm.embed_tokens(ids)

    def load_prefix(self, cache: Any, ids: Sequence[int], row: int | None = None) -> int:
        """K/V of the fixed prompt part before the audio (system prompt, "Audio 1: <|audio_bos|>"),
        computed once and copied into each new cache (into row `row` of a batch cache)."""
        ids = tuple(ids)
        n = len(ids)
        if n == 0:
            return 0
        if self._prefix is None or self._prefix[0] != ids:
            pre = self.new_cache(n)
            dev = pre[0].device
            self.forward(pre, 0, self.embed(torch.tensor(ids, device=dev)), torch.arange(n, device=dev), n, ())
            self._prefix = (ids, pre)
        for dst, src in zip(cache, self._prefix[1]):
            if row is None:
                dst[:, :, :n] = src
            else:
                dst[:, row, :, :n] = src
        return n

    @staticmethod
    def _rms(norm: Any, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and norm.weight.dtype == torch.float32:  # one fused kernel, same result
            return torch.nn.functional.rms_norm(x, norm.weight.shape, norm.weight, norm.variance_epsilon)
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        return norm.weight * h.to(x.dtype)

    def _rope_tables(self, pos: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (*pos.shape, head dim / 2) as transformers computes them: float32, then `dtype`."""
        freqs = pos.to(torch.float32)[..., None] * self.inv_freq.to(device=pos.device, dtype=torch.float32)
        return (freqs.cos() * self.rope_scale).to(dtype), (freqs.sin() * self.rope_scale).to(dtype)

    def _layers(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend: Attend) -> torch.Tensor:
        """The decoder layers on x (..., T, hidden) with `attend` doing the cache writes and the
        attention; returns the final-normed hidden states (..., T, hidden)."""
        lead = x.shape[:-1]
        H, KV, D = self.n_heads, self.n_kv, self.head_dim
        x = x.clone()  # updated in place below
        for i, (n1, wq, wk, wv, wo, n2, wg, wu, wd) in enumerate(self.layers):
            h = self._rms(n1, x)
            q = _rope(Linear(h, wq.weight, wq.bias).view(*lead, H, D).transpose(-3, -2), cos, sin)
            k = _rope(Linear(h, wk.weight, wk.bias).view(*lead, KV, D).transpose(-3, -2), cos, sin)
            v = Linear(h, wv.weight, wv.bias).view(*lead, KV, D)
            x += Linear(attend(i, q, k, v), wo.weight, wo.bias)
            h = self._rms(n2, x)
            gate = torch.nn.functional.silu(Linear(h, wg.weight, wg.bias))
            gate.mul_(Linear(h, wu.weight, wu.bias))
            x += Linear(gate, wd.weight, wd.bias)
        return self._rms(self.lm.norm, x)

    def forward(
        self, cache: Any, past: int, x: torch.Tensor, pos: torch.Tensor, n_main: int, side_lim: Sequence[int]
    ) -> torch.Tensor:
        """See `DecoderBackend.forward`; cache from `new_cache(max_len)`."""
        K, V = cache
        T = x.shape[0]
        H, KV, D = self.n_heads, self.n_kv, self.head_dim
        end = past + T
        mask = None  # is_causal instead, for a plain sequence on an empty cache
        if past > 0 or T > n_main:
            lim, own = sequence_limits(past, T, n_main, side_lim, x.device)
            mask = tree_mask(end, lim, own)[None, None]
        cos, sin = self._rope_tables(pos, x.dtype)

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            K[i, :, past:end] = k
            V[i, :, past:end] = v.transpose(0, 1)
            sdpa = torch.nn.functional.scaled_dot_product_attention
            o = sdpa(q[None], K[i, :, :end][None], V[i, :, :end][None], attn_mask=mask,
                     is_causal=mask is None and T > 1, scale=self.scaling, enable_gqa=H != KV)
            return o[0].transpose(0, 1).reshape(T, H * D)

        return self._layers(x, cos, sin, attend)

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
        H, KV, D = self.n_heads, self.n_kv, self.head_dim
        cos, sin = self._rope_tables(pos, x.dtype)
        cos, sin = cos[:, None], sin[:, None]  # (R, 1, T, D/2): broadcast over heads
        mask = tree_mask(n_keys, lim, write)[:, None]  # (R, 1, T, n_keys)
        G = H // KV  # query heads per K/V head: they go into the query length (R, KV, G * T, D), so
        if G > 1:  # that memory-efficient SDPA kernels (masks, no grouped heads) need no K/V copies
            mask = mask.repeat(1, 1, G, 1)
        rows = torch.arange(R, device=x.device)[:, None].expand(R, T)

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            K[i][rows, :, write] = k.transpose(1, 2)  # (R, T, KV, D) into (row, :, column)
            V[i][rows, :, write] = v
            kk, vv = K[i][:R, :, :n_keys], V[i][:R, :, :n_keys]
            sdpa = torch.nn.functional.scaled_dot_product_attention
            o = sdpa(q.reshape(R, KV, G * T, D), kk, vv, attn_mask=mask, scale=self.scaling).reshape(R, H, T, D)
            return o.transpose(1, 2).reshape(R, T, H * D)

        return self._layers(x, cos, sin, attend)


class HFDecoder:
    """`DecoderBackend` over transformers' own language-model forward (a DynamicCache and a 4D
    boolean mask): the fallback for models `LeanDecoder` does not cover. One sequence at a time."""

    batched = False

    def __init__(self, lm: Any, head: Any):
        self.lm, self.head = lm, head
        self.head_rows = HeadRows(head)

    def new_cache(self, max_len: int, batch: int | None = None) -> Any:
        if batch is not None:
            raise NotImplementedError("HFDecoder decodes one sequence at a time")
        from transformers.cache_utils import DynamicCache

        return DynamicCache(config=self.lm.config)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm.get_input_embeddings()(ids)

    def load_prefix(self, cache: Any, ids: Sequence[int], row: int | None = None) -> int:
        return 0  # the prefix goes through the first pass with the rest of the prompt

    def forward(
        self, cache: Any, past: int, x: torch.Tensor, pos: torch.Tensor, n_main: int, side_lim: Sequence[int]
    ) -> torch.Tensor:
        extra = cache.get_seq_length() - past
        if extra > 0:
            cache.crop(-extra)
        T = x.shape[0]
        lim, own = sequence_limits(past, T, n_main, side_lim, x.device)
        mask = tree_mask(past + T, lim, own)
        out = self.lm(inputs_embeds=x[None], attention_mask=mask[None, None], position_ids=pos[None],
                      past_key_values=cache, use_cache=True)
        return out.last_hidden_state[0]

    def forward_batch(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError("HFDecoder decodes one sequence at a time")


def build_backend(model: Any) -> DecoderBackend:
    """The backend for a Qwen2Audio-class model: `LeanDecoder` where it applies, else `HFDecoder`."""
    lm, head = model.model.language_model, model.lm_head
    return LeanDecoder.build(lm, head) or HFDecoder(lm, head)
