"""Which base an adapter was trained on, and whether the base it is loaded onto is that one.

A model's *fingerprint* is the sha256 over its state dict: for every tensor, in the order of the
names, a line `[name, shape, dtype]` (JSON) and then the tensor's bytes (C order). apa-mini
records it in provenance.json (names as saved, i.e. the Qwen2-Audio Hub layout); a directory
without it gets it computed from model.safetensors.

An adapter records its base in `ADAPTER_BASE_FILE` beside adapter_config.json:

    apa-mini:       {"model": "apa-mini", "name": ..., "fingerprint": ..., "source": ..., "seed": ...}
    a Hub model:    {"model": "Qwen/Qwen2-Audio-7B-Instruct", "revision": "<commit>" or null}

`check_adapter_base(model, adapter)` compares the record with the model being loaded: a
mismatch is a logged warning naming both, or `BaseMismatchError` when strict (the argument, or
$APA_STRICT_BASE via `apa.config.strict_base_check()`, which the tests set).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from apa import config
from apa.mini.constants import PROVENANCE_FILE, WEIGHTS_FILE

__all__ = [
    "ADAPTER_BASE_FILE",
    "BaseCheck",
    "BaseMismatchError",
    "check_adapter_base",
    "describe_base",
    "model_fingerprint",
    "read_adapter_base",
    "read_provenance",
    "record_adapter_base",
    "state_fingerprint",
]

logger = logging.getLogger(__name__)

ADAPTER_BASE_FILE = "apa_base.json"
_FINGERPRINT_HEADER = b"apa state fingerprint v1\n"


def read_provenance(d: str | os.PathLike) -> dict[str, Any] | None:
    """The provenance.json of a model directory written by apa.mini; None if absent or unreadable."""
    try:
        return json.loads((Path(d) / PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        return None


class BaseMismatchError(ValueError):
    """An adapter loaded onto a base other than the one it was trained on (strict mode)."""


def _as_array(value: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:  # numpy has no bfloat16: hash its bits, under its own name
            return value.contiguous().view(torch.int16).numpy()
        return value.contiguous().numpy()
    return np.ascontiguousarray(value)


def state_fingerprint(state: Mapping[str, np.ndarray | torch.Tensor]) -> str:
    """sha256 (hex) over a state dict's names, shapes, dtypes and bytes, in sorted name order."""
    h = hashlib.sha256(_FINGERPRINT_HEADER)
    for name in sorted(state):
        value = state[name]
        a = _as_array(value)
        bf16 = isinstance(value, torch.Tensor) and value.dtype == torch.bfloat16
        dtype = "bfloat16" if bf16 else a.dtype.str  # numpy's name ("<f4") whether given torch or numpy
        h.update(json.dumps([name, list(a.shape), dtype]).encode() + b"\n")
        h.update(a.tobytes(order="C"))
    return h.hexdigest()


def _file_fingerprint(path: Path) -> str:
    with safe_open(str(path), "pt") as f:
        return state_fingerprint({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118 (safe_open is not iterable)


def model_fingerprint(model_dir: str | os.PathLike) -> str | None:
    """Fingerprint of a model directory: from its provenance.json, else computed from its
    model.safetensors; None when it has neither (e.g. a sharded Hub model)."""
    d = Path(model_dir)
    recorded = (read_provenance(d) or {}).get("fingerprint")
    if recorded:
        return recorded
    if (d / WEIGHTS_FILE).is_file():
        return _file_fingerprint(d / WEIGHTS_FILE)
    return None


def _hub_id_and_revision(model: str) -> tuple[str, str | None]:
    """(Hub id, revision) of a Hub id or a Hub-cache snapshot path (.../models--org--name/snapshots/<rev>)."""
    p = Path(model)
    if p.parent.name == "snapshots" and p.parent.parent.name.startswith("models--"):
        return p.parent.parent.name[len("models--"):].replace("--", "/"), p.name
    return model, None


def describe_base(model: str | os.PathLike, model_obj: Any = None) -> dict[str, Any]:
    """What identifies a base model: for a directory written by apa.mini, its kind, name, source,
    seed and fingerprint; otherwise its Hub id and revision (from a Hub-cache path, or from the loaded
    `model_obj`'s config when given)."""
    d = Path(model)
    prov = read_provenance(d) if d.is_dir() else None
    if prov and prov.get("kind"):  # apa-mini, or the tiny random model of its class
        return {"model": "apa-mini" if prov["kind"] == "apa-mini" else prov["kind"], "name": prov.get("name"),
                "source": prov.get("source"), "seed": prov.get("seed"), "fingerprint": model_fingerprint(d)}
    hub_id, revision = _hub_id_and_revision(str(model))
    if revision is None and model_obj is not None:
        revision = getattr(getattr(model_obj, "config", None), "_commit_hash", None)
    return {"model": hub_id, "revision": revision}


def record_adapter_base(adapter_dir: str | os.PathLike, model: str | os.PathLike, model_obj: Any = None) -> Path:
    """Write ADAPTER_BASE_FILE into `adapter_dir`: `describe_base(model, model_obj)`. Returns the file."""
    path = Path(adapter_dir) / ADAPTER_BASE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(describe_base(model, model_obj), indent=2, sort_keys=True) + "\n")
    return path


def read_adapter_base(adapter_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The base an adapter directory records (ADAPTER_BASE_FILE), None if it records none."""
    try:
        return json.loads((Path(adapter_dir) / ADAPTER_BASE_FILE).read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class BaseCheck:
    """Outcome of `check_adapter_base`. ok: True (same base), False (another base), None (nothing
    to compare: no adapter, no record, or a base whose identity cannot be read)."""

    ok: bool | None
    trained_on: dict[str, Any] | None
    loaded: dict[str, Any] | None
    message: str


def _compare(trained: dict[str, Any], loaded: dict[str, Any]) -> bool | None:
    if trained.get("fingerprint"):
        return None if not loaded.get("fingerprint") else loaded["fingerprint"] == trained["fingerprint"]
    if trained.get("model") != loaded.get("model"):
        return False
    if trained.get("revision") and loaded.get("revision"):
        return trained["revision"] == loaded["revision"]
    return True


def check_adapter_base(
    model: str | os.PathLike, adapter: str | os.PathLike | None, *, strict: bool | None = None
) -> BaseCheck:
    """Compare the base `adapter` was trained on (its ADAPTER_BASE_FILE) with `model` (a directory
    or a Hub id). A mismatch is logged as a warning with both identities, or raises
    BaseMismatchError when `strict` (default: `apa.config.strict_base_check()`)."""
    if adapter is None or not Path(adapter).is_dir():
        return BaseCheck(None, None, None, "no local adapter")
    trained = read_adapter_base(adapter)
    if trained is None:
        return BaseCheck(None, None, None, f"{adapter} records no base ({ADAPTER_BASE_FILE})")
    loaded = describe_base(model)
    if trained.get("fingerprint") and not loaded.get("fingerprint") and Path(model).is_dir():
        loaded = dict(loaded, fingerprint=model_fingerprint(model))
    ok = _compare(trained, loaded)
    if ok is not False:
        return BaseCheck(ok, trained, loaded, "same base" if ok else "base identity unknown")
    message = (f"adapter {adapter} was trained on base {json.dumps(trained, sort_keys=True)} but is loaded onto "
               f"{model}: {json.dumps(loaded, sort_keys=True)}; its scores are not the measured ones")
    if config.strict_base_check() if strict is None else strict:
        raise BaseMismatchError(message)
    logger.warning(message)
    return BaseCheck(False, trained, loaded, message)
