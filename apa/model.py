"""Compatibility shim: the scorer moved to `apa.scorer`, decoding to `apa.decoding`.

`from apa.model import load_scorer, AudioLMMScorer, DecodeOptions, ...` keeps working; new code
imports from `apa.scorer` / `apa.decoding`.
"""

from apa.config import DEFAULT_ADAPTER, REPO_ROOT, pick_device, pick_dtype
from apa.decoding import (
    HFDecoder, LeanDecoder, PieceTokenizer, Plan, SlotReading, Trie, audio_token_count, build_trie, chat_text,
    encode_audio_batch, encode_audio_fast, encode_target, end_token_id, log_mel_features, log_mel_features_batch,
    value_probs,
)
from apa.scorer import MODES, AudioLMMScorer, DecodeOptions, Scorer, load_adapter, load_scorer, to_assessment

__all__ = [
    "DEFAULT_ADAPTER", "MODES", "REPO_ROOT", "AudioLMMScorer", "DecodeOptions", "HFDecoder", "LeanDecoder",
    "PieceTokenizer", "Plan", "Scorer", "SlotReading", "Trie", "audio_token_count", "build_trie", "chat_text",
    "encode_audio_batch", "encode_audio_fast", "encode_target", "end_token_id", "load_adapter", "load_scorer",
    "log_mel_features", "log_mel_features_batch", "pick_device", "pick_dtype", "to_assessment", "value_probs",
]
