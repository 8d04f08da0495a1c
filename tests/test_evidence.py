"""Phone evidence in the prompt: levels, spans, token positions, the projector and its hook (tiny model, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from apa.align import FEATURE_NAMES
from apa.evidence import N_LEVELS, EvidenceConfig, EvidenceProjector, fit_config, token_positions
from apa.prompts import build_prompt, build_prompt_spans

REF = (("WE", ("W", "IY0")), ("CALL", ("K", "AO0", "L")), ("THIRTY", ("TH", "ER1", "T", "IY0")))
N_PH = 9
NAMES = FEATURE_NAMES  # lpp first


def _features(seed: int, n: int = N_PH) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, len(NAMES))).astype(np.float32)


@pytest.fixture(scope="module")
def processor(tiny_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_dir)


def test_prompt_without_levels_is_the_shipped_prompt():
    text, spans = build_prompt_spans(REF)
    assert text == build_prompt(REF)
    assert "Reference phones: WE: W IY0 | CALL: K AO0 L | THIRTY: TH ER1 T IY0\n" in text
    assert [text[a:b] for a, b in spans] == ["W", "IY0", "K", "AO0", "L", "TH", "ER1", "T", "IY0"]


def test_prompt_levels_follow_each_phone():
    levels = [9, None, 0, 3, 4, 5, 6, 7, 8]
    text, spans = build_prompt_spans(REF, levels)
    assert "WE: W:9 IY0:? | CALL: K:0 AO0:3 L:4 | THIRTY: TH:5 ER1:6 T:7 IY0:8\n" in text
    assert [text[a:b] for a, b in spans][:3] == ["W:9", "IY0:?", "K:0"]
    with pytest.raises(ValueError):
        build_prompt_spans(REF, levels[:-1])


def test_levels_are_quantile_buckets_and_config_roundtrips(tmp_path):
    def rows(lpp):
        return np.column_stack([lpp, np.ones((len(lpp), len(NAMES) - 1))])

    cfg = fit_config([rows(np.linspace(-10, 0, 100))], NAMES, "both")
    lv = cfg.levels(rows(np.array([-10.0, -5.0, 0.0, np.nan])))
    assert lv[0] == 0 and lv[2] == N_LEVELS - 1 and 3 <= lv[1] <= 6 and lv[3] is None
    cfg.save(tmp_path)
    assert EvidenceConfig.load(tmp_path) == cfg
    assert EvidenceConfig.load(tmp_path / "nowhere") is None
    with pytest.raises(ValueError):
        EvidenceConfig(**{**cfg.__dict__, "mode": "telepathy"})


def test_token_positions_land_on_each_phone_entry(processor):
    from apa.decoding.tokens import chat_text

    for levels in ([1, 2, 3, 4, 5, 6, 7, 8, None], None):
        prompt, spans = build_prompt_spans(REF, levels)
        chat = chat_text(processor, REF, rubric=prompt)
        ids, pos = token_positions(processor.tokenizer, chat, prompt, spans)
        assert ids == processor.tokenizer(chat)["input_ids"]
        assert len(pos) == N_PH and pos == sorted(pos) and len(set(pos)) == N_PH
        for p, (a, b) in zip(pos, spans):
            upto = processor.tokenizer.decode(ids[: p + 1])
            assert upto.endswith(prompt[a:b]), (upto[-20:], prompt[a:b])


def test_projector_starts_as_a_no_op_and_survives_nan(tmp_path):
    cfg = fit_config([_features(0, 50)], NAMES, "embedding", projector_width=8)
    proj = EvidenceProjector(cfg, hidden_size=16)
    x = torch.tensor(_features(1))
    x[2] = float("nan")
    assert torch.equal(proj(x), torch.zeros(N_PH, 16))
    torch.nn.init.normal_(proj.net[2].weight)
    y = proj(x)
    assert torch.isfinite(y).all() and not torch.equal(y[0], y[1])
    proj.save(tmp_path)
    again = EvidenceProjector.load(tmp_path, cfg, 16)
    assert torch.equal(again(x), proj(x).detach())


def test_collator_and_hook_put_evidence_on_the_phone_tokens(tiny_dir, processor):
    from transformers import Qwen2AudioForConditionalGeneration

    from apa.sft import EvidenceHook, Example, SFTCollator

    cfg = fit_config([_features(0, 50)], NAMES, "both", projector_width=8)
    values = tuple(["8"] * 5 + ["10", "10", "10"] * 3 + ["9"] * N_PH)
    audio = np.random.default_rng(0).normal(scale=0.1, size=16000).astype(np.float32)
    batch = [Example(audio, REF, values, _features(2)), Example(audio[:8000], REF[:1], tuple(["8"] * 5 + ["10"] * 3 + ["9"] * 2), _features(3, 2))]
    enc = SFTCollator(processor, cfg)(batch)
    pos = enc["evidence_positions"]
    assert enc["evidence_features"].shape == (2, N_PH, len(NAMES)) and (pos[1, 2:] == -1).all()
    # every position holds the level digit of its phone entry ("W:7" -> the token with "7")
    for b, ex in enumerate(batch):
        levels = cfg.levels(ex.evidence)
        for p, lv in zip(pos[b][pos[b] >= 0].tolist(), levels):
            assert processor.tokenizer.decode(enc["input_ids"][b, : p + 1]).endswith(f":{lv}")

    model = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_dir).eval()
    # the projector's draws are seeded: with some global RNG states (set by whatever ran before in the
    # session) its 8 hidden units all come out inactive and `moved` equals `plain`
    torch.manual_seed(0)
    proj = EvidenceProjector(cfg, model.config.text_config.hidden_size)
    hook = EvidenceHook(model, proj)
    inputs = {k: v for k, v in enc.items() if not k.startswith("evidence_")}
    with torch.no_grad():
        plain = model(**inputs).loss
        hook.pending = (enc["evidence_features"], pos)
        zero = model(**inputs).loss  # zero-initialised projector: no change
        torch.nn.init.normal_(proj.net[2].weight, std=0.5)
        moved = model(**inputs).loss
        hook.pending = None
        after = model(**inputs).loss
    hook.remove()
    assert torch.allclose(plain, zero) and not torch.allclose(plain, moved) and torch.allclose(plain, after)


@pytest.fixture(scope="module")
def evidence_adapter(tiny_dir, tmp_path_factory):
    """A LoRA adapter dir that takes evidence both ways, with a random (non-zero) projector."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2AudioForConditionalGeneration

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("ev-adapter")
    base = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_dir)
    get_peft_model(base, LoraConfig(r=4, target_modules=r".*language_model.*\.(q_proj|v_proj)$", init_lora_weights=False)).save_pretrained(d)
    cfg = fit_config([_features(0, 50)], NAMES, "both", projector_width=8)
    cfg.save(d)
    proj = EvidenceProjector(cfg, base.config.text_config.hidden_size)
    torch.nn.init.normal_(proj.net[2].weight, std=0.5)
    proj.save(d)
    return d


