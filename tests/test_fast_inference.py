"""The fast CPU inference path (apa.decoding, DecodeOptions(fast=True)) against the reference decoder, on the
tiny random model: features and audio encoder on the real length, lean decoder forward, speculative
template decoding with side probe tokens."""

from __future__ import annotations


import numpy as np
import pytest
import torch

import apa.decoding.speculative as S
from apa.decoding import HFDecoder, LeanDecoder, audio_token_count, chat_text, encode_audio_fast, log_mel_features
from apa.config import cuda_available
from apa.scorer import AudioLMMScorer, DecodeOptions

REF = (("WE", ("W", "IY0")), ("CALL", ("K", "AO0", "L")), ("IT", ("IH0", "T")), ("BEAR", ("B", "EH0", "R")))
REF2 = (("ZERO", ("Z", "IH1", "R", "OW0")), ("ONE", ("W", "AH1", "N")))


@pytest.fixture(scope="module")
def fast(tiny_dir):
    return AudioLMMScorer.from_pretrained(tiny_dir, device="cpu", options=DecodeOptions(fast=True))


@pytest.fixture(scope="module")
def reference(fast):
    return AudioLMMScorer(fast.model, fast.processor, name=fast.name, options=DecodeOptions(fast=False))


def _clip(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    x = 0.3 * np.sin(2 * np.pi * np.cumsum(f0) / 16000) + 0.05 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def _stock_audio_embeds(model, processor, audio: np.ndarray) -> torch.Tensor:
    """Projected audio embeddings of the stock path: processor (30 s) + Qwen2AudioModel.forward
    (padding masked in the encoder), captured at the projector and cut to the valid tokens."""
    inputs = processor(text=[chat_text(processor, REF)], audio=[audio], sampling_rate=16000, return_tensors="pt")
    captured = []
    hook = model.model.multi_modal_projector.register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        with torch.inference_mode():
            model(**inputs)
    finally:
        hook.remove()
    n_tok = int((inputs["input_ids"] == model.config.audio_token_id).sum())
    return captured[0][0, :n_tok]


@pytest.mark.parametrize("seconds", [0.05, 1.0, 2.58, 3.37, 7.91, 29.99, 31.0])
def test_features_on_real_length_match_processor(fast, seconds):
    audio = _clip(seconds, 1)
    feats, n = log_mel_features(fast.processor.feature_extractor, audio)
    ref = fast.processor.feature_extractor(audio, sampling_rate=16000, return_attention_mask=True,
                                           padding="max_length", return_tensors="pt")
    assert n == int(ref["attention_mask"].sum())
    assert feats.shape[-1] == min(n + 2, 3000)
    torch.testing.assert_close(feats, ref["input_features"][..., : feats.shape[-1]], atol=1e-5, rtol=0)
    inputs = fast.processor(text=["<|audio_bos|><|AUDIO|><|audio_eos|>"], audio=[audio], sampling_rate=16000, return_tensors="pt")
    assert audio_token_count(n) == int((inputs["input_ids"] == fast.model.config.audio_token_id).sum())


@pytest.mark.parametrize("seconds", [0.3, 1.5, 2.58, 4.0, 11.3])
def test_fast_encoder_matches_stock_masked_encoder(fast, seconds):
    audio = _clip(seconds, 2)
    stock = _stock_audio_embeds(fast.model, fast.processor, audio)
    feats, n = log_mel_features(fast.processor.feature_extractor, audio)
    with torch.inference_mode():
        ours = encode_audio_fast(fast.model, feats, n)
    assert ours.shape == stock.shape
    torch.testing.assert_close(ours, stock, atol=1e-4, rtol=1e-4)


def test_prompt_ids_match_processor(fast):
    audio = _clip(2.2, 3)
    plan = fast.plan(REF)
    inputs = fast.processor(text=[chat_text(fast.processor, REF)], audio=[audio], sampling_rate=16000, return_tensors="pt")
    _, n = log_mel_features(fast.processor.feature_extractor, audio)
    a = plan.audio_at
    ids = plan.prompt_ids[:a] + [plan.prompt_ids[a]] * audio_token_count(n) + plan.prompt_ids[a + 1 :]
    assert ids == inputs["input_ids"][0].tolist()


def _assert_same(r_fast, r_reference, atol=1e-4):
    assert len(r_fast) == len(r_reference)
    for x, y in zip(r_fast, r_reference):
        assert (x.kind, x.values) == (y.kind, y.values)
        assert x.greedy == y.greedy
        np.testing.assert_allclose(x.probs, y.probs, atol=atol)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_decoder_equals_reference(fast, reference, seed):
    clips = [_clip(2.0 + seed, seed), _clip(1.2, 10 + seed)]
    refs = [REF, REF2]
    r_fast = fast.read_slots(clips, refs)
    stats = dict(fast.stats)
    r_reference = reference.read_slots(clips, refs)
    for a, b in zip(r_fast, r_reference):
        _assert_same(a, b)
    assert stats["passes"] >= 4 and stats["slots"] == sum(len(r) for r in r_reference)


def test_fast_decoder_with_small_windows_and_hf_fallback(fast, reference, monkeypatch):
    """Every window policy, and transformers' own forward (4D mask) instead of the lean one,
    give the same readings."""
    clip = _clip(2.7, 5)
    ref = reference.read_slots([clip], [REF])[0]
    passes = []
    for cost, first in ((0, 1), (10_000, 1), (10_000, 10_000)):  # one slot a pass ... everything at once
        monkeypatch.setattr(S, "PASS_COST_TOKENS", cost)
        monkeypatch.setattr(S, "FAST_FIRST_WINDOW", first)
        _assert_same(fast.read_slots([clip], [REF])[0], ref)
        passes.append(fast.stats["passes"])
    assert passes[0] > passes[1] >= passes[2] >= 2, passes
    hf = AudioLMMScorer(fast.model, fast.processor, options=DecodeOptions(fast=True),
                        backend=HFDecoder(fast.model.model.language_model, fast.model.lm_head))
    _assert_same(hf.read_slots([clip], [REF])[0], ref)


def test_lean_decoder_matches_transformers_forward(fast):
    """Hidden states of the lean forward (main + side tokens, a cache in between) equal
    transformers' LlamaModel forward on the same sequences."""
    lm = fast.model.model.language_model
    dec = LeanDecoder.build(lm, fast.model.lm_head)
    assert dec is not None
    torch.manual_seed(0)
    ids = torch.randint(0, 49000, (40,))
    with torch.inference_mode():
        full = lm(input_ids=ids[None]).last_hidden_state[0]
        cache = dec.new_cache(64)
        h1 = dec.forward(cache, 0, dec.embed(ids[:25]), torch.arange(25), 25, ())
        # 15 more main tokens + a side token at position 30 that sees the first 30 tokens only
        x = dec.embed(torch.cat((ids[25:], ids[30:31])))
        h2 = dec.forward(cache, 25, x, torch.cat((torch.arange(25, 40), torch.tensor([30]))), 15, [30])
        side_ref = lm(input_ids=ids[None, :31]).last_hidden_state[0, 30]
    torch.testing.assert_close(torch.cat((h1, h2[:15])), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h2[15], side_ref, atol=1e-5, rtol=1e-5)


def test_lean_decoder_refuses_unmerged_lora(tiny_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2AudioForConditionalGeneration

    base = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_dir)
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=r".*language_model.*\.q_proj$"))
    inner = peft_model.base_model.model
    assert LeanDecoder.build(inner.model.language_model, inner.lm_head) is None


