"""Checking an assembled apa-mini against CTranslate2's own Whisper encoder, plus a text generation
and an audio forward (`verify_apa_mini`, `python -m apa.mini verify`).

ctranslate2 is imported inside `_ct2_encode`: it is optional (requirements-dev); without it the
encoder comparison is skipped and reported as such.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import torch
from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration
from transformers.masking_utils import create_bidirectional_mask

from apa import config
from apa.mini.constants import SAMPLE_RATE, default_model_dir
from apa.mini.fingerprint import read_provenance
from apa.mini.sources import joined_whisper_ct2, packages_available

__all__ = ["VERIFY_CLIP", "VerifyReport", "default_clip", "load_clip", "verify_apa_mini"]

# verify thresholds (encoder vs CTranslate2, both float32 on CPU) and the test prompt.
VERIFY_MIN_COSINE = 0.99999
VERIFY_MAX_ABS_REL = 1e-3  # max |ours - ct2| / max |ct2|
VERIFY_MIN_COSINE_FP16 = 0.999  # model built from the Hub (fp32) vs the fp16 CTranslate2 reference
VERIFY_PROMPT = "What is the capital of France?"
VERIFY_EXPECT = "paris"
VERIFY_MAX_NEW_TOKENS = 32
VERIFY_CLIP = ("WAVE", "SPEAKER0001", "000010011.opus")  # inside the Speechocean762 corpus


@dataclass(frozen=True)
class VerifyReport:
    """What `verify_apa_mini` measured. Encoder numbers are None when CTranslate2's reference could
    not be run (weight packages or ctranslate2 missing). Diffs are absolute, in hidden-state units."""

    model_dir: str
    kind: str  # "apa-mini" | "tiny-random"
    device: str
    clip: str
    clip_seconds: float
    # (a) our encoder (last layer, before pooling, + final layer norm; no mask, as Whisper) vs CT2
    encoder_max_abs_diff: float | None
    encoder_cosine: float | None
    encoder_ref_max_abs: float | None  # max |CT2 output|, for scale
    encoder_reference_exact: bool  # the model's encoder weights are the CT2 file's values (rounded like it)
    # same, with the padding mask Qwen2AudioModel.forward applies (valid frames only): informative
    encoder_masked_max_abs_diff: float | None
    encoder_masked_cosine: float | None
    # (b) text-only greedy generation through the full model
    prompt: str
    generated_text: str
    # (c) audio + text forward
    audio_tokens: int
    input_ids_len: int
    logits_shape: tuple[int, ...]
    logits_finite: bool
    seconds: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def encoder_ok(self) -> bool | None:
        """Encoder within tolerance of CTranslate2's; None when not measured."""
        if self.encoder_cosine is None:
            return None
        if not self.encoder_reference_exact:  # unrounded fp32 originals vs the fp16 conversion
            return self.encoder_cosine >= VERIFY_MIN_COSINE_FP16
        return (self.encoder_cosine >= VERIFY_MIN_COSINE
                and self.encoder_max_abs_diff <= VERIFY_MAX_ABS_REL * max(self.encoder_ref_max_abs, 1.0))

    @property
    def ok(self) -> bool:
        """Logits finite, encoder within tolerance when measured, and (apa-mini only) the answer
        mentions Paris."""
        text_ok = self.kind != "apa-mini" or VERIFY_EXPECT in self.generated_text.lower()
        return self.logits_finite and self.encoder_ok is not False and text_ok

    def summary(self) -> str:
        """The report, with encoder_ok and ok, as indented JSON."""
        d = asdict(self)
        d["encoder_ok"], d["ok"] = self.encoder_ok, self.ok
        return json.dumps(d, indent=2, default=str)


def default_clip() -> Path | None:
    """The Speechocean762 utterance VERIFY_CLIP under `apa.config.corpus_dir()`, None if absent."""
    p = config.corpus_dir().joinpath(*VERIFY_CLIP)
    return p if p.is_file() else None