def test_scorer_reads_evidence_and_batches_it_like_single_clips(tiny_dir, evidence_adapter):
    from apa.scorer import AudioLMMScorer, DecodeOptions

    one = AudioLMMScorer.from_pretrained(tiny_dir, evidence_adapter, device="cpu", options=DecodeOptions(batch_clips=False))
    together = AudioLMMScorer.from_pretrained(tiny_dir, evidence_adapter, device="cpu", options=DecodeOptions(batch_clips=True))
    assert one.evidence is not None and one.projector is not None
    rng = np.random.default_rng(5)
    clips = [rng.normal(scale=0.1, size=n).astype(np.float32) for n in (16000, 24000)]
    refs = [REF, REF[:2]]
    ev = [_features(7), _features(8, 5)]
    base = one.read_slots(clips, refs, evidence=ev)
    other = one.read_slots(clips, refs, evidence=[_features(9), _features(10, 5)])
    assert any(not np.allclose(a.probs, b.probs, atol=1e-4) for a, b in zip(base[0], other[0])), "evidence had no effect"
    unknown = one.read_slots(clips, refs, evidence=[np.full((N_PH, len(NAMES)), np.nan, np.float32), np.full((5, len(NAMES)), np.nan, np.float32)])
    assert all(np.isfinite(r.probs).all() for r in unknown[0])
    for x, y in zip(together.read_slots(clips, refs, evidence=ev), base):
        for a, b in zip(x, y):
            np.testing.assert_allclose(a.probs, b.probs, atol=1e-4)
    with pytest.raises(ValueError, match="reference decoder"):
        AudioLMMScorer.from_pretrained(tiny_dir, evidence_adapter, device="cpu", options=DecodeOptions(fast=False)).read_slots(clips, refs, evidence=ev)