def test_assess_fast_equals_reference(fast, reference):
    clip = _clip(1.8, 9)
    a, b = fast.assess(clip, "WE CALL IT BEAR"), reference.assess(clip, "WE CALL IT BEAR")
    assert a.words == b.words or all(
        abs(x.accuracy - y.accuracy) < 1e-3 and abs(x.total - y.total) < 1e-3 for x, y in zip(a.words, b.words)
    )
    assert abs(a.sentence.total - b.sentence.total) < 1e-3


@pytest.mark.parametrize("samples", [100, 330, 800])
def test_very_short_audio(fast, reference, samples):
    """Down to no audio token at all (under 3 feature frames), as the processor counts them."""
    clip = _clip(1.0, 4)[:samples]
    ref2 = (("ONE", ("W", "AH1", "N")),)
    _assert_same(fast.read_slots([clip], [ref2])[0], reference.read_slots([clip], [ref2])[0])


# ---- several clips at once (the GPU path, run here on the CPU) --------------------------------
def test_batch_encoder_matches_clip_by_clip(fast):
    from apa.decoding import encode_audio_batch, log_mel_features_batch

    clips = [_clip(s, i) for i, s in enumerate((2.0, 0.01, 5.3, 1.1))]
    feats, ns = log_mel_features_batch(fast.processor.feature_extractor, clips)
    with torch.inference_mode():
        batch = encode_audio_batch(fast.model, feats, ns)
        for clip, emb in zip(clips, batch):
            f1, n1 = log_mel_features(fast.processor.feature_extractor, clip)
            one = encode_audio_fast(fast.model, f1, n1)
            assert emb.shape == one.shape == (audio_token_count(n1), fast.model.config.text_config.hidden_size)
            torch.testing.assert_close(emb, one, atol=1e-5, rtol=1e-5)