def load_clip(clip: str | os.PathLike | None) -> tuple[np.ndarray, str]:
    """(mono float32 16 kHz samples, description) of an audio file, else of `default_clip()`.
    Without a clip and without the corpus: a deterministic 3 s synthetic vowel-like signal."""
    path = Path(clip) if clip is not None else default_clip()
    if path is None:
        t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
        f0 = 120 + 20 * np.sin(2 * np.pi * 0.5 * t)
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        x = sum(np.sin(k * phase) / k for k in range(1, 12)) * np.hanning(t.size) * 0.1
        return x.astype(np.float32), "synthetic 3 s harmonic signal"
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(1)
    if sr != SAMPLE_RATE:
        x = soxr.resample(x, sr, SAMPLE_RATE).astype(np.float32)
    return x, str(path)


def _compare(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(max |a - b|, cosine) in float64."""
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(np.abs(a - b).max()), float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _ct2_encode(features: np.ndarray, threads: int) -> np.ndarray:
    """CTranslate2's own Whisper-base encoder (float32, CPU) on [B, 80, 3000] features -> [B, 1500, 512]."""
    import ctranslate2  # optional (requirements-dev): only this reference needs it

    with joined_whisper_ct2() as d:
        whisper = ctranslate2.models.Whisper(str(d), device="cpu", compute_type="float32", intra_threads=threads)
        out = whisper.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(features, np.float32)),
                             to_cpu=True)
        out = np.array(out)
        del whisper  # release the files before the directory goes
    return out


def _encoder_states(model: Any, features: torch.Tensor, mask_lengths: torch.Tensor | None) -> np.ndarray:
    """Our encoder's last-layer states before pooling, with the final layer norm: [B, 1500, d_model].
    mask_lengths: mel-frame lengths -> padding masked as in Qwen2AudioModel.forward; None: no mask."""

    tower = model.model.audio_tower
    captured = []
    hook = tower.layers[-1].register_forward_hook(lambda mod, inp, out: captured.append(out))
    try:
        mask = None
        if mask_lengths is not None:
            feat_lengths, _ = tower._get_feat_extract_output_lengths(mask_lengths)
            n = tower.config.max_source_positions
            mask2d = (torch.arange(n, device=feat_lengths.device)[None] < feat_lengths[:, None]).long()
            dummy = torch.zeros(features.shape[0], n, 1, dtype=features.dtype, device=features.device)
            mask = create_bidirectional_mask(config=tower.config, inputs_embeds=dummy, attention_mask=mask2d)
        with torch.inference_mode():
            tower(features, attention_mask=mask)
            h = captured[-1][0] if isinstance(captured[-1], tuple) else captured[-1]
            return tower.layer_norm(h).float().cpu().numpy()
    finally:
        hook.remove()


def _rounded_like_packages(prov: dict[str, Any]) -> bool:
    """Are the model's encoder weights the CTranslate2 file's values? From the packages, or from
    the Hub rounded through fp16 (format version 2 on)."""
    source, version = prov.get("source"), prov.get("format_version", 1)
    return source == "packages" or (source == "hub" and version >= 2)


def _encoder_check(model: Any, feats: Any, device: str, kind: str, exact: bool,
                   seconds: dict[str, float], notes: list[str]) -> dict[str, float | None]:
    """(a): our encoder vs CTranslate2's, unmasked and masked; all None when it cannot be run."""
    enc: dict[str, float | None] = dict.fromkeys(("max", "cos", "ref", "mmax", "mcos"))
    ok, reason = packages_available()
    if kind != "apa-mini":
        notes.append(f"encoder reference skipped: a {kind} model is not whisper-base")
        return enc
    if importlib.util.find_spec("ctranslate2") is None or not ok:
        notes.append(f"encoder reference skipped: {reason or 'ctranslate2 not installed'}")
        return enc
    features = feats["input_features"].to(device)
    lengths = feats["attention_mask"].sum(-1).to(device)
    t = time.perf_counter()
    ours = _encoder_states(model, features, None)
    seconds["encoder_ours"] = time.perf_counter() - t
    t = time.perf_counter()
    ref = _ct2_encode(feats["input_features"].numpy(), torch.get_num_threads())
    seconds["encoder_ct2"] = time.perf_counter() - t
    enc["max"], enc["cos"] = _compare(ours, ref)
    enc["ref"] = float(np.abs(ref).max())
    masked = _encoder_states(model, features, lengths)
    n_valid = int(model.model.audio_tower._get_feat_extract_output_lengths(lengths.cpu())[0][0])
    enc["mmax"], enc["mcos"] = _compare(masked[:, :n_valid], ref[:, :n_valid])
    if not exact:
        notes.append("model built from unrounded Hub originals (fp32); the CTranslate2 reference is their fp16 "
                     f"conversion, so the encoder check only asks for cosine >= {VERIFY_MIN_COSINE_FP16}")
    return enc


