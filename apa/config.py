"""The one place where paths, environment variables, the model/adapter choice and the device
are resolved. Every other module asks here; none reads `os.environ` for these itself.

Environment variables (all optional):

    APA_SO762_DIR   Speechocean762 root (Kaldi layout)   default: ../shared/speechocean762 beside the repo
    APA_CACHE       where apa-mini is assembled           default: ~/.cache/apa
    APA_MODEL       model: Hub id or local dir            default: apa-mini
    APA_ADAPTER     PEFT adapter dir, or "none"           default: the shipped adapter (assets/)
    APA_DEVICE      torch device                          default: cuda if available, else cpu
    APA_STRICT_BASE "1": an adapter loaded onto another base than it was trained on is an error,
                    not a warning (the tests set it)    default: warning
    APA_CONCURRENCY scorings the web app runs at once     default: 1 (one model)
    APA_ANALYTICS   "1": let Gradio send analytics and check its version   default: off
    APA_TRUST_FORWARDED "1": client address from X-Forwarded-For (behind a proxy)
                    default: on when on Hugging Face Spaces (SPACE_ID set), else off
    APA_TINY_DIR    a prebuilt tiny random model for the tests   default: built per test session
    APA_CHROMIUM    the browser the browser tests drive          default: chromium on PATH
    APA_STAGE_LOG   file bench.api_overhead's server logs its stage timings to   default: none
    APA_TRANSCRIBER speech recogniser for what was said: "whisper-base", a CTranslate2 Whisper
                    dir or Hub id, or "none" (the tests set it)   default: whisper-base

Read here too (other programs' settings this project follows): GRADIO_SERVER_NAME and
GRADIO_SERVER_PORT (app.py's default address), SPACE_ID (running on Hugging Face Spaces),
OMP_NUM_THREADS (reported by the benchmarks, passed on to child processes).

"No adapter given" means the same everywhere (`resolve_adapter`): with the default model,
the shipped adapter; with another model, none. Only the explicit word "none" asks for the
bare base model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = "apa-mini"
DEFAULT_ADAPTER = REPO_ROOT / "assets" / "apa-mini-adapter"
NO_ADAPTER = "none"
MAX_TEXT_CHARS = 400  # reference text length accepted from users (app, API, CLI, batch)


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def corpus_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Speechocean762 root: the argument, else $APA_SO762_DIR, else ../shared/speechocean762."""
    if explicit:
        return Path(explicit).expanduser()
    env = _env("APA_SO762_DIR")
    return Path(env).expanduser() if env else REPO_ROOT.parent / "shared" / "speechocean762"


