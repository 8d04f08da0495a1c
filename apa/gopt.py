"""A small GOPT-style scorer over the alignment's features, whose predictions join the evidence.

GOPT (Gong et al., ICASSP 2022) scores pronunciation from goodness-of-pronunciation features
with a small transformer over the utterance's phones. Here it is a helper of the audio LMM, not
a rival: its predicted phone, word and sentence scores become extra evidence columns
(`OUTPUT_NAMES`), appended to the alignment's features (`apa.align.FEATURE_NAMES`), which the
LMM reads as a match level in the prompt and through the evidence projector (`apa.evidence`).
The LMM still writes the paper's target text.

So that the LMM learns how far to trust these columns, its training split gets out-of-fold
predictions (each utterance scored by models that never saw its speaker: `cross_fit`), and
every other clip the mean of those fold models (`GOPTEnsemble`).

Per clip, input: the alignment's (n_phones, F) features, the phones' identities and their word
index and, for a helper fitted with `GOPTConfig.tower_layers`, the audio tower's hidden states
(Whisper-base's encoder, frozen in apa-mini) averaged over each phone's aligned frames
(`pool_phone_states`): a native-speech GOP says how far a phone is from the native model, the
encoder states what the speech itself sounds like. A helper fitted with `GOPTConfig.word_columns`
also reads, repeated on each phone of a word, what Whisper's forced reading of the reference says
about that word (`apa.transcribe.WORD_EVIDENCE_NAMES`: how likely the recording makes its tokens):
a word said otherwise is a word the recogniser does not expect. Output: (n_phones, len(OUTPUT_NAMES)) on the labels' scales (phone 0-2, others 0-10);
word and sentence predictions repeat on every phone of their word / the clip. Rows whose
alignment failed (NaN features) get NaN predictions: no evidence stays no evidence.

The reported scores can also lean on the helper directly (`blend`): each phone, word and sentence
score becomes a weighted mean of the LMM's reading and the helper's prediction, with a weight
per aspect (`BlendWeights`, fitted on a held-out train fold by training.fit_blend and saved with
the adapter; `DecodeOptions.gopt_blend` overrides it; 0 gives the LMM's own reading, the paper's
method).

Files in an adapter directory: `gopt.json` (GOPTConfig), `gopt.safetensors` (fold models) and,
where fitted, `blend.json` (BlendWeights).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from apa.schema import Assessment

CONFIG_FILE = "gopt.json"
WEIGHTS_FILE = "gopt.safetensors"
PHONES = ("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH").split()
SENTENCE_TARGETS = ("accuracy", "fluency", "prosodic", "total")
WORD_TARGETS = ("accuracy", "total")
OUTPUT_NAMES = ("pred_phone",) + tuple(f"pred_word_{a}" for a in WORD_TARGETS) + tuple(f"pred_sent_{a}" for a in SENTENCE_TARGETS)
PHONE_SCALE = 2.0  # phone labels are 0-2, word and sentence labels 0-10
SCORE_SCALE = 10.0
BLEND_ASPECTS = ("phone",) + tuple(f"word_{a}" for a in WORD_TARGETS) + tuple(f"sentence_{a}" for a in SENTENCE_TARGETS)
BLEND_FILE = "blend.json"
DEFAULT_BLEND = 0.5  # the helper's weight where no fitted weights were saved
EDGE_SLACK = 1e-3  # of a position: alignment times are multiples of 10 ms, stored as float32 in the corpus files


@dataclass(frozen=True)
class GOPTConfig:
    """feature_names: the alignment's columns it reads (checked against the caller's);
    word_columns: per-word columns (`apa.transcribe.WORD_EVIDENCE_NAMES`, repeated on each phone
    of the word) that follow the alignment's, from Whisper's forced reading of the reference by
    the transcriber `word_model` names (`apa.config.transcriber_choice`'s values; CTranslate2 int8
    on a CPU, as fitted); () and "": none;
    tower_layers / tower_width: the audio-tower layers whose pooled states follow those columns
    (`apa.decoding.features.encoder_states`; () and 0: none) and the tower's width; tower_pca:
    each layer's states reduced to this many principal components (fitted once on the training
    split, `fit_tower_pca`, and kept in the weights; 0: the states as they are): with a few
    thousand clips the fold models overfit 512 raw columns a layer;
    mean/std: the normalisation of the model's n_model_inputs columns on the training split;
    width/layers/heads/dropout: the transformer (dropout is active in training only); folds: how
    many fold models the ensemble holds."""

    feature_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    width: int = 48
    layers: int = 3
    heads: int = 4
    folds: int = 5
    dropout: float = 0.1  # configs saved before this field load with it
    tower_layers: tuple[int, ...] = ()
    tower_width: int = 0
    tower_pca: int = 0
    word_columns: tuple[str, ...] = ()
    word_model: str = ""

    def __post_init__(self) -> None:
        if len(self.mean) != self.n_model_inputs or len(self.std) != self.n_model_inputs:
            raise ValueError(f"mean/std need {self.n_model_inputs} values (the features and the tower columns), not {len(self.mean)}")
        if self.word_columns:
            from apa.transcribe import WORD_EVIDENCE_NAMES

            unknown = [c for c in self.word_columns if c not in WORD_EVIDENCE_NAMES]
            if unknown or not self.word_model:
                raise ValueError(f"word columns {unknown} are not among {WORD_EVIDENCE_NAMES}" if unknown
                                 else "word_columns need the word_model they come from")

    @property
    def n_direct(self) -> int:
        """Columns per phone before the tower states: the alignment's features, then the word columns."""
        return len(self.feature_names) + len(self.word_columns)

    @property
    def n_inputs(self) -> int:
        """Columns per phone the helper is given: the alignment's features, the word columns, then
        the pooled tower states."""
        return self.n_direct + len(self.tower_layers) * self.tower_width

    @property
    def n_model_inputs(self) -> int:
        """Columns per phone after the tower states' reduction (tower_pca)."""
        per_layer = self.tower_pca or self.tower_width
        return self.n_direct + len(self.tower_layers) * per_layer

    def save(self, directory: str | os.PathLike) -> Path:
        from apa.evidence import write_config

        return write_config(self, Path(directory) / CONFIG_FILE)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> GOPTConfig | None:
        """The config saved in `directory`, or None where there is none."""
        from apa.evidence import read_config

        return read_config(cls, Path(directory) / CONFIG_FILE)


