"""Acoustic phone evidence for the audio LMM: how it enters the prompt, and how it is stored.

A forced alignment against a native-speech acoustic model (`apa.align`) gives every reference
phone a feature vector (goodness of pronunciation: the canonical phone's log posterior, the log
posterior ratios against all phones, duration, ...). The audio LMM is given that evidence in
one or both of two ways, chosen per trained adapter (`EvidenceConfig.mode`):

* "text": each reference phone in the prompt is followed by a match level 0-9 (`W:7`), the
  level being the canonical phone's log posterior bucketed at quantiles fitted on the training
  split. Works unchanged for any audio LMM, Qwen2-Audio-7B included.
* "embedding": a small trained projector maps each phone's normalised feature vector to one
  vector of the LLM's width, added to the embedding of that phone's last prompt token.

The adapter directory holds `evidence.json` (this config) and, for "embedding",
`evidence_projector.safetensors`, beside the PEFT files. An adapter without them is a model
that takes no evidence.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

CONFIG_FILE = "evidence.json"
PROJECTOR_FILE = "evidence_projector.safetensors"
MODES = ("text", "embedding", "both")
N_LEVELS = 10
UNKNOWN_LEVEL = "?"  # shown where the alignment failed


@dataclass(frozen=True)
class EvidenceConfig:
    """How an adapter takes phone evidence.

    mode: one of MODES; feature_names: the alignment's feature order (checked on load);
    level_feature: index of the feature bucketed into text levels; level_edges: the N_LEVELS-1
    ascending cut points; mean/std: per-feature normalisation for the projector;
    projector_width: its hidden width; context_layers: transformer layers over the utterance's
    phones inside the projector (0: each phone on its own); aux_weight: weight of the training
    loss that asks the projector's hidden state to predict the phone's label directly (0: off;
    training only, the model's output is still the answer text)."""

    mode: str
    feature_names: tuple[str, ...]
    level_feature: int
    level_edges: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    projector_width: int = 256
    context_layers: int = 0
    aux_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"evidence mode must be one of {MODES}, not {self.mode!r}")
        if len(self.level_edges) != N_LEVELS - 1:
            raise ValueError(f"level_edges needs {N_LEVELS - 1} cut points")

    @property
    def uses_text(self) -> bool:
        return self.mode in ("text", "both")

    @property
    def uses_embedding(self) -> bool:
        return self.mode in ("embedding", "both")

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def levels(self, features: np.ndarray) -> list[int | None]:
        """(n_phones, F) features -> a match level 0-9 per phone (None where unknown/NaN)."""
        x = np.asarray(features, dtype=np.float64)[:, self.level_feature]
        return [None if not math.isfinite(v) else int(np.searchsorted(self.level_edges, v, side="right")) for v in x]

    def save(self, directory: str | os.PathLike) -> Path:
        return write_config(self, Path(directory) / CONFIG_FILE)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> EvidenceConfig | None:
        """The config saved in an adapter dir, or None for an adapter that takes no evidence."""
        return read_config(cls, Path(directory) / CONFIG_FILE)


def write_config(config: Any, path: Path) -> Path:
    """A frozen config dataclass as indented JSON at `path`."""
    path.write_text(json.dumps(asdict(config), indent=2))
    return path


def read_config(cls: type, path: Path) -> Any:
    """The `cls` instance `write_config` saved at `path` (JSON lists back to tuples), or None
    when there is no such file."""
    if not path.is_file():
        return None
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(path.read_text()).items()})


def fit_config(
    features: Sequence[np.ndarray], feature_names: Sequence[str], mode: str, *, level_feature: int = 0,
    projector_width: int = 256, context_layers: int = 0, aux_weight: float = 0.0,
) -> EvidenceConfig:
    """Level cut points (quantiles of the level feature) and normalisation, from training features.

    features: per utterance (n_phones, F); rows with NaN (failed alignments) are ignored."""
    x = np.concatenate([np.asarray(f, dtype=np.float64) for f in features if len(f)], axis=0)
    x = x[np.isfinite(x).all(axis=1)]
    if not len(x):
        raise ValueError("no finite evidence features to fit on")
    edges = np.quantile(x[:, level_feature], np.arange(1, N_LEVELS) / N_LEVELS)
    std = x.std(axis=0)
    std[std < 1e-6] = 1.0
    return EvidenceConfig(mode=mode, feature_names=tuple(feature_names), level_feature=level_feature,
                          level_edges=tuple(float(e) for e in edges), mean=tuple(float(m) for m in x.mean(axis=0)),
                          std=tuple(float(s) for s in std), projector_width=projector_width,
                          context_layers=context_layers, aux_weight=aux_weight)