def test_clips_decoded_together_equal_clip_by_clip(fast):
    """One forward per pass of all clips (own offsets, own cache rows, padding, compaction as
    clips finish) reads what each clip's own decode reads."""
    clips = [_clip(s, 20 + i) for i, s in enumerate((2.0, 1.2, 3.3, 0.01, 5.0, 2.2))]
    refs = [REF, REF[:1], REF2, REF[:1], REF, REF[:1]]
    together = AudioLMMScorer(fast.model, fast.processor, options=DecodeOptions(batch_clips=True, batch_size=6))
    r_batch = together.read_slots(clips, refs)
    stats = dict(together.stats)
    r_one = [fast.read_slots([c], [r])[0] for c, r in zip(clips, refs)]
    for a, b in zip(r_batch, r_one):
        _assert_same(a, b)
    assert stats["forwards"] < stats["passes"], stats  # passes of several clips shared forwards
    assert stats["compactions"] >= 1, stats  # the one-word clips finished first
    assert stats["slots"] == sum(len(r) for r in r_one)


def test_read_many_sorts_batches_and_keeps_order(fast):
    clips = [_clip(s, 30 + i) for i, s in enumerate((4.0, 1.0, 3.0, 0.5, 2.0))]
    refs = [REF, REF2, REF[:2], REF2, REF]
    scorer = AudioLMMScorer(fast.model, fast.processor, options=DecodeOptions(batch_clips=True, batch_size=2))
    calls = []
    many = scorer.read_many(clips, refs, progress=lambda done, n: calls.append((done, n)))
    assert calls == [(2, 5), (4, 5), (5, 5)]
    for a, c, r in zip(many, clips, refs):
        _assert_same(a, fast.read_slots([c], [r])[0])


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_clips_together_on_gpu(fast, tiny_dir, dtype):
    """On CUDA (the default there: clips decoded together): float32 reads what the CPU reads clip by
    clip; bfloat16 (random weights: near-ties everywhere, so values may flip) gives valid readings."""
    clips = [_clip(s, 40 + i) for i, s in enumerate((2.0, 1.2, 3.3, 0.01, 5.0, 2.2))]
    refs = [REF, REF[:1], REF2, REF[:1], REF, REF2]
    gpu = AudioLMMScorer.from_pretrained(tiny_dir, device="cuda", dtype=dtype, options=DecodeOptions(batch_size=6))
    r_gpu = gpu.read_slots(clips, refs)
    assert gpu.stats["forwards"] < gpu.stats["passes"], gpu.stats
    r_cpu = [fast.read_slots([c], [r])[0] for c, r in zip(clips, refs)]
    for a, b in zip(r_gpu, r_cpu):
        if dtype == "float32":
            _assert_same(a, b, atol=1e-4)
        else:
            assert [x.kind for x in a] == [y.kind for y in b]
            assert all(np.isfinite(x.probs).all() and abs(x.probs.sum() - 1) < 1e-6 for x in a)


