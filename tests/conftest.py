"""Shared fixtures. The corpus lives beside the repository (../shared/speechocean762)."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("APA_STRICT_BASE", "1")  # an adapter on a base it was not trained on is an error here
# no telemetry from the test process's own gradio_client / huggingface_hub (read at import), so a
# host name looked up during a test can only come from the app (tests/test_security.py)
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO_ROOT = Path(__file__).resolve().parents[1]
SO762_DIR = Path(os.environ.get("APA_SO762_DIR", REPO_ROOT.parent / "shared" / "speechocean762"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test (deselect with -m 'not slow')")
    config.addinivalue_line("markers", "gpu: needs a CUDA device")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture(scope="session")
def so762_dir() -> Path:
    """Root of the Speechocean762 copy; skips the test when it is absent."""
    if not (SO762_DIR / "resource" / "scores.json").is_file():
        pytest.skip(f"Speechocean762 not found at {SO762_DIR} (set APA_SO762_DIR)")
    return SO762_DIR