def cache_dir() -> Path:
    """Where built models live: $APA_CACHE, else ~/.cache/apa."""
    env = _env("APA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "apa"


def tiny_model_dir() -> Path | None:
    """$APA_TINY_DIR: a prebuilt tiny random model for the tests (apa.mini.build_tiny_model), else None."""
    env = _env("APA_TINY_DIR")
    return Path(env).expanduser() if env else None


def strict_base_check() -> bool:
    """$APA_STRICT_BASE is "1"/"true"/"yes": an adapter/base mismatch raises instead of warning."""
    return (_env("APA_STRICT_BASE") or "").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class ModelChoice:
    """model: "apa-mini", a Hub id or a local dir; adapter: a dir, a Hub id, or None (bare base)."""

    model: str
    adapter: str | None

    @property
    def is_default_model(self) -> bool:
        return self.model == DEFAULT_MODEL


def resolve_model(model: str | None = None, adapter: str | None = None) -> ModelChoice:
    """Arguments first, then $APA_MODEL / $APA_ADAPTER, then the defaults.

    adapter None (not given anywhere): the shipped adapter with apa-mini, none with other models;
    "none": the bare base model. A default adapter that is missing is an error, not a fallback."""
    model = model or _env("APA_MODEL") or DEFAULT_MODEL
    adapter = adapter or _env("APA_ADAPTER")
    if adapter is None:
        adapter = str(DEFAULT_ADAPTER) if model == DEFAULT_MODEL else None
    elif adapter.strip().lower() == NO_ADAPTER:
        adapter = None
    return ModelChoice(model=model, adapter=adapter)


ADAPTER_HELP = (
    "PEFT adapter dir (or Hub id); 'none' for the bare base model. Not given: the shipped adapter "
    f"({DEFAULT_ADAPTER.relative_to(REPO_ROOT)}) with apa-mini, none with another model (env APA_ADAPTER)"
)
MODEL_HELP = "'apa-mini' (default), a Hub id or a local dir (env APA_MODEL)"


DEFAULT_TRANSCRIBER = "whisper-base"  # Whisper base (CTranslate2) assembled from the apa-mini weight packages
TRANSCRIBER_HUB_FALLBACK = "Systran/faster-whisper-base"  # the same model on the Hub, where the packages are absent
NO_TRANSCRIBER = "none"


def transcriber_choice(explicit: str | None = None) -> str | None:
    """Which speech recogniser reads what was said (apa.transcribe): the argument, else
    $APA_TRANSCRIBER, else DEFAULT_TRANSCRIBER. A value is "whisper-base", a CTranslate2 Whisper
    directory or a Hub id of one (e.g. Systran/faster-whisper-base); "none" turns transcription
    off (returns None)."""
    choice = explicit or _env("APA_TRANSCRIBER") or DEFAULT_TRANSCRIBER
    return None if choice.strip().lower() == NO_TRANSCRIBER else choice


def whisper_dir() -> Path:
    """Where the packaged Whisper base is assembled for transcription: cache_dir() / "whisper-base-ct2"."""
    return cache_dir() / "whisper-base-ct2"


def scorer_concurrency() -> int:
    """How many scorings the web app runs at once: $APA_CONCURRENCY, else 1 (one model)."""
    return max(1, int(_env("APA_CONCURRENCY") or 1))


def _flag(name: str, default: bool = False) -> bool:
    value = _env(name)
    return default if value is None else value.lower() in ("1", "true", "yes", "on")


def gradio_analytics() -> bool:
    """Whether the web app lets Gradio send analytics and check for updates: $APA_ANALYTICS, else no."""
    return _flag("APA_ANALYTICS")


def trust_forwarded() -> bool:
    """Whether the client address comes from X-Forwarded-For: $APA_TRUST_FORWARDED, else only on
    Hugging Face Spaces (whose proxy sets it)."""
    return _flag("APA_TRUST_FORWARDED", default=_env("SPACE_ID") is not None)


def on_spaces() -> bool:
    """Whether this process runs on Hugging Face Spaces ($SPACE_ID is set)."""
    return _env("SPACE_ID") is not None


def server_address(default_host: str, default_port: int) -> tuple[str, int]:
    """The web app's default (host, port): $GRADIO_SERVER_NAME / $GRADIO_SERVER_PORT, else the defaults."""
    return _env("GRADIO_SERVER_NAME") or default_host, int(_env("GRADIO_SERVER_PORT") or default_port)


def omp_threads() -> str | None:
    """$OMP_NUM_THREADS as set (None when unset)."""
    return _env("OMP_NUM_THREADS")


def stage_log() -> Path | None:
    """$APA_STAGE_LOG: where bench.api_overhead's server appends its per-stage timings, else None."""
    env = _env("APA_STAGE_LOG")
    return Path(env) if env else None


def browser_path() -> str | None:
    """$APA_CHROMIUM: the Chromium binary the browser tests drive, else None (look on PATH)."""
    return _env("APA_CHROMIUM")


def cuda_available() -> bool:
    """Whether torch sees a CUDA device."""
    import torch

    return torch.cuda.is_available()


def pick_device(device: Any = None) -> Any:
    """A torch.device: the argument, else $APA_DEVICE, else cuda when available, else cpu."""
    import torch

    if isinstance(device, torch.device):
        return device
    device = device or _env("APA_DEVICE")
    if device:
        return torch.device(device)
    return torch.device("cuda" if cuda_available() else "cpu")


def pick_dtype(device: Any, dtype: Any = None) -> Any:
    """The argument (torch.dtype or its name), else bf16 on CUDA and float32 elsewhere."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is not None and dtype != "auto":
        return getattr(torch, dtype)
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