def test_encoder_states_match_the_stock_encoder_layers(fast):
    """encoder_states: the layers' outputs of Whisper's own encoder path (output_hidden_states), the
    last one normed, at 20 ms positions; batched clips equal clip by clip; bad layers refused."""
    from apa.decoding import log_mel_features_batch
    from apa.decoding.features import encoder_states

    tower = fast.model.model.audio_tower
    depth, width = len(tower.layers), tower.layer_norm.normalized_shape[0]
    clips = [_clip(s, i) for i, s in enumerate((2.0, 0.6, 3.1))]
    feats, ns = log_mel_features_batch(fast.processor.feature_extractor, clips)
    with torch.inference_mode():
        batch = encoder_states(fast.model, feats, ns, (1, depth))
        for clip, st in zip(clips, batch):
            f1, n1 = log_mel_features(fast.processor.feature_extractor, clip)
            (one,) = encoder_states(fast.model, f1, [n1], (1, depth))
            assert st.shape == one.shape == ((n1 - 1) // 2 + 1, 2 * width)
            torch.testing.assert_close(st, one, atol=1e-5, rtol=1e-5)
        # the stock path (processor, 30 s, padding masked in Qwen2AudioModel.forward): layer 1's output
        f0, n0 = log_mel_features(fast.processor.feature_extractor, clips[2])
        captured = []
        hook = tower.layers[0].register_forward_hook(lambda m, i, o: captured.append(o[0] if isinstance(o, tuple) else o))
        try:
            inputs = fast.processor(text=[chat_text(fast.processor, REF)], audio=[clips[2]], sampling_rate=16000, return_tensors="pt")
            fast.model(**inputs)
        finally:
            hook.remove()
        v = (n0 - 1) // 2 + 1
        torch.testing.assert_close(batch[2][:, :width], captured[0][0, :v], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="layers"):
        encoder_states(fast.model, feats, ns, (depth + 1,))


def test_fixed_history_of_the_greedy_values_reads_as_greedy(fast, monkeypatch):
    """Feeding each slot's greedy value as a fixed history gives the greedy decode's readings,
    in one pass per clip; clips decoded together read what each reads alone."""
    clips, refs = [_clip(2.4, 40), _clip(1.5, 41)], [REF, REF2]
    greedy = fast.read_slots(clips, refs)
    fed = {tuple(fast.plan(r).prompt_ids): [int(np.argmax(x.probs)) for x in g] for r, g in zip(refs, greedy)}
    for together in (False, True):
        sc = AudioLMMScorer(fast.model, fast.processor, options=DecodeOptions(history="top", batch_clips=together, batch_size=2))
        monkeypatch.setattr(sc, "history_for", lambda plan, ev: fed[tuple(plan.prompt_ids)])
        for a, b in zip(sc.read_slots(clips, refs), greedy):
            _assert_same(a, b)
        assert sc.stats["passes"] == len(clips), sc.stats  # all slots fixed: one pass a clip


def test_top_history_conditions_later_slots_only(fast, monkeypatch):
    """history="top": the sentence slots and the first word slot read as in greedy decoding, and
    slots after one whose greedy value is not the top value read differently (by more than the
    rounding seen when the greedy values themselves are fed)."""
    clip = _clip(2.2, 42)
    greedy = fast.read_slots([clip], [REF])[0]
    top = AudioLMMScorer(fast.model, fast.processor, options=DecodeOptions(history="top"))
    fixed = top.read_slots([clip], [REF])[0]
    n_sentence = sum(g.kind.startswith("sentence.") for g in greedy)
    assert top.stats["passes"] <= n_sentence + 1  # greedy sentence scores, then one pass
    _assert_same(fixed[: n_sentence + 1], greedy[: n_sentence + 1], atol=1e-5)  # nothing fixed before them
    monkeypatch.setattr(top, "history_for", lambda plan, ev: [int(np.argmax(g.probs)) for g in greedy])
    same = top.read_slots([clip], [REF])[0]
    first_off = next(k for k, g in enumerate(greedy) if k >= n_sentence and g.greedy != float(g.values[-1]))
    after = slice(first_off + 1, None)
    noise = max(np.abs(a.probs - b.probs).max() for a, b in zip(same[after], greedy[after]))
    moved = max(np.abs(a.probs - b.probs).max() for a, b in zip(fixed[after], greedy[after]))
    assert moved > 10 * noise + 1e-6, (moved, noise)


def test_fixed_history_rounds_the_helpers_predictions(fast):
    from apa.gopt import OUTPUT_NAMES
    from apa.scorer import fixed_history

    plan = fast.plan(REF2)  # ZERO (4 phones), ONE (3)
    helper = np.full((7, len(OUTPUT_NAMES)), np.nan)
    helper[:4] = [1.13, 6.4, 3.2, 7.6, 8.1, 2.0, 9.7]  # phone 0-2, word 0-10, sentence 0-10 (not read)
    helper[4:, 0] = 0.1  # ONE: phones only
    got = dict(zip([(s.kind, s.word, s.phone) for s in plan.slots], fixed_history(plan, helper)))
    value = {(s.kind, s.word, s.phone): s.values for s in plan.slots}
    assert all(got[k] is None for k in got if k[0].startswith("sentence."))  # greedy there
    pick = {k: value[k][i] for k, i in got.items() if i is not None}
    assert pick[("phone", 0, 0)] == "6"  # 1.13 * 5 = 5.65
    assert pick[("phone", 1, 2)] == "0"
    assert pick[("word.accuracy", 0, -1)] == "6" and pick[("word.total", 0, -1)] == "3"
    assert pick[("word.accuracy", 1, -1)] == "10"  # NaN: the top value
    assert pick[("word.stress", 0, -1)] == "10"
    assert all(i is None or value[k][i] == value[k][-1] for k, i in zip(value, fixed_history(plan)))  # no helper: top
    with pytest.raises(ValueError, match="helper rows"):
        fixed_history(plan, helper[:3])
    with pytest.raises(ValueError, match="history"):
        DecodeOptions(history="sampled")
