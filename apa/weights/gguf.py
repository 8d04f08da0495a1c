"""GGUF (v2/v3): metadata, tensor directory, and what apa-mini derives from them (SmolLM2's
tokenizer and LlamaConfig kwargs).

Only the header is read (a memory map), much faster than gguf.GGUFReader for SmolLM2's 49k-token
vocabulary. The tensor *data* is dequantised by transformers (`from_pretrained(gguf_file=...)`);
this module only tells which tensors there are and of which GGML type.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors
from tokenizers.models import BPE

from apa.weights.reader import ByteCursor, WeightsFormatError, map_file

__all__ = [
    "GgufFormatError",
    "GgufTensorInfo",
    "read_gguf_metadata",
    "read_gguf_tensor_types",
    "text_config_from_gguf",
    "tokenizer_from_gguf",
]

FORMAT_NAME = "GGUF"
# GGUF metadata value types -> struct format (8 string and 9 array are handled apart).
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_TOKEN_CONTROL = 3  # tokenizer.ggml.token_type of control (special) tokens


class GgufFormatError(WeightsFormatError):
    """A GGUF file that is truncated, of an unsupported version, or not what apa-mini expects."""


@dataclass(frozen=True)
class GgufTensorInfo:
    """One entry of a GGUF tensor directory. `shape` is in GGUF order (fastest dimension first);
    `ggml_type` is the GGMLQuantizationType code (0 F32, 1 F16, 3 Q4_1, 8 Q8_0, ...)."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int


def _string(cur: ByteCursor) -> str:
    (n,) = cur.unpack("Q", "string length")
    return cur.raw(n, "string").decode("utf-8")


def _value(cur: ByteCursor, kind: int) -> Any:
    if kind in _SCALARS:
        return cur.unpack(_SCALARS[kind], "value")[0]
    if kind == _STRING:
        return _string(cur)
    if kind == _ARRAY:
        item, n = cur.unpack("IQ", "array header")
        if item in _SCALARS:
            dt = np.dtype("<" + _SCALARS[item])
            s = cur.take(n * dt.itemsize, "array")
            return np.frombuffer(cur.buf, dtype=dt, count=n, offset=s).copy()
        return [_value(cur, item) for _ in range(n)]
    raise cur.fail(f"unknown value type {kind}")


def _read_header(path: str | os.PathLike) -> tuple[dict[str, Any], list[GgufTensorInfo]]:
    """(key/value metadata, tensor directory) of a GGUF file."""
    path = Path(path)
    buf, _ = map_file(path)
    cur = ByteCursor(buf, str(path), format_name=FORMAT_NAME, error=GgufFormatError)
    if cur.raw(4, "magic") != b"GGUF":
        raise cur.fail("not a GGUF file (bad magic)")
    version, n_tensors, n_kv = cur.unpack("IQQ", "header")
    if version not in (2, 3):
        raise cur.fail(f"version {version} is not supported")
    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key = _string(cur)
        (kind,) = cur.unpack("I", "value type")
        meta[key] = _value(cur, kind)
    tensors = []
    for _ in range(n_tensors):
        name = _string(cur)
        (n_dims,) = cur.unpack("I", "tensor rank")
        *shape, ggml_type, offset = cur.unpack("Q" * n_dims + "IQ", f"tensor info of {name}")
        tensors.append(GgufTensorInfo(name, tuple(int(d) for d in shape), int(ggml_type), int(offset)))
    return meta, tensors


def read_gguf_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Key/value metadata of a GGUF file (v2/v3), plus `"__tensors__"`: the tensor names in file order.

    Numeric arrays come back as numpy arrays, strings as str. Raises GgufFormatError on a file
    that is not GGUF, of another version, or truncated.
    """
    meta, tensors = _read_header(path)
    meta["__tensors__"] = [t.name for t in tensors]
    return meta


def read_gguf_tensor_types(path: str | os.PathLike) -> dict[str, GgufTensorInfo]:
    """The tensor directory of a GGUF file: GGUF tensor name -> GgufTensorInfo (type, shape, offset)."""
    return {t.name: t for t in _read_header(path)[1]}


def tokenizer_from_gguf(meta: Mapping[str, Any]) -> Tokenizer:
    """SmolLM2's tokenizer rebuilt from GGUF vocab + merges, with the pipeline of its tokenizer.json
    (Digits(individual) -> ByteLevel, plain BPE; control tokens added as special tokens)."""
    if meta.get("tokenizer.ggml.model") != "gpt2" or meta.get("tokenizer.ggml.pre") != "smollm":
        raise GgufFormatError(
            f"expected a SmolLM (gpt2/smollm) GGUF tokenizer, got {meta.get('tokenizer.ggml.model')!r}/"
            f"{meta.get('tokenizer.ggml.pre')!r}"
        )
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ")) for m in meta["tokenizer.ggml.merges"]]
    if any(len(m) != 2 for m in merges):
        raise GgufFormatError("malformed GGUF merges")
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise GgufFormatError("duplicate tokens in the GGUF vocabulary")
    tok = Tokenizer(BPE(vocab, merges, dropout=None, unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    control = np.flatnonzero(np.asarray(meta["tokenizer.ggml.token_type"]) == _TOKEN_CONTROL)
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False) for i in control])
    return tok


def text_config_from_gguf(meta: Mapping[str, Any]) -> dict[str, Any]:
    """LlamaConfig kwargs from GGUF metadata (what transformers derives, without re-reading the file)."""
    if meta.get("general.architecture") != "llama":
        raise GgufFormatError(f"expected a llama GGUF, got {meta.get('general.architecture')!r}")
    hidden, heads = int(meta["llama.embedding_length"]), int(meta["llama.attention.head_count"])
    return dict(
        hidden_size=hidden,
        intermediate_size=int(meta["llama.feed_forward_length"]),
        num_hidden_layers=int(meta["llama.block_count"]),
        num_attention_heads=heads,
        num_key_value_heads=int(meta["llama.attention.head_count_kv"]),
        head_dim=int(meta.get("llama.rope.dimension_count", hidden // heads)),
        max_position_embeddings=int(meta["llama.context_length"]),
        rms_norm_eps=float(str(np.float32(meta["llama.attention.layer_norm_rms_epsilon"]))),  # 1e-05, not 9.99e-06
        rope_parameters={"rope_type": "default", "rope_theta": float(meta["llama.rope.freq_base"])},
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings="output.weight" not in meta["__tensors__"],
        vocab_size=len(meta["tokenizer.ggml.tokens"]),
    )