@dataclass(frozen=True)
class BlendWeights:
    """The helper's weight in `blend` per aspect, in the order of OUTPUT_NAMES (BLEND_ASPECTS):
    0 keeps the LMM's reading, 1 takes the helper's prediction."""

    phone: float = DEFAULT_BLEND
    word_accuracy: float = DEFAULT_BLEND
    word_total: float = DEFAULT_BLEND
    sentence_accuracy: float = DEFAULT_BLEND
    sentence_fluency: float = DEFAULT_BLEND
    sentence_prosodic: float = DEFAULT_BLEND
    sentence_total: float = DEFAULT_BLEND

    def __post_init__(self) -> None:
        for a in BLEND_ASPECTS:
            if not 0.0 <= getattr(self, a) <= 1.0:
                raise ValueError(f"blend weight {a} must be within [0, 1], not {getattr(self, a)}")

    @classmethod
    def uniform(cls, weight: float) -> BlendWeights:
        return cls(**{a: float(weight) for a in BLEND_ASPECTS})

    def as_array(self) -> np.ndarray:
        """(len(OUTPUT_NAMES),) float64."""
        return np.array([getattr(self, a) for a in BLEND_ASPECTS], np.float64)

    def save(self, directory: str | os.PathLike) -> Path:
        from apa.evidence import write_config

        return write_config(self, Path(directory) / BLEND_FILE)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> BlendWeights | None:
        """The weights saved in `directory`, or None where there are none."""
        from apa.evidence import read_config

        return read_config(cls, Path(directory) / BLEND_FILE)


@dataclass(frozen=True)
class Utterance:
    """One clip's model input and (for training) labels.

    features: (n, F) the helper's inputs (alignment features, then pooled tower states for a
    helper that takes them: `GOPTConfig.n_inputs` columns); phones: n ARPAbet symbols (stress digits allowed);
    word: (n,) word index of each phone; phone_score: (n,) 0-2, NaN = no label;
    word_scores: (n_words, len(WORD_TARGETS)) 0-10; sentence: (len(SENTENCE_TARGETS),) 0-10."""

    features: np.ndarray
    phones: tuple[str, ...]
    word: np.ndarray
    phone_score: np.ndarray | None = None
    word_scores: np.ndarray | None = None
    sentence: np.ndarray | None = None