def _generate_text(model: Any, processor: Any, device: str) -> str:
    """(b): greedy answer to VERIFY_PROMPT through the chat template."""
    text = processor.apply_chat_template([{"role": "user", "content": VERIFY_PROMPT}],
                                         add_generation_prompt=True, tokenize=False)
    inputs = processor(text=text, return_tensors="pt").to(device)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=VERIFY_MAX_NEW_TOKENS, do_sample=False)
    return processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def _audio_forward(model: Any, processor: Any, wav: np.ndarray, clip_name: str, device: str) -> tuple[Any, Any]:
    """(c): (inputs, logits) of one audio + text forward built by the processor."""
    conversation = [{"role": "user", "content": [
        {"type": "audio", "audio": clip_name},
        {"type": "text", "text": "How well is this sentence pronounced?"},
    ]}]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=text, audio=[wav], sampling_rate=SAMPLE_RATE, return_tensors="pt").to(device)
    with torch.inference_mode():
        return inputs, model(**inputs).logits


def verify_apa_mini(
    model_dir: Path | None = None, *, clip: str | os.PathLike | None = None, device: str | None = None
) -> VerifyReport:
    """Check an assembled (or tiny) model directory (default `default_model_dir()`); see VerifyReport.

    (a) encoder: last-layer hidden states before pooling + final layer norm vs CTranslate2's
        Whisper encoder on the same processor features (needs the weight packages + ctranslate2);
    (b) greedy text generation for VERIFY_PROMPT with the chat template;
    (c) a full audio + text forward built by the processor: finite logits.
    `clip`: an audio file (default: a Speechocean762 utterance, else a synthetic signal).
    `device`: torch device, default "cuda" when available else "cpu" (CT2 runs on CPU).
    """

    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"no model in {model_dir}: run `python -m apa.mini assemble` first")
    prov = read_provenance(model_dir) or {}
    kind = prov.get("kind", "unknown")
    device = device or ("cuda" if config.cuda_available() else "cpu")
    seconds: dict[str, float] = {}
    notes: list[str] = []

    t = time.perf_counter()
    processor = AutoProcessor.from_pretrained(str(model_dir), local_files_only=True)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(
        str(model_dir), dtype=torch.float32, local_files_only=True
    ).to(device).eval()
    seconds["load"] = time.perf_counter() - t

    wav, clip_name = load_clip(clip)
    feats = processor.feature_extractor(wav, sampling_rate=SAMPLE_RATE, return_tensors="pt",
                                        return_attention_mask=True, padding="max_length")
    exact = _rounded_like_packages(prov)
    enc = _encoder_check(model, feats, device, kind, exact, seconds, notes)
    t = time.perf_counter()
    generated = _generate_text(model, processor, device)
    seconds["generate"] = time.perf_counter() - t
    t = time.perf_counter()
    inputs, logits = _audio_forward(model, processor, wav, clip_name, device)
    seconds["audio_forward"] = time.perf_counter() - t
    n_audio = int((inputs["input_ids"] == model.config.audio_token_id).sum())

    return VerifyReport(
        model_dir=str(model_dir), kind=kind, device=device, clip=clip_name,
        clip_seconds=round(len(wav) / SAMPLE_RATE, 3),
        encoder_max_abs_diff=enc["max"], encoder_cosine=enc["cos"], encoder_ref_max_abs=enc["ref"],
        encoder_reference_exact=exact,
        encoder_masked_max_abs_diff=enc["mmax"], encoder_masked_cosine=enc["mcos"],
        prompt=VERIFY_PROMPT, generated_text=generated,
        audio_tokens=n_audio, input_ids_len=int(inputs["input_ids"].shape[1]),
        logits_shape=tuple(logits.shape), logits_finite=bool(torch.isfinite(logits).all()),
        seconds={k: round(v, 2) for k, v in seconds.items()}, notes=tuple(notes),
    )
