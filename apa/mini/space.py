"""What a Hugging Face Space runs, tried here without a network: the "Space dry run", and the
fingerprints of the shipped adapter's base and of apa-mini assembled by both routes.

A Space installs requirements.txt only (not requirements-weights.txt), so apa-mini is assembled
from the Hub route there. `space_dry_run`:

1. writes both Hub repositories from the weight packages into a Hub cache layout
   (`apa.mini.snapshots`), served with HF_HUB_OFFLINE=1, so that no network is used;
2. scores one clip with the offline route (this interpreter, which has the weight packages);
3. makes a fresh venv with only requirements.txt (or takes `python=`) and scores the same clip
   there with the default `load_scorer()`, i.e. the route a Space takes;
4. compares the two assessments (every number within `tolerance`) and the base fingerprints.

Each scoring runs in a child process (`python -m apa.mini score-clip`) with its own APA_CACHE
and APA_STRICT_BASE=1, so that a base the adapter was not trained on is an error.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apa import config
from apa.mini.assemble import assemble_apa_mini
from apa.mini.constants import APA_MINI_NAME, default_model_dir
from apa.mini.fingerprint import model_fingerprint, read_adapter_base, read_provenance
from apa.mini.snapshots import write_hub_snapshots
from apa.mini.verify import default_clip, load_clip

__all__ = ["DRY_RUN_TEXT", "DryRunResult", "base_fingerprints", "score_clip", "space_dry_run"]

DRY_RUN_TEXT = "We call it bear"  # the text of `apa.mini.verify.VERIFY_CLIP`


def score_clip(clip: str | os.PathLike, text: str, *, source: str | None = None) -> dict[str, Any]:
    """Score one clip with the shipped adapter on CPU, on apa-mini assembled as `load_scorer()`
    does by default (what a Space runs), or from `source` when given; return the assessment and
    the base used."""
    from apa.model import load_scorer  # apa.model imports apa.mini: imported here, not at the top

    model = str(assemble_apa_mini(source=source)) if source else None
    scorer = load_scorer(model, str(config.DEFAULT_ADAPTER), device="cpu")
    wav, _ = load_clip(clip)
    model_dir = Path(model) if model else default_model_dir()
    prov = read_provenance(model_dir) or {}
    return {"assessment": scorer.assess(wav, text).to_dict(), "source": prov.get("source"),
            "fingerprint": model_fingerprint(model_dir), "python": sys.executable}


def _numbers(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, leaf) of every leaf of a JSON-like value."""
    if isinstance(value, Mapping):
        for k in sorted(value):
            yield from _numbers(value[k], f"{path}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _numbers(v, f"{path}[{i}]")
    else:
        yield path, value


def _max_difference(a: Any, b: Any) -> tuple[float, list[str]]:
    """(largest |a - b| over numeric leaves, paths whose leaves differ otherwise)."""
    left, right = dict(_numbers(a)), dict(_numbers(b))
    worst, other = 0.0, sorted(set(left) ^ set(right))
    for k in set(left) & set(right):
        x, y = left[k], right[k]
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
            worst = max(worst, abs(float(x) - float(y)))
        elif x != y:
            other.append(k)
    return worst, other


@dataclass(frozen=True)
class DryRunResult:
    """Both scorings of the dry run and how far apart they are."""

    offline: dict[str, Any]
    space: dict[str, Any]
    max_abs_diff: float
    differing: tuple[str, ...]
    tolerance: float
    seconds: dict[str, float]

    @property
    def ok(self) -> bool:
        """Same base, the Space took the Hub route, and every number within tolerance."""
        return (self.space["source"] == "hub" and self.offline["fingerprint"] == self.space["fingerprint"]
                and not self.differing and self.max_abs_diff <= self.tolerance)


def _fresh_venv(path: Path, requirements: Path) -> Path:
    """A new venv at `path` with only `requirements` installed (pip, from the package index)."""
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    python = path / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(requirements)], check=True)
    return python


def _score_in_child(python: str, env: dict[str, str], clip: Path, text: str, source: str | None) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    cmd = [python, "-m", "apa.mini", "score-clip", str(clip), "--text", text, "--json", str(out)]
    cmd += ["--source", source] if source else []
    subprocess.run(cmd, check=True, cwd=str(config.REPO_ROOT), env=env)
    try:
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


def space_dry_run(
    work: str | os.PathLike, *, clip: str | os.PathLike | None = None, text: str = DRY_RUN_TEXT,
    python: str | None = None, reuse_venv: bool = False, tolerance: float = 1e-5,
) -> DryRunResult:
    """Run the Space dry run in `work` (see the module docstring). `python`: an interpreter to use
    instead of a fresh venv; it is then told to take the Hub route (`--source hub`), since it may
    have the weight packages that a Space lacks. `reuse_venv`: keep a venv an earlier run left in
    `work/venv` instead of making it anew."""
    work = Path(work)
    clip = Path(clip) if clip else default_clip()
    if clip is None:
        raise FileNotFoundError("no clip given and the Speechocean762 corpus is absent (APA_SO762_DIR)")
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    write_hub_snapshots(work / "hf-cache", hf_cache=True)
    seconds["snapshots"] = time.perf_counter() - t
    base = {k: v for k, v in os.environ.items() if not k.startswith(("APA_", "HF_"))}
    base.update(OMP_NUM_THREADS=config.omp_threads() or "1", APA_STRICT_BASE="1", PYTHONPATH="")
    t = time.perf_counter()
    offline = _score_in_child(sys.executable, dict(base, APA_CACHE=str(work / "cache-offline"),
                                                  HF_HUB_OFFLINE="1"), clip, text, "packages")
    seconds["offline"] = time.perf_counter() - t
    fresh = python is None
    if fresh:
        t = time.perf_counter()
        existing = work / "venv" / "bin" / "python"
        reuse = reuse_venv and existing.is_file()
        python = str(existing if reuse else _fresh_venv(work / "venv", config.REPO_ROOT / "requirements.txt"))
        seconds["venv"] = time.perf_counter() - t
    t = time.perf_counter()
    shutil.rmtree(work / "cache-space", ignore_errors=True)  # the Space assembles afresh each run
    space_env = dict(base, APA_CACHE=str(work / "cache-space"), HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(work / "hf-cache"))
    space = _score_in_child(python, space_env, clip, text, None if fresh else "hub")
    seconds["space"] = time.perf_counter() - t
    worst, differing = _max_difference(offline["assessment"], space["assessment"])
    return DryRunResult(offline, space, worst, tuple(differing), tolerance, {k: round(v, 1) for k, v in seconds.items()})


def base_fingerprints(work: str | os.PathLike, *, adapter: str | os.PathLike = config.DEFAULT_ADAPTER,
                      real_hub: bool = False) -> dict[str, str | None]:
    """Fingerprints of the base the adapter records and of apa-mini freshly assembled in `work`
    by both routes. The Hub route reads local snapshots written from the packages, unless
    `real_hub` (then it downloads the Hub originals)."""
    work = Path(work)
    snapshots = None if real_hub else write_hub_snapshots(work / "snapshots")
    packages = assemble_apa_mini(work / "packages" / APA_MINI_NAME, source="packages")
    hub = assemble_apa_mini(work / "hub" / APA_MINI_NAME, source="hub", snapshots=snapshots)
    return {
        "adapter base": (read_adapter_base(adapter) or {}).get("fingerprint"),
        "packages route": model_fingerprint(packages),
        "hub route" + ("" if real_hub else " (local snapshots)"): model_fingerprint(hub),
    }