def test_weighted_loss_with_unit_weights_is_the_models_loss_and_weights_follow_rarity(tiny_dir, processor):
    from transformers import Qwen2AudioForConditionalGeneration

    from apa.sft import Example, SFTCollator, balanced_slot_weights, weighted_loss

    values = tuple(["8"] * 5 + ["10", "10", "10"] * 3 + ["9"] * N_PH)
    kinds = ["sentence.x"] * 5 + ["word.accuracy", "word.stress", "word.total"] * 3 + ["phone"] * N_PH
    other = tuple(["8"] * 5 + ["10", "10", "3"] * 3 + ["10"] * N_PH)
    w = balanced_slot_weights([values, other, other], [kinds] * 3, alpha=1.0, cap=4.0)
    assert w["phone"]["10"] == 1.0 and w["phone"]["9"] == 2.0  # 18 vs 9
    assert w["word.total"]["3"] == 1.0 and w["word.total"]["10"] == 2.0  # 6 vs 3
    assert balanced_slot_weights([values, other, other], [kinds] * 3, alpha=3.0, cap=4.0)["phone"]["9"] == 4.0  # capped
    audio = np.random.default_rng(0).normal(scale=0.1, size=16000).astype(np.float32)
    ones = {k: {v: 1.0 for v in d} for k, d in w.items()}
    enc = SFTCollator(processor, None, ones)([Example(audio, REF, values)])
    assert torch.equal(enc["loss_weights"], torch.ones_like(enc["loss_weights"]))
    model = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_dir).eval()
    inputs = {k: v for k, v in enc.items() if k != "loss_weights"}
    with torch.no_grad():
        ref = model(**inputs).loss
        ours, _ = weighted_loss(model, dict(inputs), enc["loss_weights"])
    assert torch.allclose(ref, ours, atol=1e-5)
    heavy = SFTCollator(processor, None, {"phone": {"9": 4.0}})([Example(audio, REF, values)])["loss_weights"]
    assert int((heavy == 4.0).sum()) == N_PH  # one token per phone value "9"


def test_mass_preserving_weights_keep_each_kinds_mean_weight():
    from apa.sft import balanced_slot_weights

    values = tuple(["8"] * 5 + ["10", "10", "10"] * 3 + ["9"] * N_PH)
    kinds = ["sentence.x"] * 5 + ["word.accuracy", "word.stress", "word.total"] * 3 + ["phone"] * N_PH
    other = tuple(["8"] * 5 + ["10", "10", "3"] * 3 + ["10"] * N_PH)
    plain = balanced_slot_weights([values, other, other], [kinds] * 3, alpha=1.0)
    w = balanced_slot_weights([values, other, other], [kinds] * 3, alpha=1.0, preserve_mass=True)
    # phone labels: 9 x "9", 18 x "10" -> plain 2 and 1; mean 36/27; mass-preserving 1.5 and 0.75
    assert w["phone"]["9"] == pytest.approx(1.5) and w["phone"]["10"] == pytest.approx(0.75)
    assert w["phone"]["9"] / w["phone"]["10"] == pytest.approx(plain["phone"]["9"] / plain["phone"]["10"])
    counts = {"9": 9, "10": 18}
    assert sum(w["phone"][v] * n for v, n in counts.items()) / 27 == pytest.approx(1.0)
    assert "sentence.x" not in w  # sentence slots keep weight 1


