"""Scoring speech with an audio LMM (`Qwen2AudioForConditionalGeneration`) + optional PEFT
adapter, under the answer-template grammar (`apa.decoding` describes the decoding).

    from apa.scorer import load_scorer
    scorer = load_scorer()                       # apa-mini + the shipped adapter
    result = scorer.assess(audio, "WE CALL IT BEAR")

Public surface of `AudioLMMScorer`: `assess` / `assess_batch` (text in, `Assessment` out), `score`
(explicit references), `read_many` / `read_slots` (the raw slot distributions, `SlotReading`),
`aligned_evidence` / `evidence_inputs` / `tower_inputs` / `word_evidence` (the phone evidence the
model takes; the module function `tower_inputs` computes the pooled encoder states for any model).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from apa import config
from apa.decoding.backends import DecoderBackend, build_backend
from apa.decoding.features import (
    ENCODER_FRAME_S, audio_token_count, encode_audio_batch, encode_audio_fast, encoder_states, feature_frames,
    log_mel_features, log_mel_features_batch,
)
from apa.decoding.plan import Plan, Planner
from apa.decoding.reference import ReferenceDecoder
from apa.decoding.speculative import INITIAL_PRIOR, decode_clip, decode_clips, prompt_embeds
from apa.decoding.tokens import PieceTokenizer
from apa.decoding.trie import SlotReading
from apa.evidence import EvidenceConfig, EvidenceProjector
from apa.gopt import CONFIG_FILE as GOPT_CONFIG, WEIGHTS_FILE as GOPT_WEIGHTS, BlendWeights, GOPTEnsemble
from apa.prompts import PHONE_SCALE, Reference
from apa.schema import SENTENCE_ASPECTS, Assessment, Phone, Sentence, Word

MODES = ("expected", "greedy")
HISTORIES = ("greedy", "top", "helper")  # what each slot's reading is conditioned on (DecodeOptions.history)
Spans = tuple[np.ndarray, np.ndarray]  # a clip's phones' (start (n,), end (n,)) in seconds
STAT_KEYS = ("clips", "forwards", "llm_tokens", "passes", "side_tokens", "slots")
log = logging.getLogger(__name__)


class Scorer(Protocol):
    """Anything that scores 16 kHz mono float32 audio against a reference sentence."""

    name: str

    def assess(self, audio: np.ndarray, text: str) -> Assessment: ...

    def assess_batch(self, items: Sequence[tuple[np.ndarray, str]]) -> list[Assessment]: ...


@dataclass(frozen=True)
class DecodeOptions:
    """How `AudioLMMScorer` decodes.

    mode: which reading goes into the Assessment, "expected" (probability-weighted mean) or
    "greedy" (argmax). batch_size: clips per `read_slots` call in `read_many`. fast: True, the fast
    decoder (real-length encoder, speculative template decoding through a lean decoder forward);
    False, the reference decoder (`apa.decoding.reference`), which the fast one matches.
    batch_clips: with the fast decoder and several clips, decode them together (one forward per
    pass of all) or clip by clip; None: together on a GPU, clip by clip on a CPU (where padding
    the clips to one length costs more than it saves). feedback: align every clip (`apa.align`) and
    put word and phone times and the phones heard instead on the result (`apa.annotate`), also for
    a model that takes no evidence; False: align only when the model takes evidence, and give
    results without times (the scores are the same either way). gopt_blend: for a model with a
    GOPT helper (`apa.gopt`), the weight of the helper's predictions in the reported phone, word
    and sentence scores (`apa.gopt.blend`; 0: the LMM's own reading); None: the weights per
    aspect fitted with the adapter (its blend.json), else apa.gopt.DEFAULT_BLEND. history: the
    values in the earlier word and phone slots when a slot is read (fast decoder only; sentence
    scores are always greedy): "greedy", the greedy values (what greedy decoding emits); "top",
    their top values (as if all before were said perfectly); "helper", the GOPT helper's
    predictions rounded to the slot's values (`fixed_history`; "top" where it has none). A fixed
    history reads all word and phone slots in one pass and cannot cascade (with greedy feedback
    one low reading pulls the next ones down), but apa-mini reads phones worse with it on held-out
    train clips (results/history), so greedy is the default."""

    mode: str = "expected"
    batch_size: int = 8
    fast: bool = True
    batch_clips: bool | None = None
    feedback: bool = True
    gopt_blend: float | None = None
    history: str = "greedy"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")
        if self.history not in HISTORIES:
            raise ValueError(f"history must be one of {HISTORIES}, not {self.history!r}")
        if self.gopt_blend is not None and not 0.0 <= self.gopt_blend <= 1.0:
            raise ValueError(f"gopt_blend must be within [0, 1], not {self.gopt_blend}")

    @property
    def decoder(self) -> str:
        """Which decoder: "fast" or "reference"."""
        return "fast" if self.fast else "reference"


class AudioLMMScorer:
    """Scores speech with a Qwen2Audio-class model under the template grammar.

    backend: the decoder backend of the fast path (default: `build_backend(model)`, built on
    first use). evidence / projector / gopt: how the model takes phone evidence (`apa.evidence`,
    and the GOPT helper whose predictions join it, `apa.gopt`; saved with its adapter; None: it
    takes none). word_scorer: what gives a helper with word columns its Whisper word evidence (an
    object with `word_evidence(audio, words)`, as `apa.transcribe.WhisperTranscriber`; default:
    the helper's `word_model`, loaded on first use). After each `read_slots` call, `stats` counts its LLM
    forwards and tokens, template passes and slot readings (for benchmarks)."""

    def __init__(self, model: Any, processor: Any, *, name: str = "", options: DecodeOptions = DecodeOptions(),
                 backend: DecoderBackend | None = None, evidence: EvidenceConfig | None = None,
                 projector: EvidenceProjector | None = None, gopt: GOPTEnsemble | None = None,
                 word_scorer: Any | None = None):
        self.model = model.eval()
        self._word_scorer = word_scorer
        self._word_scorer_failed = False
        self._word_scorer_lock = threading.Lock()  # requests in threads load it once
        self.evidence = evidence
        self.gopt = gopt
        self.projector = projector.eval() if projector is not None else None
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.pieces = PieceTokenizer(self.tokenizer)
        self.name = name
        self.options = options
        self.planner = Planner(processor, model.config.audio_token_id, self.pieces)
        self.reference_decoder = ReferenceDecoder(model, processor, self.pieces, self.planner.trie)
        self._backend = backend
        self.stats: dict[str, int] = {}
        self._guess_prior = list(INITIAL_PRIOR)  # running guess-hit counts over clips (speculative.Guesser)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def decoder(self) -> DecoderBackend:
        """The fast path's decoder backend (LeanDecoder where it applies, else HFDecoder)."""
        if self._backend is None:
            self._backend = build_backend(self.model)
        return self._backend

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike,
        adapter: str | os.PathLike | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        options: DecodeOptions = DecodeOptions(),
    ) -> AudioLMMScorer:
        """Load by Hub id or local dir; `adapter`: a PEFT adapter dir or Hub id (merged for
        speed), None for the bare model. A local adapter dir that is missing or unreadable is an
        error (`check_adapter`)."""
        from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

        dev = config.pick_device(device)
        dt = config.pick_dtype(dev, dtype)
        if adapter is not None:
            adapter = check_adapter(adapter)
        own_tokenizer = adapter is not None and (Path(adapter) / "tokenizer_config.json").exists()
        processor = AutoProcessor.from_pretrained(str(adapter) if own_tokenizer else str(model))
        net = Qwen2AudioForConditionalGeneration.from_pretrained(str(model), dtype=dt).to(dev)
        name = Path(str(model)).name
        evidence = projector = gopt = None
        if adapter is not None:
            net = load_adapter(net, adapter).merge_and_unload()
            name += f"+{Path(str(adapter)).name}"
            evidence = load_evidence_config(adapter)
            if evidence is not None and evidence.uses_embedding:
                projector = EvidenceProjector.load(adapter, evidence, net.config.text_config.hidden_size).to(dev)
            if evidence is not None:
                gopt = load_gopt(adapter, evidence)
                if gopt is not None:
                    check_tower(gopt, net, adapter)
        return cls(net, processor, name=name, options=options, evidence=evidence, projector=projector, gopt=gopt)

    # -- scoring ---------------------------------------------------------------------------
    def assess(self, audio: np.ndarray, text: str) -> Assessment:
        """audio: (n_samples,) float32 at 16 kHz; text: the sentence (raises TextError)."""
        return self.assess_batch([(audio, text)])[0]

    def assess_batch(self, items: Sequence[tuple[np.ndarray, str]]) -> list[Assessment]:
        """`assess` of (audio, text) pairs, in batches."""
        from apa.text import to_words

        refs = [tuple((w.text, w.phones) for w in to_words(text)) for _, text in items]
        return self.score([a for a, _ in items], refs)

    def score(self, audios: Sequence[np.ndarray], references: Sequence[Reference]) -> list[Assessment]:
        """Score clips against explicit references ((word, phones), ...), in batches. Each clip is
        aligned once; the model takes that alignment's features (when it takes evidence) and the
        result its times and heard phones (options.feedback)."""
        from apa.annotate import annotate

        alignments = self.alignments(audios, references)
        evidence = [None if a is None or self.evidence is None else a.features() for a in alignments]
        spans = [None if a is None else a.phone_times() for a in alignments]
        evidence = self.evidence_inputs(evidence, references, audios, spans)
        readings = self.read_many(audios, references, evidence=evidence)
        out = [self.blended(to_assessment(ref, r, self.options.mode, self.name), e)
               for ref, r, e in zip(references, readings, evidence)]
        if not self.options.feedback:
            return out
        return [annotate(a, al) for a, al in zip(out, alignments)]

    def alignments(self, audios: Sequence[np.ndarray], references: Sequence[Reference]) -> list[Any]:
        """Per clip, its `apa.align.Alignment`, or None for a model that takes no evidence when
        options.feedback is off (nothing needs it)."""
        if self.evidence is None and not self.options.feedback:
            return [None] * len(audios)
        from apa.align import align

        return [align(a, r) for a, r in zip(audios, references)]

    # -- slot readings ---------------------------------------------------------------------
    def plan(self, reference: Reference, prompt_ids: Sequence[int] | None = None) -> Plan:
        """The audio-independent part of decoding `reference` (cached); prompt_ids: its tokenised
        chat prompt (None: the default prompt)."""
        return self.planner.plan(reference, prompt_ids)

    def phone_evidence(self, audios: Sequence[np.ndarray], references: Sequence[Reference]) -> list[np.ndarray | None]:
        """Per clip, the (n_phones, F) alignment features the model takes (`apa.align`; None
        each for a model that takes none). A failed alignment gives NaN rows, which the model
        was trained to read as unknown."""
        return self.aligned_evidence(audios, references)[0]

    def aligned_evidence(self, audios: Sequence[np.ndarray], references: Sequence[Reference],
                         ) -> tuple[list[np.ndarray | None], list[Spans | None]]:
        """`phone_evidence` and, per clip, its phones' (start, end) seconds from the same alignment."""
        if self.evidence is None:
            return [None] * len(audios), [None] * len(audios)
        from apa.align import align

        alignments = [align(a, r) for a, r in zip(audios, references)]
        return [a.features() for a in alignments], [a.phone_times() for a in alignments]

    def evidence_inputs(self, evidence: Sequence[np.ndarray | None], references: Sequence[Reference],
                        audios: Sequence[np.ndarray] | None = None, spans: Sequence[Spans | None] | None = None,
                        words: Sequence[np.ndarray | None] | None = None) -> list[np.ndarray | None]:
        """The model's evidence columns from the alignment's: with a GOPT helper, each clip's
        (n_phones, F_align) features get its predictions appended (`apa.gopt`); arrays that
        already have the model's full width, and None, pass through unchanged.

        A helper that reads the audio tower (`GOPTConfig.tower_layers`) also needs the clips'
        audio and, per clip, its phones' (start, end) seconds from the same alignment (`spans`;
        None for a clip: not aligned, so its prediction is NaN).

        A helper with word columns (`GOPTConfig.word_columns`) reads each clip's Whisper word
        evidence: `words` where given (e.g. from training.word_evidence's file), else
        `word_evidence` of the audio."""
        if self.gopt is None or self.evidence is None:
            return list(evidence)
        from apa.gopt import append_predictions

        todo = [i for i, e in enumerate(evidence) if e is not None and e.shape[1] != self.evidence.n_features]
        tower: dict[int, np.ndarray] = {}
        if self.gopt.config.tower_layers and todo:
            if audios is None or spans is None:
                raise ValueError("this model's GOPT helper reads the audio tower: give the audio and the phones' times")
            timed = [i for i in todo if spans[i] is not None]
            tower = dict(zip(timed, self.tower_inputs([audios[i] for i in timed], [spans[i] for i in timed])))
            width = len(self.gopt.config.tower_layers) * self.gopt.config.tower_width
            for i in todo:
                tower.setdefault(i, np.full((len(evidence[i]), width), np.nan, np.float32))
        word_rows: dict[int, np.ndarray | None] = {}
        if self.gopt.config.word_columns and todo:
            if words is None:
                if audios is None:
                    raise ValueError("this model's GOPT helper reads Whisper's word evidence: give the audio")
                words = [None] * len(evidence)
                found = self.word_evidence([audios[i] for i in todo], [references[i] for i in todo])
                for i, w in zip(todo, found):
                    words[i] = w
            word_rows = {i: words[i] for i in todo}
        out = list(evidence)
        for i in todo:
            out[i] = append_predictions(self.gopt, evidence[i], references[i], tower.get(i), word_rows.get(i))
        return out

    def word_evidence(self, audios: Sequence[np.ndarray], references: Sequence[Reference]) -> list[np.ndarray | None]:
        """Per clip, its (n_words, len(apa.transcribe.WORD_EVIDENCE_NAMES)) Whisper word evidence,
        or None where there is no word scorer or it failed (the helper then reads average words;
        logged, never raised: the scores stay defined)."""
        scorer = self.word_scorer
        out: list[np.ndarray | None] = []
        for audio, ref in zip(audios, references):
            try:
                out.append(None if scorer is None else scorer.word_evidence(audio, [w for w, _ in ref]))
            except Exception as exc:  # noqa: BLE001 - a recogniser failure costs the columns, not the scores
                log.warning("word evidence failed (%s: %s); scoring without it", type(exc).__name__, exc)
                out.append(None)
        return out

    @property
    def word_scorer(self) -> Any | None:
        """The word scorer (see the class doc), loaded on first use; None where the helper has no
        word columns or its model cannot be loaded (logged once)."""
        if self.gopt is None or not self.gopt.config.word_columns:
            return self._word_scorer
        with self._word_scorer_lock:
            if self._word_scorer is None and not self._word_scorer_failed:
                from apa.transcribe import load_word_scorer

                try:
                    self._word_scorer = load_word_scorer(self.gopt.config.word_model)
                except Exception as exc:  # noqa: BLE001 - e.g. no weight packages and no Hub access
                    log.warning("no word scorer (%s: %s); the helper reads average words", type(exc).__name__, exc)
                    self._word_scorer_failed = True
        return self._word_scorer

    def tower_inputs(self, audios: Sequence[np.ndarray], spans: Sequence[Spans]) -> list[np.ndarray]:
        """`tower_inputs` (the module function) for this model's GOPT helper's layers."""
        layers = self.gopt.config.tower_layers if self.gopt is not None else ()
        if not layers:
            raise ValueError("this model has no GOPT helper that reads the audio tower")
        return tower_inputs(self.model, self.processor.feature_extractor, audios, spans, layers, self.options.batch_size)

    def blended(self, assessment: Assessment, evidence: np.ndarray | None) -> Assessment:
        """`apa.gopt.blend` of the assessment with the GOPT helper's columns of its clip's evidence
        (as `evidence_inputs` gives it) at `blend_weights`; unchanged without a helper."""
        if self.gopt is None or evidence is None:
            return assessment
        from apa.gopt import OUTPUT_NAMES, blend

        return blend(assessment, np.asarray(evidence)[:, -len(OUTPUT_NAMES):], self.blend_weights)

    @property
    def blend_weights(self) -> float | BlendWeights:
        """The helper's weight in the reported scores: options.gopt_blend where set, else the
        weights fitted with the adapter, else apa.gopt.DEFAULT_BLEND (0 without a helper)."""
        from apa.gopt import DEFAULT_BLEND

        if self.gopt is None:
            return 0.0
        if self.options.gopt_blend is not None:
            return self.options.gopt_blend
        return self.gopt.blend_weights or DEFAULT_BLEND

    def plans_for(self, references: Sequence[Reference], evidence: Sequence[np.ndarray | None] | None = None) -> list[Plan]:
        """Plans of a batch of clips: one per reference, or per clip for a model whose prompt
        carries phone evidence."""
        if self.evidence is None:
            return self.planner.plans(references)
        return self.planner.evidence_plans(references, evidence or [None] * len(references), self.evidence)

    def read_many(
        self, audios: Sequence[np.ndarray], references: Sequence[Reference], progress: Any = None,
        evidence: Sequence[np.ndarray | None] | None = None, spans: Sequence[Spans | None] | None = None,
    ) -> list[list[SlotReading]]:
        """`read_slots` over any number of clips, in batches of options.batch_size made of clips
        of similar prompt length (audio tokens + text: less padding); results in input order.
        progress(done, total) is called after each batch. evidence: per clip, (n_phones, F)
        alignment features for a model that takes them (None: aligned here); spans: their phones'
        times, for a GOPT helper that reads the audio tower (`evidence_inputs`)."""
        n = len(audios)
        evidence, spans = self.aligned_evidence(audios, references) if evidence is None else (evidence, spans)
        evidence = self.evidence_inputs(evidence, references, audios, spans)
        plans = self.plans_for(references, evidence)  # each computed once (most sentences differ)
        fe = self.processor.feature_extractor
        length = [len(p.prompt_ids) + audio_token_count(feature_frames(fe, len(a))) for a, p in zip(audios, plans)]
        order = sorted(range(n), key=length.__getitem__)
        out: list[list[SlotReading]] = [[] for _ in range(n)]
        bs = self.options.batch_size
        for i in range(0, n, bs):
            idx = order[i : i + bs]
            batch = self.read_slots([audios[j] for j in idx], [references[j] for j in idx],
                                    plans=[plans[j] for j in idx], evidence=[evidence[j] for j in idx])
            for j, r in zip(idx, batch):
                out[j] = r
            if progress is not None:
                progress(min(i + bs, n), n)
        return out

    @torch.inference_mode()
    def read_slots(
        self, audios: Sequence[np.ndarray], references: Sequence[Reference], plans: Sequence[Plan] | None = None,
        evidence: Sequence[np.ndarray | None] | None = None,
    ) -> list[list[SlotReading]]:
        """Constrained decode of one batch; per clip, the distribution at every slot, in template order.

        audios: (n_samples,) float32 at 16 kHz each; plans: `plans_for` the clips when the caller
        has them; evidence: as in `read_many`. options.fast: the fast decoder (clips together or one
        by one, see DecodeOptions); else the reference decoder (which takes no evidence)."""
        self.stats = dict.fromkeys(STAT_KEYS, 0)
        self.stats["clips"] = len(audios)
        if not self.options.fast:
            if self.evidence is not None:
                raise ValueError("the reference decoder takes no phone evidence: use the fast decoder for this model")
            return self.reference_decoder.read(audios, references, self.stats)
        together = self.options.batch_clips
        if together is None:
            together = self.device.type != "cpu"
        spans = None
        if evidence is None:
            evidence, spans = self.aligned_evidence(audios, references)
        evidence = self.evidence_inputs(evidence, references, audios, spans)
        plans = plans or self.plans_for(references, evidence)
        if together and len(audios) > 1 and self.decoder.batched:
            return self._read_together(audios, plans, evidence)
        return [self._read_one(np.asarray(a, dtype=np.float32), p, e) for a, p, e in zip(audios, plans, evidence)]

    def _evidence_vectors(self, plan: Plan, evidence: np.ndarray | None) -> torch.Tensor | None:
        """(n_phones, hidden) projected evidence of one clip (NaN features = unknown), or None."""
        if self.projector is None or not plan.phone_pos:
            return None
        if evidence is None:
            evidence = np.full((len(plan.phone_pos), self.evidence.n_features), np.nan, np.float32)
        return self.projector(torch.as_tensor(evidence, dtype=torch.float32, device=self.device))

    def _read_one(self, audio: np.ndarray, plan: Plan, evidence: np.ndarray | None = None) -> list[SlotReading]:
        """One clip: features and encoder on the real length, then speculative decoding."""
        dec = self.decoder
        feats, n_frames = log_mel_features(self.processor.feature_extractor, audio)
        audio_emb = encode_audio_fast(self.model, feats.to(self.device), n_frames)
        prompt = prompt_embeds(dec, plan, audio_emb, self._evidence_vectors(plan, evidence))
        readings, self._guess_prior = decode_clip(dec, plan, prompt, self._guess_prior, self.stats,
                                                  self.history_for(plan, evidence))
        return readings

    def _read_together(self, audios: Sequence[np.ndarray], plans: Sequence[Plan],
                       evidence: Sequence[np.ndarray | None]) -> list[list[SlotReading]]:
        """Features and encoder for the batch at once (padding masked), then the clips decoded
        together; readings equal `_read_one`'s clip by clip (to float rounding)."""
        dec = self.decoder
        feats, n_frames = log_mel_features_batch(self.processor.feature_extractor, audios, device=self.device)
        embs = encode_audio_batch(self.model, feats, n_frames)
        prompts = [prompt_embeds(dec, plan, e, self._evidence_vectors(plan, ev)) for plan, e, ev in zip(plans, embs, evidence)]
        fed = [self.history_for(plan, ev) for plan, ev in zip(plans, evidence)]
        readings, self._guess_prior = decode_clips(dec, plans, prompts, self._guess_prior, self.stats,
                                                   None if all(f is None for f in fed) else fed)
        return readings

    def history_for(self, plan: Plan, evidence: np.ndarray | None) -> list[int | None] | None:
        """The fixed history options.history asks for (`fixed_history`), None for greedy."""
        if self.options.history == "greedy":
            return None
        from apa.gopt import OUTPUT_NAMES

        helper = None
        if self.options.history == "helper" and self.gopt is not None and evidence is not None:
            helper = np.asarray(evidence, np.float64)[:, -len(OUTPUT_NAMES):]
        return fixed_history(plan, helper)


def fixed_history(plan: Plan, helper: np.ndarray | None = None) -> list[int | None]:
    """Per slot of `plan`, the index of the value fed back after it when later slots are read:
    None for the sentence scores (they come first and are decoded greedily: they move together);
    for word and phone slots the GOPT helper's prediction rounded to the nearest of the slot's
    values where helper (n_phones, len(apa.gopt.OUTPUT_NAMES), label scales: phone 0-2, word 0-10)
    has one, else the slot's top value (always for stress, which the helper does not predict)."""
    from apa.gopt import WORD_TARGETS

    phone_rows: dict[int, list[int]] = {}  # word -> its rows (phones in template order)
    n = 0
    for slot in plan.slots:
        if slot.kind == "phone":
            phone_rows.setdefault(slot.word, []).append(n)
            n += 1
    if helper is not None and len(helper) != n:
        raise ValueError(f"{len(helper)} helper rows for {n} phone slots")
    out: list[int | None] = []
    k = 0
    for slot in plan.slots:
        if slot.kind.startswith("sentence."):
            out.append(None)
            continue
        values = np.array([float(v) for v in slot.values])
        x = np.nan
        aspect = slot.kind.split(".")[-1]
        if helper is not None and slot.kind == "phone":
            x = helper[k, 0] * PHONE_SCALE
        elif helper is not None and aspect in WORD_TARGETS:
            x = _finite_mean(helper[phone_rows.get(slot.word, []), 1 + WORD_TARGETS.index(aspect)])
        k += slot.kind == "phone"
        out.append(int(np.argmin(np.abs(values - x))) if np.isfinite(x) else int(np.argmax(values)))
    return out


def _finite_mean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


@torch.inference_mode()
def tower_inputs(model: Any, feature_extractor: Any, audios: Sequence[np.ndarray], spans: Sequence[Spans],
                 layers: Sequence[int], batch_size: int = 8) -> list[np.ndarray]:
    """Per clip, (n_phones, len(layers) * d_model) float32: the audio tower's `layers`
    (`apa.decoding.features.encoder_states`, on the clip's real length) averaged over each phone's
    (start, end) seconds (`apa.gopt.pool_phone_states`): what a GOPT helper with
    `GOPTConfig.tower_layers` reads. audios: (n_samples,) float32 at 16 kHz; the encoder takes
    batch_size clips at a time, on the model's device."""
    from apa.gopt import pool_phone_states

    device = next(model.parameters()).device
    out: list[np.ndarray] = []
    for i in range(0, len(audios), max(batch_size, 1)):
        feats, ns = log_mel_features_batch(feature_extractor, audios[i : i + batch_size], device=device)
        states = encoder_states(model, feats, ns, tuple(layers))
        out += [pool_phone_states(st.float().cpu().numpy(), start, end, ENCODER_FRAME_S)
                for st, (start, end) in zip(states, spans[i : i + batch_size])]
    return out


def to_assessment(reference: Reference, readings: Sequence[SlotReading], mode: str, model: str = "") -> Assessment:
    """Slot readings (in template order) -> Assessment with the chosen reading ("expected" or
    "greedy"); phone scores go back from the 0-10 of the text to the 0-2 of the labels."""
    it = iter(readings)

    def take() -> float:
        r = next(it)
        return r.expected if mode == "expected" else r.greedy

    sentence = Sentence(**{a: take() for a in SENTENCE_ASPECTS})
    word_vals = [{"accuracy": take(), "stress": take(), "total": take()} for _ in reference]
    words = tuple(
        Word(text=w, phones=tuple(Phone(p, take() / PHONE_SCALE) for p in phones), **word_vals[i])
        for i, (w, phones) in enumerate(reference)
    )
    return Assessment(text=" ".join(w for w, _ in reference), sentence=sentence, words=words, model=model,
                      extra={"mode": mode})


# ---- adapters and the default model ---------------------------------------------------------
def _looks_local(adapter: str) -> bool:
    """A path rather than a Hub id ("owner/name"): absolute, ~ or ./ prefixed, or nested deeper."""
    return os.path.isabs(adapter) or adapter.startswith(("~", ".")) or adapter.count("/") != 1 or "\\" in adapter


def check_adapter(adapter: str | os.PathLike) -> str:
    """The adapter as a string, after checking a local one: an existing directory holding a
    readable adapter_config.json. Raises FileNotFoundError / PermissionError naming the path; a
    string that is no local path and looks like a Hub id ("owner/name") is passed on as is
    (unless the Hub is off: HF_HUB_OFFLINE)."""
    path = Path(adapter).expanduser()
    if not path.exists():
        from huggingface_hub.constants import HF_HUB_OFFLINE

        if HF_HUB_OFFLINE or isinstance(adapter, os.PathLike) or _looks_local(str(adapter)):
            raise FileNotFoundError(f"adapter directory not found: {path}")
        return str(adapter)
    if not path.is_dir():
        raise FileNotFoundError(f"adapter is not a directory: {path}")
    card = path / "adapter_config.json"
    if not card.is_file():
        raise FileNotFoundError(f"no adapter_config.json in the adapter directory {path}")
    if not os.access(card, os.R_OK) or not os.access(path, os.R_OK | os.X_OK):
        raise PermissionError(f"adapter directory not readable: {path}")
    return str(path)


def load_evidence_config(adapter: str | os.PathLike) -> EvidenceConfig | None:
    """The adapter's phone-evidence config (None: it takes none). Its feature names must be the
    ones `apa.align` computes: a model trained on other features would be fed the wrong inputs."""
    evidence = EvidenceConfig.load(adapter) if Path(adapter).is_dir() else None
    if evidence is not None:
        from apa.align import FEATURE_NAMES
        from apa.gopt import OUTPUT_NAMES

        if tuple(evidence.feature_names) not in (tuple(FEATURE_NAMES), tuple(FEATURE_NAMES) + OUTPUT_NAMES):
            raise ValueError(f"the adapter {adapter} was trained on other phone features than apa.align computes "
                             f"({len(evidence.feature_names)} vs {len(FEATURE_NAMES)} features, or renamed)")
    return evidence


def load_gopt(adapter: str | os.PathLike, evidence: EvidenceConfig) -> GOPTEnsemble | None:
    """The GOPT helper saved with an adapter whose evidence has its columns (else None); it must
    read the alignment's features and the adapter's evidence must end with its outputs."""
    from apa.align import FEATURE_NAMES
    from apa.gopt import OUTPUT_NAMES

    if tuple(evidence.feature_names[-len(OUTPUT_NAMES):]) != OUTPUT_NAMES:
        return None
    gopt = GOPTEnsemble.load(adapter)
    if gopt is None:
        raise FileNotFoundError(f"the adapter {adapter} takes GOPT predictions but has no {GOPT_CONFIG} / {GOPT_WEIGHTS}")
    if tuple(gopt.config.feature_names) != tuple(FEATURE_NAMES):
        raise ValueError(f"the GOPT helper in {adapter} was fitted on other phone features than apa.align computes")
    return gopt


def check_tower(gopt: GOPTEnsemble, model: Any, adapter: str | os.PathLike) -> None:
    """A helper that reads the audio tower must have been fitted on one of this model's shape
    (a tower of another width or depth, e.g. Qwen2-Audio-7B's, needs its own helper)."""
    cfg = gopt.config
    if not cfg.tower_layers:
        return
    tower = model.model.audio_tower
    width, depth = tower.layer_norm.normalized_shape[0], len(tower.layers)
    if cfg.tower_width != width or max(cfg.tower_layers) > depth:
        raise ValueError(f"the GOPT helper in {adapter} reads layers {cfg.tower_layers} of a {cfg.tower_width}-wide audio "
                         f"tower; this model's has {depth} layers of width {width}")


def load_adapter(model: Any, adapter: str | os.PathLike) -> Any:
    """Attach a PEFT adapter; also loads extra trained weights saved beside it (projector)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter))


def load_scorer(
    model: str | None = None,
    adapter: str | None = None,
    *,
    device: str | None = None,
    options: DecodeOptions = DecodeOptions(),
) -> AudioLMMScorer:
    """The scorer `config.resolve_model` picks: arguments, then $APA_MODEL / $APA_ADAPTER, then
    apa-mini (assembled offline on first use) with the adapter shipped in assets/. `model`: Hub id,
    local dir or "apa-mini"; `adapter`: PEFT dir or Hub id, or "none" for the bare base model. A
    missing or unreadable adapter directory is an error (no fallback to the base model)."""
    from apa.mini import assemble_apa_mini, check_adapter_base

    choice = config.resolve_model(model, adapter)
    path = str(assemble_apa_mini()) if choice.is_default_model else choice.model
    check_adapter_base(path, choice.adapter)  # another base than the adapter's: a warning (an error when strict)
    return AudioLMMScorer.from_pretrained(path, choice.adapter, device=device, options=options)
