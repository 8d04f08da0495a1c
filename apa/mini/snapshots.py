"""Local stand-ins for the two Hub repositories apa-mini's Hub route reads, written from the
offline packages: for testing the Hub route (and a Space's start-up) without a network.

`write_hub_snapshots(root)` writes, per repository, the files the Hub route downloads, in the
Hub repository's layout:

    HuggingFaceTB/SmolLM2-135M-Instruct   config.json (LlamaForCausalLM, tied embeddings),
                                          model.safetensors (no lm_head: tied), tokenizer.json,
                                          tokenizer_config.json, generation_config.json
    openai/whisper-base                   config.json (WhisperForConditionalGeneration),
                                          model.safetensors ("model.encoder.*", "model.decoder.*")

The weights are the packages' values: the GGUF dequantised, the fp16 encoder widened to float32
(the Hub stores float32/bf16 originals, which the route rounds to these same values). Whisper's
decoder, which apa-mini does not use, is all zeros. With `hf_cache=True` the
directories are laid out as a Hugging Face Hub cache (`models--org--name/snapshots/<rev>` and
`refs/main`), so that `HF_HUB_CACHE=root HF_HUB_OFFLINE=1` serves them to `snapshot_download`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, WhisperConfig, WhisperForConditionalGeneration

from apa.mini.constants import BOS_TOKEN, EOS_TOKEN, SMOLLM_HUB_ID, UNK_TOKEN, WHISPER_HUB_ID
from apa.mini.sources import joined_whisper_ct2, load_smollm_gguf, smollm_gguf
from apa.weights.ct2 import read_ct2_model_bin, whisper_encoder_from_ct2

__all__ = ["LOCAL_REVISION", "WHISPER_BASE_CONFIG", "write_hub_snapshots"]

LOCAL_REVISION = hashlib.sha1(b"apa-mini local snapshot from the weight packages").hexdigest()
# openai/whisper-base's architecture (its config.json's numbers).
WHISPER_BASE_CONFIG = dict(
    vocab_size=51865, num_mel_bins=80, d_model=512, encoder_layers=6, decoder_layers=6,
    encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048,
    max_source_positions=1500, max_target_positions=448,
)


def _repo_dir(root: Path, repo_id: str, hf_cache: bool) -> Path:
    if not hf_cache:
        return root / repo_id.replace("/", "--")
    storage = root / f"models--{repo_id.replace('/', '--')}"
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / "main").write_text(LOCAL_REVISION)
    return storage / "snapshots" / LOCAL_REVISION


def _write_smollm(d: Path) -> None:
    state, text_config, tokenizer = load_smollm_gguf(smollm_gguf())
    config = LlamaConfig(**text_config, bos_token_id=1, eos_token_id=2)
    config.architectures = ["LlamaForCausalLM"]
    with torch.device("meta"):
        llm = LlamaForCausalLM(config)
    llm.load_state_dict({f"model.{k}" if k != "lm_head.weight" else k: v for k, v in state.items()},
                        strict=True, assign=True)
    llm.tie_weights()
    llm.save_pretrained(str(d))
    GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=2).save_pretrained(str(d))
    tokenizer.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2Tokenizer", "bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN,
        "unk_token": UNK_TOKEN, "pad_token": EOS_TOKEN, "model_max_length": 8192,
        "clean_up_tokenization_spaces": False,
    }, indent=2) + "\n")


def _write_whisper(d: Path) -> None:
    with joined_whisper_ct2() as ct2:
        encoder, _ = whisper_encoder_from_ct2(read_ct2_model_bin(ct2 / "model.bin"))
    config = WhisperConfig(**WHISPER_BASE_CONFIG)
    config.architectures = ["WhisperForConditionalGeneration"]
    with torch.device("meta"):
        whisper = WhisperForConditionalGeneration(config)
    whisper.to_empty(device="cpu")
    whisper.tie_weights()  # to_empty gives every parameter its own storage
    with torch.no_grad():
        for p in whisper.parameters():
            p.zero_()
    whisper.model.encoder.load_state_dict({k: torch.from_numpy(v) for k, v in encoder.items()}, strict=True)
    whisper.save_pretrained(str(d))


def write_hub_snapshots(root: str | Path, *, hf_cache: bool = False) -> dict[str, Path]:
    """Write both repositories under `root` from the installed weight packages; return
    {Hub id: directory}, as `assemble_apa_mini(snapshots=...)` takes it."""
    root = Path(root)
    dirs = {repo: _repo_dir(root, repo, hf_cache) for repo in (SMOLLM_HUB_ID, WHISPER_HUB_ID)}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    _write_smollm(dirs[SMOLLM_HUB_ID])
    _write_whisper(dirs[WHISPER_HUB_ID])
    return dirs