def test_context_projector_mixes_an_utterances_phones_only_when_asked(tmp_path):
    flat = fit_config([_features(0, 50)], NAMES, "embedding", projector_width=8)
    ctx = fit_config([_features(0, 50)], NAMES, "embedding", projector_width=8, context_layers=1, aux_weight=1.0)
    assert ctx.context_layers == 1 and flat.context_layers == 0
    ctx.save(tmp_path)
    assert EvidenceConfig.load(tmp_path) == ctx
    x = torch.tensor(_features(1))
    y = x.clone()
    y[5] += 3.0  # change one phone's features
    for cfg, mixes in ((flat, False), (ctx, True)):
        torch.manual_seed(0)
        proj = EvidenceProjector(cfg, hidden_size=16).eval()
        assert torch.equal(proj(x), torch.zeros(N_PH, 16))  # still a no-op when untrained
        torch.nn.init.normal_(proj.net[2].weight)
        with torch.no_grad():
            a, b = proj(x), proj(y)
        assert not torch.allclose(a[5], b[5])
        assert (not torch.allclose(a[0], b[0], atol=1e-6)) == mixes  # phone 0 sees phone 5 only with context
    _, aux = proj.forward_with_aux(x)
    assert aux is not None and aux.shape == (N_PH,)
    proj.save(tmp_path)
    again = EvidenceProjector.load(tmp_path, ctx, 16)
    with torch.no_grad():
        assert torch.equal(again(x), proj(x))


def test_aux_loss_trains_the_projector_from_the_phone_labels(tiny_dir, processor):
    from transformers import Qwen2AudioForConditionalGeneration

    from apa.sft import EvidenceHook, Example, SFTCollator, aux_loss

    cfg = fit_config([_features(0, 50)], NAMES, "embedding", projector_width=8, context_layers=1, aux_weight=1.0)
    values = tuple(["8"] * 5 + ["10", "10", "10"] * 3 + ["10", "5", "0", "-", "10", "10", "2.5", "10", "10"])
    audio = np.random.default_rng(0).normal(scale=0.1, size=16000).astype(np.float32)
    short = Example(audio[:8000], REF[:1], tuple(["8"] * 5 + ["10"] * 3 + ["7.5", "10"]), _features(3, 2))
    enc = SFTCollator(processor, cfg)([Example(audio, REF, values, _features(2)), short])
    t = enc["evidence_targets"]
    assert t.shape == (2, N_PH)
    np.testing.assert_allclose(t[0].numpy(), [1.0, 0.5, 0.0, np.nan, 1.0, 1.0, 0.25, 1.0, 1.0])
    np.testing.assert_allclose(t[1, :2].numpy(), [0.75, 1.0])
    assert torch.isnan(t[1, 2:]).all()
    model = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_dir).eval()
    torch.manual_seed(0)
    proj = EvidenceProjector(cfg, model.config.text_config.hidden_size)
    hook = EvidenceHook(model, proj)
    inputs = {k: v for k, v in enc.items() if not k.startswith("evidence_")}
    hook.pending = (enc["evidence_features"], enc["evidence_positions"])
    model(**inputs)
    pred = hook.aux
    hook.remove()
    assert pred.shape == (2, N_PH) and torch.isfinite(pred[0]).all() and torch.isnan(pred[1, 2:]).all()
    loss = aux_loss(pred, t)
    ok = torch.isfinite(t)
    assert loss.item() == pytest.approx(((pred[ok] - t[ok]) ** 2).mean().item(), rel=1e-5)
    loss.backward()
    assert proj.aux_head.weight.grad.abs().sum() > 0 and proj.net[0].weight.grad.abs().sum() > 0
