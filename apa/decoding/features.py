"""Log-mel features and the audio encoder on a clip's real length, not the processor's 30 s
padding. Inference only: training runs `Qwen2AudioForConditionalGeneration` as it is.

Frames are `feature_extractor.hop_length` samples apart (160 at 16 kHz: 100 frames a second);
the processor pads every clip to `feature_extractor.n_samples` (30 s, 3000 frames).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

ENCODER_FRAME_S = 0.02  # seconds between the encoder's positions (conv2 has stride 2 over 10 ms frames)


def feature_frames(feature_extractor: Any, n_samples: int) -> int:
    """Feature frames of `n_samples` samples, ceil(n_samples / hop_length) (not capped at 30 s)."""
    return -(-int(n_samples) // feature_extractor.hop_length)


def audio_token_count(n_frames: int) -> int:
    """<|AUDIO|> tokens the processor writes for n valid feature frames (25 per second):
    conv2 halves the frames (stride 2), the pooler halves them again."""
    return ((n_frames - 1) // 2 + 1 - 2) // 2 + 1


def log_mel_features(feature_extractor: Any, audio: np.ndarray) -> tuple[torch.Tensor, int]:
    """Whisper log-mel features of `audio` ((n_samples,) float32, 16 kHz) on its real length.

    Returns (features (1, n_mels, F), n): n = the feature frames the processor marks valid
    (ceil(samples / hop), at most 30 s: longer audio is truncated, as the processor does) and
    F = min(n + 2, 3000) frames, equal (to float rounding) to `processor(...)["input_features"][..., :F]`:
    the 2 frames past n feed the last conv window of the encoder exactly as in the padded run.

    Why it matches: STFT frame f reads samples [hop*f - n_fft/2, hop*f + n_fft/2); zero-padding the
    clip to hop*(F+1) samples gives every frame < F the same window as the 30 s zero-padding does,
    and the `max - 8` floor of the log-mel is the same (frames beyond only hold zeros, log10(1e-10)).
    """
    feats, n = log_mel_features_batch(feature_extractor, [audio])
    return feats, n[0]


def log_mel_features_batch(
    feature_extractor: Any, audios: Sequence[np.ndarray], device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, list[int]]:
    """`log_mel_features` of several clips in one STFT on `device`: (features (B, n_mels, F), [n_b]),
    F = the largest clip's frames; clip b's features are [b, :, :min(n_b + 2, 3000)] (more zero
    padding changes no frame of a clip, nor its maximum)."""
    fe = feature_extractor
    hop = fe.hop_length
    total_frames = fe.n_samples // hop  # the processor's 30 s
    xs = [np.asarray(a, dtype=np.float32).reshape(-1)[: fe.n_samples] for a in audios]
    ns = [min(feature_frames(fe, len(x)), total_frames) for x in xs]
    frames = min(max(ns) + 2, total_frames)
    length = min(fe.n_samples, hop * (frames + 1))  # near 30 s: the padded run itself
    padded = np.zeros((len(xs), length), dtype=np.float32)
    for b, x in enumerate(xs):
        padded[b, : len(x)] = x
    dev = torch.device(device)
    feats = fe(list(padded), sampling_rate=fe.sampling_rate, padding="longest", truncation=False,
               return_attention_mask=False, return_tensors="pt", device=str(dev))["input_features"]
    return feats[..., :frames].to(dev), ns


def encode_audio_fast(model: Any, features: torch.Tensor, n_frames: int) -> torch.Tensor:
    """Projected audio embeddings (n_tokens, hidden) of one clip, the encoder run on its real length.

    features: (1, n_mels, F) or (n_mels, F) from `log_mel_features`; n_frames: its valid frames.
    Equals the model's own path (Qwen2AudioModel.forward: 3000 frames, padding masked in the encoder's
    self-attention, then pooled, normed, projected and cut to the valid tokens) to float rounding:
    conv1/conv2 on the first n + 2 frames, keep the (n - 1) // 2 + 1 valid positions, add their
    position embeddings, run the layers with no mask (nothing to mask), 2x average pool, layer norm,
    projector.
    """
    x = features if features.dim() == 3 else features[None]
    return encode_audio_batch(model, x[..., : min(n_frames + 2, x.shape[-1])], [n_frames])[0]


def encode_audio_batch(model: Any, features: torch.Tensor, n_frames: Sequence[int]) -> list[torch.Tensor]:
    """`encode_audio_fast` for a batch: features (B, n_mels, F) from `log_mel_features_batch`; the
    encoder runs on the longest clip's valid length with the others' padding masked in its
    self-attention (as Qwen2AudioModel.forward masks the 30 s padding). Returns [(n_tokens_b, hidden)]."""
    return _run_tower(model, features, n_frames, ())[0]


def encoder_states(model: Any, features: torch.Tensor, n_frames: Sequence[int], layers: Sequence[int]) -> list[torch.Tensor]:
    """The audio tower's hidden states after each of `layers` (1-based; the last layer's with the
    tower's final layer norm, i.e. Whisper's encoder output), at the encoder's positions before
    the 2x pooling (one per ENCODER_FRAME_S), concatenated: per clip (n_positions_b, len(layers) * d_model).

    features / n_frames as for `encode_audio_batch` (the same pass, the same masking)."""
    return _run_tower(model, features, n_frames, tuple(layers))[1]


def _run_tower(model: Any, features: torch.Tensor, n_frames: Sequence[int],
               keep: tuple[int, ...]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(projected audio embeddings per clip, the `keep` layers' states per clip; [] when keep is empty)."""
    tower = model.model.audio_tower
    proj = model.model.multi_modal_projector
    n_tok = [audio_token_count(n) for n in n_frames]
    n_layers = len(tower.layers)
    if any(not 1 <= k <= n_layers for k in keep):
        raise ValueError(f"encoder layers are 1..{n_layers}, not {keep}")
    width = tower.layer_norm.normalized_shape[0]
    if max(n_tok) <= 0:  # under 3 frames: the processor writes no audio token either
        empty = [proj.linear.weight.new_zeros((0, proj.linear.out_features)) for _ in n_frames]
        return empty, [proj.linear.weight.new_zeros((0, width * len(keep))) for _ in n_frames] if keep else []
    x = features.to(device=tower.conv1.weight.device, dtype=tower.conv1.weight.dtype)
    h = torch.nn.functional.gelu(tower.conv1(x))
    h = torch.nn.functional.gelu(tower.conv2(h))
    valid = [min((n - 1) // 2 + 1, h.shape[-1]) for n in n_frames]
    top = max(valid)
    h = h.permute(0, 2, 1)[:, :top] + tower.embed_positions.weight[:top]
    mask = None
    if min(valid) < top:
        from transformers.masking_utils import create_bidirectional_mask

        keep_pos = torch.arange(top, device=h.device)[None] < torch.tensor(valid, device=h.device)[:, None]
        mask = create_bidirectional_mask(config=tower.config, inputs_embeds=h, attention_mask=keep_pos.long())
    kept = []
    for i, layer in enumerate(tower.layers, 1):
        h = layer(h, mask)
        h = h[0] if isinstance(h, tuple) else h
        if i in keep:
            kept.append(tower.layer_norm(h) if i == n_layers else h)  # (B, top, d_model)
    states = [] if not keep else [torch.cat(kept, dim=-1)[b, : valid[b]] for b in range(len(n_frames))]
    h = tower.avg_pooler(h.permute(0, 2, 1)).permute(0, 2, 1)
    h = proj(tower.layer_norm(h))
    return [h[b, : max(t, 0)] for b, t in enumerate(n_tok)], states