def phone_ids(phones: Sequence[str]) -> list[int]:
    """ARPAbet symbols -> indices into PHONES (len(PHONES) for anything else)."""
    index = {p: i for i, p in enumerate(PHONES)}
    return [index.get(p.rstrip("012"), len(PHONES)) for p in phones]


class GOPT(nn.Module):
    """One model: (1, n) phones -> phone, word (per phone) and sentence (per clip) predictions.

    Input per phone: normalised features projected to `width`, plus a phone-identity embedding
    and a sinusoidal position; len(SENTENCE_TARGETS) learned tokens in front read the sentence
    scores, as GOPT's [CLS] tokens do. Outputs are on 0-1 (label / scale)."""

    def __init__(self, config: GOPTConfig):
        super().__init__()
        d = config.width
        self.register_buffer("mean", torch.tensor(config.mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(config.std, dtype=torch.float32))
        self.n_align = config.n_direct  # the columns before the tower states
        if config.tower_pca:  # per layer (W,) mean and (W, k) components: set by fit_tower_pca's result
            n_layers = len(config.tower_layers)
            self.register_buffer("tower_mean", torch.zeros(n_layers, config.tower_width))
            self.register_buffer("tower_basis", torch.zeros(n_layers, config.tower_width, config.tower_pca))
        self.inp = nn.Linear(config.n_model_inputs, d)
        self.phone = nn.Embedding(len(PHONES) + 1, d)
        self.cls = nn.Parameter(torch.zeros(len(SENTENCE_TARGETS), d))
        layer = nn.TransformerEncoderLayer(d, config.heads, 3 * d, dropout=config.dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.phone_head = nn.Linear(d, 1)
        self.word_head = nn.Linear(d, len(WORD_TARGETS))
        self.sentence_head = nn.Linear(d, 1)

    def forward(self, features: torch.Tensor, ids: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """features: (B, n, F) raw; ids: (B, n) phone indices; pad: (B, n) True = padding.
        Returns phone (B, n), word-per-phone (B, n, len(WORD_TARGETS)), sentence (B, S)."""
        from apa.evidence import sinusoid

        b, n, _ = features.shape
        x = self.reduce(features.float())
        x = torch.nan_to_num((x - self.mean) / self.std, nan=0.0, posinf=0.0, neginf=0.0).clamp(-8, 8)
        h = self.inp(x) + self.phone(ids) + sinusoid(n, self.cls.shape[1], features.device)
        s = self.cls.shape[0]
        h = torch.cat([self.cls.expand(b, s, -1), h], dim=1)
        mask = torch.cat([torch.zeros(b, s, dtype=torch.bool, device=pad.device), pad], dim=1)
        h = self.norm(self.encoder(h, src_key_padding_mask=mask))
        sent = self.sentence_head(h[:, :s]).squeeze(-1)
        return self.phone_head(h[:, s:]).squeeze(-1), self.word_head(h[:, s:]), sent

    def reduce(self, features: torch.Tensor) -> torch.Tensor:
        """(..., n_inputs) -> (..., n_model_inputs): each tower layer's states onto its principal
        components (unchanged without tower_pca)."""
        if not hasattr(self, "tower_basis"):
            return features
        lead = features.shape[:-1]
        t = features[..., self.n_align :].reshape(*lead, *self.tower_mean.shape) - self.tower_mean  # (..., L, W)
        z = torch.einsum("...lw,lwk->...lk", t, self.tower_basis).reshape(*lead, -1)  # (..., L * k)
        return torch.cat([features[..., : self.n_align], z], dim=-1)

    def set_tower_pca(self, mean: np.ndarray, basis: np.ndarray) -> None:
        self.tower_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.tower_basis.copy_(torch.as_tensor(basis, dtype=torch.float32))


def fit_tower_pca(utterances: Sequence[Utterance], n_align: int, n_layers: int, k: int,
                  max_rows: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per tower layer, the mean and the top-k principal directions of its pooled states over the
    finite phone rows (at most max_rows, drawn with `seed`): ((L, W) mean, (L, W, k) basis)."""
    x = np.concatenate([u.features[:, n_align:] for u in utterances], axis=0).astype(np.float64)
    x = x[np.isfinite(x).all(axis=1)]
    if len(x) > max_rows:
        x = x[np.random.default_rng(seed).choice(len(x), max_rows, replace=False)]
    x = x.reshape(len(x), n_layers, -1)
    mean = x.mean(axis=0)
    basis = np.stack([np.linalg.svd(x[:, i] - mean[i], full_matrices=False)[2][:k].T for i in range(n_layers)])
    return mean.astype(np.float32), basis.astype(np.float32)


def reduced_normalisation(utterances: Sequence[Utterance], n_align: int, pca: tuple[np.ndarray, np.ndarray],
                          ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """`fit_normalisation` of the columns the model sees after the tower states' reduction."""
    mean, basis = pca
    reduced = []
    for u in utterances:
        t = u.features[:, n_align:].reshape(len(u.features), *mean.shape) - mean
        z = np.einsum("nlw,lwk->nlk", t, basis).reshape(len(u.features), -1)
        reduced.append(Utterance(np.concatenate([u.features[:, :n_align], z], axis=1), u.phones, u.word))
    return fit_normalisation(reduced)


def fit_normalisation(utterances: Sequence[Utterance]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-feature mean and std over the finite rows of the training utterances."""
    x = np.concatenate([u.features for u in utterances], axis=0).astype(np.float64)
    x = x[np.isfinite(x).all(axis=1)]
    std = x.std(axis=0)
    std[std < 1e-6] = 1.0
    return tuple(float(v) for v in x.mean(axis=0)), tuple(float(v) for v in std)


def _batch(utts: Sequence[Utterance], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Pad a list of utterances into tensors (labels NaN where missing or padded)."""
    b, n = len(utts), max(len(u.phones) for u in utts)
    f = utts[0].features.shape[1]
    feats = torch.zeros(b, n, f)
    ids = torch.full((b, n), len(PHONES), dtype=torch.long)
    pad = torch.ones(b, n, dtype=torch.bool)
    phone = torch.full((b, n), math.nan)
    word = torch.full((b, n, len(WORD_TARGETS)), math.nan)
    sent = torch.full((b, len(SENTENCE_TARGETS)), math.nan)
    for i, u in enumerate(utts):
        k = len(u.phones)
        feats[i, :k] = torch.as_tensor(np.asarray(u.features, np.float32))
        ids[i, :k] = torch.tensor(phone_ids(u.phones))
        pad[i, :k] = False
        if u.phone_score is not None:
            phone[i, :k] = torch.as_tensor(np.asarray(u.phone_score, np.float32)) / PHONE_SCALE
        if u.word_scores is not None:
            word[i, :k] = torch.as_tensor(np.asarray(u.word_scores, np.float32)[np.asarray(u.word)]) / SCORE_SCALE
        if u.sentence is not None:
            sent[i] = torch.as_tensor(np.asarray(u.sentence, np.float32)) / SCORE_SCALE
    return {k: v.to(device) for k, v in dict(features=feats, ids=ids, pad=pad, phone=phone, word=word, sentence=sent).items()}


def _masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    keep = torch.isfinite(target)
    return ((pred[keep] - target[keep]) ** 2).mean() if keep.any() else pred.sum() * 0.0


def train_one(config: GOPTConfig, utterances: Sequence[Utterance], *, epochs: int = 60, batch_size: int = 25,
              lr: float = 1e-3, seed: int = 0, device: torch.device | str = "cpu",
              tower_pca: tuple[np.ndarray, np.ndarray] | None = None) -> GOPT:
    """One model on labelled utterances (Adam, cosine decay, equal loss on the three levels);
    tower_pca: `fit_tower_pca`'s result, required when config.tower_pca is set."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = GOPT(config)
    if config.tower_pca:
        if tower_pca is None:
            raise ValueError("config.tower_pca needs the fitted reduction (fit_tower_pca)")
        model.set_tower_pca(*tower_pca)
    model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(utterances) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(utterances))
        for i in range(0, len(order), batch_size):
            b = _batch([utterances[j] for j in order[i : i + batch_size]], device)
            phone, word, sent = model(b["features"], b["ids"], b["pad"])
            loss = _masked_mse(phone, b["phone"]) + _masked_mse(word, b["word"]) + _masked_mse(sent, b["sentence"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


class GOPTEnsemble(nn.Module):
    """The fold models; `predict` averages them."""

    def __init__(self, config: GOPTConfig, models: Sequence[GOPT] | None = None, blend_weights: BlendWeights | None = None):
        super().__init__()
        self.config = config
        self.blend_weights = blend_weights  # fitted with the LMM it helps (training.fit_blend), or None
        self.models = nn.ModuleList(models if models is not None else [GOPT(config) for _ in range(config.folds)])

    @torch.inference_mode()
    def predict(self, utterances: Sequence[Utterance], members: Sequence[int] | None = None,
                batch_size: int = 64) -> list[np.ndarray]:
        """Per utterance, (n_phones, len(OUTPUT_NAMES)) predictions on the labels' scales, the
        mean over `members` (default all fold models); NaN on rows with a NaN feature (not
        aligned: apa.align's fallback keeps only log_frames), except the word columns (missing
        Whisper evidence is read as an average word).

        Runs in padded batches on one CPU thread: the matrices are tiny, and more threads only
        contend with the rest of the process (time per clip: bench/results/gopt_speed.md)."""
        members = list(range(len(self.models)) if members is None else members)
        self.eval()  # no dropout at inference
        out: list[np.ndarray] = []
        with one_thread():
            for i in range(0, len(utterances), batch_size):
                out += self._predict_batch(utterances[i : i + batch_size], members)
        return out

    def _predict_batch(self, utts: Sequence[Utterance], members: Sequence[int]) -> list[np.ndarray]:
        if not any(len(u.phones) for u in utts):
            return [np.zeros((0, len(OUTPUT_NAMES)), np.float32) for _ in utts]
        b = _batch([u for u in utts if len(u.phones)])
        runs = [self.models[m](b["features"], b["ids"], b["pad"]) for m in members]
        phone = torch.stack([r[0] for r in runs]).mean(0)  # (B, n)
        word = torch.stack([r[1] for r in runs]).mean(0)  # (B, n, W)
        sent = torch.stack([r[2] for r in runs]).mean(0)  # (B, S)
        out, k = [], 0
        for u in utts:
            n = len(u.phones)
            if not n:
                out.append(np.zeros((0, len(OUTPUT_NAMES)), np.float32))
                continue
            wmean = _word_means(word[k, :n], np.asarray(u.word))
            pred = torch.cat([phone[k, :n, None] * PHONE_SCALE, wmean * SCORE_SCALE,
                              sent[k].expand(n, -1) * SCORE_SCALE], dim=1).numpy().astype(np.float32)
            x = np.asarray(u.features, np.float64)
            f, d = len(self.config.feature_names), self.config.n_direct
            unknown = np.isnan(x[:, :f]).any(axis=1) | np.isnan(x[:, d:]).any(axis=1)  # the word columns may be
            pred[unknown] = np.nan  # not aligned (missing word columns read as an average word)
            out.append(pred)
            k += 1
        return out

    def save(self, directory: str | os.PathLike) -> None:
        from safetensors.torch import save_file

        self.config.save(directory)
        state = {k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(Path(directory) / WEIGHTS_FILE))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> GOPTEnsemble | None:
        """The ensemble saved in `directory`, or None where there is none."""
        from safetensors.torch import load_file

        config = GOPTConfig.load(directory)
        if config is None:
            return None
        ens = cls(config, blend_weights=BlendWeights.load(directory))
        ens.load_state_dict(load_file(str(Path(directory) / WEIGHTS_FILE)))
        return ens.eval()


@contextlib.contextmanager
def one_thread():
    """Torch's intra-op threads set to 1 inside the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _word_means(word_pred: torch.Tensor, word: np.ndarray) -> torch.Tensor:
    """(n, W) per-phone word predictions -> each phone gets the mean over its word's phones."""
    idx = torch.as_tensor(word, dtype=torch.long)
    n_words = int(idx.max()) + 1
    sums = torch.zeros(n_words, word_pred.shape[1]).index_add_(0, idx, word_pred)
    counts = torch.zeros(n_words).index_add_(0, idx, torch.ones(len(idx)))
    return (sums / counts[:, None])[idx]


def fold_assignment(groups: Sequence[str], folds: int, seed: int = 0) -> np.ndarray:
    """(len(groups),) fold index 0..folds-1 per item; all items of a group share a fold, and the
    groups are dealt to the folds in a seeded random order (sizes differ by at most one group)."""
    names = sorted(set(groups))
    if len(names) < folds:
        raise ValueError(f"{len(names)} groups cannot fill {folds} folds")
    fold_of = {g: i % folds for i, g in enumerate(np.random.default_rng(seed).permutation(names))}
    return np.array([fold_of[g] for g in groups], dtype=np.int64)


def cross_fit(config: GOPTConfig, utterances: Sequence[Utterance], groups: Sequence[str], *,
              epochs: int = 60, seed: int = 0, lr: float = 1e-3, log=None,
              tower_pca: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[GOPTEnsemble, list[np.ndarray]]:
    """config.folds models, each trained on the utterances outside one fold of `groups` (e.g.
    speakers); returns the ensemble and each utterance's out-of-fold prediction (from the one
    model that did not see its group). `seed` sets the folds and the models' initialisation;
    `lr` (train_one's peak learning rate) leaves the folds as they are; `tower_pca`: as for
    train_one (one reduction for all folds: it is unsupervised)."""
    folds = fold_assignment(groups, config.folds, seed)
    models = []
    for k in range(config.folds):
        train = [u for u, f in zip(utterances, folds) if f != k]
        models.append(train_one(config, train, epochs=epochs, lr=lr, seed=seed + k, tower_pca=tower_pca))
        if log:
            log(f"fold {k + 1}/{config.folds}: trained on {len(train)} utterances")
    ens = GOPTEnsemble(config, models)
    oof: list[np.ndarray | None] = [None] * len(utterances)
    for k in range(config.folds):
        idx = np.flatnonzero(folds == k)
        for i, p in zip(idx, ens.predict([utterances[i] for i in idx], members=[k])):
            oof[i] = p
    return ens, oof  # type: ignore[return-value]


def reference_inputs(reference: Sequence[tuple[str, Sequence[str]]]) -> tuple[tuple[str, ...], np.ndarray]:
    """((word, phones), ...) -> (the phones in order, (n_phones,) word index of each)."""
    phones = tuple(p for _, ps in reference for p in ps)
    word = np.array([i for i, (_, ps) in enumerate(reference) for _ in ps], dtype=np.int64)
    return phones, word


def word_inputs(words: np.ndarray | None, word: np.ndarray, columns: Sequence[str]) -> np.ndarray:
    """Per-word evidence -> per-phone columns.

    words: (n_words, len(WORD_EVIDENCE_NAMES)) `apa.transcribe.WhisperTranscriber.word_evidence`,
    or None (not available: NaN, which the helper reads as an average word); word: (n_phones,)
    word index of each phone; returns (n_phones, len(columns)) float32, each phone its word's."""
    from apa.transcribe import WORD_EVIDENCE_NAMES

    word = np.asarray(word, np.int64)
    if words is None:
        return np.full((len(word), len(columns)), np.nan, np.float32)
    words = np.asarray(words, np.float32)
    n_words = int(word.max()) + 1 if len(word) else 0
    if words.shape != (n_words, len(WORD_EVIDENCE_NAMES)):
        raise ValueError(f"word evidence of shape {words.shape} for {n_words} words")
    return words[word][:, [WORD_EVIDENCE_NAMES.index(c) for c in columns]]


def append_predictions(ensemble: GOPTEnsemble, features: np.ndarray, reference: Sequence[tuple[str, Sequence[str]]],
                       tower: np.ndarray | None = None, words: np.ndarray | None = None) -> np.ndarray:
    """(n_phones, F) alignment features of one clip -> (n_phones, F + len(OUTPUT_NAMES)): the
    ensemble's predictions appended (NaN where the alignment failed). tower: the clip's
    (n_phones, len(tower_layers) * tower_width) `pool_phone_states`, required by a helper that
    takes them (and ignored by one that does not); words: the clip's (n_words,
    len(WORD_EVIDENCE_NAMES)) Whisper word evidence for a helper with word columns (None: not
    available, see `word_inputs`; ignored by a helper without)."""
    phones, word = reference_inputs(reference)
    features = np.asarray(features, np.float32)
    if len(phones) != len(features):
        raise ValueError(f"{len(features)} feature rows for {len(phones)} reference phones")
    inputs = features
    if ensemble.config.word_columns:
        inputs = np.concatenate([inputs, word_inputs(words, word, ensemble.config.word_columns)], axis=1)
    if ensemble.config.tower_layers:
        want = len(ensemble.config.tower_layers) * ensemble.config.tower_width
        if tower is None or np.shape(tower) != (len(features), want):
            raise ValueError(f"this helper takes (n_phones, {want}) pooled tower states, not {None if tower is None else np.shape(tower)}")
        inputs = np.concatenate([inputs, np.asarray(tower, np.float32)], axis=1)
    pred = ensemble.predict([Utterance(inputs, phones, word)])[0]
    return np.concatenate([features, pred], axis=1)


def pool_phone_states(states: np.ndarray, start: np.ndarray, end: np.ndarray, frame_s: float) -> np.ndarray:
    """Per phone, the mean of the encoder states over its aligned time.

    states: (T, D) at one position per frame_s seconds (`apa.decoding.features.encoder_states`,
    ENCODER_FRAME_S); start / end: (n,) seconds from the start of the same audio. A phone covers
    positions floor(start / frame_s) to ceil(end / frame_s) (at least one, clipped to the clip;
    times on a position's edge count as on it whether they come as float32 or float64);
    NaN times (no alignment) or no states give NaN rows. Returns (n, D) float32."""
    states = np.asarray(states, np.float32)
    start, end = np.asarray(start, np.float64), np.asarray(end, np.float64)
    out = np.full((len(start), states.shape[1] if states.ndim == 2 else 0), np.nan, np.float32)
    if states.ndim != 2 or not len(states):
        return out
    t = len(states)
    for j, (a, b) in enumerate(zip(start, end)):
        if not (math.isfinite(a) and math.isfinite(b)):
            continue
        lo = min(max(int(math.floor(a / frame_s + EDGE_SLACK)), 0), t - 1)
        hi = min(max(int(math.ceil(b / frame_s - EDGE_SLACK)), lo + 1), t)
        out[j] = states[lo:hi].mean(axis=0)
    return out


def blend(assessment: Assessment, predictions: np.ndarray | None, weight: float | BlendWeights) -> Assessment:
    """The assessment with its phone, word (accuracy, total) and sentence (accuracy, fluency,
    prosodic, total) scores moved to (1 - w) * score + w * the helper's prediction (clipped to
    the labels' range), w the aspect's weight (one float: the same for all).

    predictions: (n_phones, len(OUTPUT_NAMES)) in reference order (the last columns of the
    model's evidence), or None; rows that are NaN (no alignment) leave their scores as they are.
    Completeness and stress are the model's alone (the helper does not predict them). The
    result's `extra["gopt_blend"]` records the weights used ({aspect: w}; 0.0 where nothing
    was blended)."""
    from dataclasses import asdict, replace

    weights = weight if isinstance(weight, BlendWeights) else BlendWeights.uniform(weight)
    w = weights.as_array()
    p = None if predictions is None else np.asarray(predictions, np.float64)
    if p is not None and len(p):  # a regression head can overshoot the labels' range
        p = np.concatenate([np.clip(p[:, :1], 0, PHONE_SCALE), np.clip(p[:, 1:], 0, SCORE_SCALE)], axis=1)
    if not (w > 0).any() or p is None or not len(p) or not np.isfinite(p).any():
        return replace(assessment, extra={**assessment.extra, "gopt_blend": 0.0})

    def mix(score: float | None, pred: float, col: int) -> float | None:
        return score if score is None or not math.isfinite(pred) else (1 - w[col]) * score + w[col] * float(pred)

    words, k = [], 0
    for wd in assessment.words:
        rows = p[k : k + len(wd.phones)]
        phones = tuple(replace(ph, score=mix(ph.score, rows[j, 0], 0)) for j, ph in enumerate(wd.phones))
        first = rows[0] if len(rows) else np.full(p.shape[1], np.nan)
        words.append(replace(wd, phones=phones, accuracy=mix(wd.accuracy, first[1], 1), total=mix(wd.total, first[2], 2)))
        k += len(wd.phones)
    finite = p[np.isfinite(p).all(axis=1)]
    sent = finite[0, 1 + len(WORD_TARGETS):] if len(finite) else np.full(len(SENTENCE_TARGETS), np.nan)
    s = assessment.sentence
    sentence = replace(s, **{a: mix(getattr(s, a), sent[i], 1 + len(WORD_TARGETS) + i) for i, a in enumerate(SENTENCE_TARGETS)})
    return replace(assessment, words=tuple(words), sentence=sentence, extra={**assessment.extra, "gopt_blend": asdict(weights)})
