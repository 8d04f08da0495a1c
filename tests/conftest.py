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


@pytest.fixture
def make_assessment():
    """A factory: a 4-word Assessment ("WE CALL IT BEAR", BEAR weakest, then CALL) whose sentence
    scores can be overridden by keyword (apa.render / apa.feedback tests)."""
    from apa.schema import Assessment, Phone, Sentence, Word

    def make(**sentence) -> Assessment:
        s = {"accuracy": 6.0, "fluency": 8.0, "prosodic": 5.0, "completeness": 10.0, "total": 6.0}
        s.update(sentence)
        return Assessment(
            text="WE CALL IT BEAR",
            sentence=Sentence(**s),
            words=(
                Word("WE", 9.5, 10, 9, (Phone("W", 2.0), Phone("IY1", 1.9))),
                Word("CALL", 4.0, 10, 4, (Phone("K", 1.8), Phone("AO1", 0.2), Phone("L", 1.0))),
                Word("IT", 7.5, 10, 7, (Phone("IH1", 1.2), Phone("T", 2.0))),
                Word("BEAR", 1.0, 5, 1, (Phone("B", 0.0), Phone("EH1", None), Phone("R", 0.4))),
            ),
            model="test",
        )

    return make
