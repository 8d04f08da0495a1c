"""Scorer, constrained decoding and training.evaluate on a tiny random model (CPU); LoRA training: tests/test_sft.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from apa.decoding import PieceTokenizer, build_trie, chat_text, encode_target
from apa.scorer import AudioLMMScorer, DecodeOptions, to_assessment
from apa.parsing import parse
from apa.prompts import build_template, render, slots

REF = (("WE", ("W", "IY0")), ("CALL", ("K", "AO0", "L")), ("IT", ("IH0", "T")), ("BEAR", ("B", "EH0", "R")))


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return AudioLMMScorer.from_pretrained(tiny_dir, device="cpu", options=DecodeOptions(batch_size=4))


def _clip(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def test_chat_prompt_exact(tiny):
    text = chat_text(tiny.processor, REF)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\n")
    assert "Reference text: WE CALL IT BEAR\nReference phones: WE: W IY0 | CALL: K AO0 L | IT: IH0 T | BEAR: B EH0 R\n" in text
    assert text.endswith("Phone Scores: PHONE/accuracy for each phone<|im_end|>\n<|im_start|>assistant\n")


def test_target_tokens_are_pieces_and_mask_missing(tiny):
    pieces = PieceTokenizer(tiny.tokenizer)
    t = build_template(REF)
    values = ["8", "9", "9", "10", "7"] + ["10", "10", "10"] * 3 + ["6", "10", "6"] + ["10"] * 7 + ["-"] * 3
    ids, keep = encode_target(pieces, t, values)
    assert ids[-1] == pieces.end_id
    decoded = tiny.tokenizer.decode(ids[:-1])
    assert decoded == render(t, dict(enumerate(values)))
    masked = tiny.tokenizer.decode([i for i, k in zip(ids, keep) if not k])
    assert masked == "---"


def test_slot_values_tokenise_to_a_valid_trie(tiny):
    pieces = PieceTokenizer(tiny.tokenizer)
    trie = build_trie(tuple(str(i) for i in range(11)), pieces)
    assert len(trie.values) == 11 and sum(len(b) for b in trie.branches.values()) == 11


def test_constrained_decoding_always_parses(tiny):
    """Random weights still give a complete assessment that the parser reads back unchanged."""
    refs = [REF, (("ZERO", ("Z", "IH1", "R", "OW0")), ("ONE", ("W", "AH1", "N")))]
    readings = tiny.read_slots([_clip(2.0, 0), _clip(3.5, 1)], refs)
    for ref, rd in zip(refs, readings):
        assert len(rd) == len(slots(build_template(ref)))
        greedy = to_assessment(ref, rd, "greedy")
        values = [str(int(r.greedy)) for r in rd]
        reparsed = parse(render(build_template(ref), dict(enumerate(values))), ref)
        assert reparsed.repairs == ()
        assert (reparsed.sentence, reparsed.words) == (greedy.sentence, greedy.words)
        ev = to_assessment(ref, rd, "expected")
        for r in rd:
            assert np.isclose(r.probs.sum(), 1.0) and (r.probs >= 0).all()
        assert all(0 <= p.score <= 2 for p in ev.phones)
        assert all(5 <= w.stress <= 10 for w in ev.words)


def test_batched_equals_single(tiny):
    a, b = _clip(2.0, 3), _clip(1.0, 4)
    ref2 = (("ONE", ("W", "AH1", "N")),)
    batch = tiny.read_slots([a, b], [REF, ref2])
    single = tiny.read_slots([b], [ref2])
    for x, y in zip(batch[1], single[0]):
        np.testing.assert_allclose(x.probs, y.probs, atol=1e-4)


def test_evaluate_runs_on_a_few_records(tiny_dir, tmp_path, so762_dir):
    from training.evaluate import main

    result = main(["--model", str(tiny_dir), "--adapter", "none", "--data", str(so762_dir), "--limit", "3", "--batch-size", "2", "--device", "cpu", "--out", str(tmp_path)])
    assert result["n"] == 3
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 3 and {"greedy", "expected"} <= set(json.loads(lines[0]))
    assert "| phone |" in (tmp_path / "metrics.md").read_text()
    assert (tmp_path / "scatter_phone.html").exists()