class EvidenceProjector(nn.Module):
    """(n, F) raw features of one utterance's phones -> (n, hidden) vectors added to the prompt
    embeddings.

    Features are normalised with the training split's mean/std; NaN (no alignment) becomes 0
    after normalisation (the training mean). With `context_layers`, a small transformer runs over
    the utterance's phones (sinusoidal positions) between the two linear layers, so a phone's
    vector can depend on its neighbours. With `aux_weight`, `aux_head` reads the label from the
    same hidden state (training signal only). The last layer starts at zero, so an untrained
    projector leaves the model exactly as it was."""

    def __init__(self, config: EvidenceConfig, hidden_size: int):
        super().__init__()
        width = config.projector_width
        self.register_buffer("mean", torch.tensor(config.mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(config.std, dtype=torch.float32))
        self.net = nn.Sequential(nn.Linear(config.n_features, width), nn.GELU(), nn.Linear(width, hidden_size))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)
        self.context = None
        if config.context_layers:
            layer = nn.TransformerEncoderLayer(width, nhead=4, dim_feedforward=2 * width, dropout=0.1,
                                               batch_first=True, norm_first=True)
            self.context = nn.TransformerEncoder(layer, config.context_layers, enable_nested_tensor=False)
        self.aux_head = nn.Linear(width, 1) if config.aux_weight > 0 else None

    def hidden(self, features: torch.Tensor) -> torch.Tensor:
        """(n, F) -> (n, projector_width)."""
        x = (features.float() - self.mean) / self.std
        x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).clamp(-8.0, 8.0)
        h = self.net[1](self.net[0](x))
        if self.context is not None:
            h = self.context(h[None] + sinusoid(len(h), h.shape[-1], h.device))[0]
        return h

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.hidden(features))

    def forward_with_aux(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(n, F) -> ((n, hidden) vectors, (n,) label predictions on 0-1 or None)."""
        h = self.hidden(features)
        aux = self.aux_head(h).squeeze(-1) if self.aux_head is not None else None
        return self.net[2](h), aux

    def save(self, directory: str | os.PathLike) -> Path:
        from safetensors.torch import save_file

        path = Path(directory) / PROJECTOR_FILE
        save_file({k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items()}, str(path))
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike, config: EvidenceConfig, hidden_size: int) -> EvidenceProjector:
        from safetensors.torch import load_file

        module = cls(config, hidden_size)
        module.load_state_dict(load_file(str(Path(directory) / PROJECTOR_FILE)))
        return module.eval()


def sinusoid(n: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n, width) fixed sinusoidal position encodings (Vaswani et al.)."""
    pos = torch.arange(n, dtype=torch.float32, device=device)[:, None]
    freq = torch.exp(torch.arange(0, width, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / width))
    pe = torch.zeros(n, width, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: width // 2])
    return pe


def add_at_positions(embeds: torch.Tensor, delta: torch.Tensor, positions: Sequence[int]) -> torch.Tensor:
    """embeds: (T, H) prompt embeddings; delta: (n, H) evidence vectors; positions: n token
    indices (-1 = skip). Returns embeds with delta added in place of those rows."""
    keep = [i for i, p in enumerate(positions) if p >= 0]
    if keep:
        idx = torch.tensor([positions[i] for i in keep], device=embeds.device)
        embeds[idx] = embeds[idx] + delta[keep].to(embeds.dtype)
    return embeds


def token_positions(tokenizer, chat: str, prompt: str, spans: Sequence[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Token ids of the chat text, and for each phone span (character offsets in `prompt`, which
    the chat text contains once) the index of the token holding the span's last character.

    The ids are the tokenizer's own encoding of `chat` (offsets from a fast tokenizer), so they
    are exactly what a plain call would give."""
    at = chat.rfind(prompt)
    if at < 0:
        raise ValueError("the chat text does not contain the prompt")
    enc = tokenizer(chat, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    ends = np.array([e for _, e in offsets])
    positions = []
    for _, end in spans:
        last = at + end - 1  # the entry's last character
        i = int(np.searchsorted(ends, last, side="right"))  # first token whose end passes it
        if i >= len(offsets) or not offsets[i][0] <= last < offsets[i][1]:
            raise ValueError(f"no token holds prompt character {last}")
        positions.append(i)
    return list(enc["input_ids"]), positions
