"""apa.scorer: the adapter choice of load_scorer / from_pretrained, and (with the tiny random model)
that an exception inside decoding leaves the next results unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from apa import config
from apa.scorer import AudioLMMScorer, check_adapter, load_scorer
from webapp import scorer as holder

CLIP_TEXT = "WE CALL IT BEAR"


def tone(seconds: float, sr: int = 16000) -> np.ndarray:
    t = np.arange(round(sr * seconds)) / sr
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * np.random.default_rng(0).standard_normal(t.size)).astype(np.float32)


def test_missing_adapter_dir_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "no-such-adapter"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_scorer(model=str(tmp_path / "model"), adapter=str(missing))
    with pytest.raises(FileNotFoundError, match=str(missing)):
        AudioLMMScorer.from_pretrained(tmp_path / "model", missing)


def test_missing_adapter_from_the_environment_is_an_error(tmp_path, monkeypatch):
    missing = tmp_path / "gone"
    monkeypatch.setenv("APA_ADAPTER", str(missing))
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_scorer(model=str(tmp_path / "model"))


def test_adapter_dir_without_adapter_config_is_an_error(tmp_path):
    (tmp_path / "ad").mkdir()
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        check_adapter(tmp_path / "ad")
    (tmp_path / "ad" / "adapter_config.json").write_text("{}")
    assert check_adapter(tmp_path / "ad") == str(tmp_path / "ad")


def test_relative_local_looking_adapter_paths_are_checked(monkeypatch):
    with pytest.raises(FileNotFoundError):
        check_adapter("./nowhere/adapter")
    with pytest.raises(FileNotFoundError):
        check_adapter("a/b/c")


def test_only_none_means_no_adapter():
    assert config.resolve_model("apa-mini", "none").adapter is None
    assert config.resolve_model("apa-mini", None).adapter == str(config.DEFAULT_ADAPTER)


def test_evaluate_adapter_help_says_what_no_adapter_means():
    from training.evaluate import build_parser

    text = " ".join(build_parser().format_help().split())
    assert "'none' for the bare base model" in text and "Not given: the shipped adapter" in text


def _leaves(o, pre=""):
    if isinstance(o, dict):
        for k, v in o.items():
            yield from _leaves(v, f"{pre}.{k}")
    elif isinstance(o, (list, tuple)):
        for i, v in enumerate(o):
            yield from _leaves(v, f"{pre}[{i}]")
    else:
        yield pre, o


def assert_same_result(a: dict, b: dict, tol: float) -> None:
    la, lb = dict(_leaves(a)), dict(_leaves(b))
    assert la.keys() == lb.keys()
    for k in la:
        if isinstance(la[k], float) and isinstance(lb[k], float):
            assert abs(la[k] - lb[k]) <= tol, (k, la[k], lb[k])
        else:
            assert la[k] == lb[k], (k, la[k], lb[k])


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
def test_model_state_survives_an_exception_inside_decoding(tiny_dir, use_scorer, monkeypatch, fast):
    """The real scorer (a tiny random apa-mini) fails inside decoding (in attention: the audio
    encoder, the prompt, a slot pass, the last pass): the next assessments equal the one before.

    Exactly for the reference decoder. The fast decoder's scores move by ~1e-8 between calls even
    without faults (its speculative windows adapt from call to call, so its passes are shaped,
    and rounded, differently): there the bound is 1e-6, far below any visible score change and
    far below what a stale cache or a half-updated plan would do."""
    import torch

    from apa.scorer import AudioLMMScorer, DecodeOptions

    scorer = AudioLMMScorer.from_pretrained(tiny_dir, device="cpu", options=DecodeOptions(batch_size=4, fast=fast))
    tol = 1e-6 if fast else 0.0
    x = tone(1.5)
    scorer.assess(x, CLIP_TEXT)
    before = scorer.assess(x, CLIP_TEXT).to_dict()
    real_sdpa = torch.nn.functional.scaled_dot_product_attention
    calls = {"n": 0, "fail_at": None}

    def sdpa(*a, **k):
        calls["n"] += 1
        if calls["fail_at"] is not None and calls["n"] == calls["fail_at"]:
            raise RuntimeError("injected failure inside decoding")
        return real_sdpa(*a, **k)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", sdpa)
    scorer.assess(x, CLIP_TEXT)
    total = calls["n"]
    assert total >= 4
    other = scorer.assess(tone(0.8), "IT").to_dict()
    for fail_at in sorted({1, total // 3, 2 * total // 3, total}):
        calls.update(n=0, fail_at=fail_at)
        with pytest.raises(RuntimeError, match="injected"):
            scorer.assess(x, CLIP_TEXT)
        calls.update(n=0, fail_at=None)
        assert_same_result(scorer.assess(x, CLIP_TEXT).to_dict(), before, tol)
        assert_same_result(scorer.assess(tone(0.8), "IT").to_dict(), other, tol)
    # through the app's scoring call too
    use_scorer(scorer)
    calls.update(n=0, fail_at=total // 2)
    with pytest.raises(RuntimeError):
        holder.score_audio(x, CLIP_TEXT)
    calls.update(n=0, fail_at=None)
    assert_same_result(holder.score_audio(x, CLIP_TEXT).to_dict(), before, tol)
