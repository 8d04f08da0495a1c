"""apa.scorer: the adapter choice of load_scorer / from_pretrained (no model is loaded here)."""

from __future__ import annotations

import pytest

from apa import config
from apa.scorer import AudioLMMScorer, check_adapter, load_scorer


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
