"""Phone-level evidence from a pocketsphinx forced alignment: times, GOP features, "heard" phones.

One public entry point, `align(audio, reference) -> Alignment`; plus `load_corpus_features`
for the file that `training/align_corpus.py` writes.

What it does, per utterance (all on one fresh decoder, see "State" below):

1. A pocketsphinx decoder (its bundled en-us PTM acoustic model, no dictionary, no LM) gets each
   reference word as `w<i>` with its canonical phones (stress digits dropped), so the word text
   itself never matters (apostrophes, hyphens, homographs with other pronunciations).
2. `set_align_text` + decode (word alignment, optional `<sil>`/noise fillers between words), then
   `set_alignment` + decode again (phone and HMM-state alignment). Both passes see the whole clip
   (`full_utt=True`: batch cepstral mean over the clip, as the model's feat.params asks), each
   starting from reset noise-removal statistics (`start_stream()`; 5.1 calls it deprecated but it
   still resets them), so both passes see the same features.
   `compallsen=True` makes every frame's scores of all 5,126 senones relative to that frame's best
   senone; `senlogdir` (a TemporaryDirectory, removed) dumps them; `bestpath=False` (with the
   default the state alignment failed on a 1-frame `<s>`).
3. From the dump: per frame t and phone q of PHONES, ll[t, q] = -(best senone score of q's
   senones, any context) in nats; log posterior lp[t, q] = ll[t, q] - logsumexp_q' ll[t, q'] over
   the 40 phones (fillers +NSN+/+SPN+ left out). Per aligned phone c over its frames:
       lpp            = mean_t lp[t, c]
       lpr[q]         = mean_t (lp[t, q] - lp[t, c])     (lpr[c] = 0; > 0: q more likely than c)
       post_mean      = mean_t exp(lp[t, c])
       top1_frac      = fraction of frames where c has the highest posterior
       score_per_frame= pocketsphinx's alignment acoustic score of the phone / frames, in nats
                        (senone scores relative to the frame's best plus HMM transitions; <= 0)
       heard          = top-3 phones by mean_t exp(lp[t, q]), with those mean posteriors
       post           = that mean posterior for all 40 PHONES (not a feature)
       choice_ll[q]   = forced choice (not a feature; apa.annotate turns it into "heard instead"):
                        the window from the previous phone's start to the next phone's end
                        (within the word sequence) re-aligned as prev + q + next, each a 3-state
                        left-to-right HMM, free boundaries, no transition costs; the best path's
                        log-likelihood in nats (SIL: -inf). q's state scores are the senones of
                        its triphone between the aligned neighbours (SIL at the clip's edges) at
                        its word position, else of that triphone at another word position, else
                        of q's context-independent phone; prev's and next's are the best senone
                        of that phone and state position in any context. choice_frames: the
                        window's frames.

Failures never raise. A clip that does not align with the default beams is retried on a fresh
decoder with wide beams (`WIDE_BEAMS`); if that fails too, or the input is unusable (not 1-D,
empty, under MIN_AUDIO_S, silent, empty reference, a word without phones, a phone outside the 39
CMU phones), the result is the fallback: `ok=False`, `reason` says why, and

* words and phones are all present, in reference order; the clip [0, duration] is cut into
  n_phones equal parts (phone j gets [j, j+1) * duration / n_phones; a word spans its phones);
  the duration is 0 (all times 0) when the audio is empty or not 1-D;
* lpp, lpr (all 40), score_per_frame, post_mean, top1_frac are NaN, heard is ();
* `features()` rows are NaN in every column except `log_frames` (from the even spread).
With an empty reference there are no words and no phones (features() is (0, N_FEATURES)).

State: the decoder keeps state across utterances (noise-removal statistics; `cmn live` once it
sees a partial utterance), and reusing one moves boundaries. A fresh decoder is cheap (no
dictionary or LM is loaded), so every call creates its own: results do not depend on what
was aligned before, and calls from several threads are independent (the Cython wrapper holds the
GIL, so threads do not run pocketsphinx in parallel; use processes for throughput).

How well the features track the experts' scores, how close the word edges are and what an
alignment costs: bench/gop_check.py, results in bench/results/gop_check.md and
bench/results/measurements.md.
Tested with pocketsphinx 5.1.1 (Python 3.11) and written against the 5.0.4 API (Python 3.12):
only Config/Decoder, add_word, set_align_text, set_alignment, get_alignment, hyp, n_frames,
start_stream.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "FEATURE_NAMES",
    "FRAME_S",
    "N_FEATURES",
    "PHONES",
    "AlignedPhone",
    "AlignedWord",
    "Alignment",
    "CorpusFeatures",
    "align",
    "load_corpus_features",
    "load_corpus_meta",
    "pocketsphinx_version",
]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FRAME_S = 0.01  # pocketsphinx frame rate 100/s
MIN_AUDIO_S = 0.1
SILENCE_PEAK = 10 ** (-60.0 / 20)  # peak under -60 dBFS: silent (as apa.audio.SILENCE_PEAK_DBFS)

CMU_PHONES = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH",
    "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V",
    "W", "Y", "Z", "ZH",
)  # fmt: skip
PHONES: tuple[str, ...] = CMU_PHONES + ("SIL",)  # the order of lpr and of the lpr_* features
N_PHONES = len(PHONES)
PHONE_INDEX = {p: i for i, p in enumerate(PHONES)}

# One unit of pocketsphinx's senone scores: logmath base 1.0001, shifted right by 10 bits.
SCORE_UNIT_NATS = 1024 * math.log(1.0001)
WIDE_BEAMS = {"beam": 1e-100, "wbeam": 1e-80, "pbeam": 1e-100}
FILLER_WORDS = frozenset({"<s>", "</s>", "<sil>", "[NOISE]", "[SPEECH]"})

FEATURE_NAMES: tuple[str, ...] = (
    ("lpp",)
    + tuple(f"lpr_{p}" for p in PHONES)
    + ("log_frames", "score_per_frame", "log_post_mean", "top1_frac")
)
N_FEATURES = len(FEATURE_NAMES)

# start_stream() resets the noise-removal statistics; 5.1 calls it deprecated (it is not a no-op).
warnings.filterwarnings("ignore", message=r"start_stream\(\) is deprecated", category=DeprecationWarning)


# ---- results ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class AlignedWord:
    text: str
    start: float  # seconds
    end: float


@dataclass(frozen=True, eq=False)
class AlignedPhone:
    symbol: str  # as given in the reference (with stress digit)
    word: int  # index into Alignment.words
    start: float  # seconds
    end: float
    lpp: float  # frame-averaged log posterior of the canonical phone (nats; NaN in the fallback)
    lpr: np.ndarray  # (40,) frame-averaged log p(q) - log p(canonical), in PHONES order
    score_per_frame: float  # alignment acoustic score / frames, nats
    heard: tuple[tuple[str, float], ...]  # top-3 (phone, mean posterior) over the phone's frames
    frames: int = 0
    post_mean: float = math.nan
    top1_frac: float = math.nan
    post: np.ndarray | None = None  # (40,) mean_t exp(lp[t, q]) in PHONES order (None in the fallback)
    choice_ll: np.ndarray | None = None  # (40,) forced-choice window log-likelihoods, nats (module doc)
    choice_frames: int = 0  # frames of that window

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AlignedPhone):
            return NotImplemented
        return (
            (self.symbol, self.word, self.start, self.end, self.frames, self.heard)
            == (other.symbol, other.word, other.start, other.end, other.frames, other.heard)
            and np.array_equal(self.lpr, other.lpr, equal_nan=True)
            and _same(self.lpp, other.lpp)
            and _same(self.score_per_frame, other.score_per_frame)
            and _same(self.post_mean, other.post_mean)
            and _same(self.top1_frac, other.top1_frac)
            and (self.post is None) == (other.post is None)
            and (self.post is None or np.array_equal(self.post, other.post, equal_nan=True))
            and self.choice_frames == other.choice_frames
            and (self.choice_ll is None) == (other.choice_ll is None)
            and (self.choice_ll is None or np.array_equal(self.choice_ll, other.choice_ll, equal_nan=True))
        )

    __hash__ = None  # type: ignore[assignment]

    def feature_vector(self) -> np.ndarray:
        """(N_FEATURES,) float32 in FEATURE_NAMES order."""
        v = np.empty(N_FEATURES, np.float32)
        v[0] = self.lpp
        v[1 : 1 + N_PHONES] = self.lpr
        log_post = math.log(max(self.post_mean, 1e-30)) if not math.isnan(self.post_mean) else math.nan
        v[1 + N_PHONES :] = (math.log(max(self.frames, 1)), self.score_per_frame, log_post, self.top1_frac)
        return v


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@dataclass(frozen=True)
class Alignment:
    ok: bool
    reason: str  # "" when ok
    words: tuple[AlignedWord, ...]
    phones: tuple[AlignedPhone, ...]  # flat, reference order
    frame_s: float = FRAME_S

    def features(self) -> np.ndarray:
        """(n_phones, N_FEATURES) float32, columns FEATURE_NAMES:

        lpp, lpr_<q> for the 40 PHONES, log_frames (ln of the phone's frames), score_per_frame,
        log_post_mean (ln post_mean), top1_frac (see the module doc). Fallback rows: NaN except
        log_frames. F = N_FEATURES = 45."""
        if not self.phones:
            return np.zeros((0, N_FEATURES), np.float32)
        return np.stack([p.feature_vector() for p in self.phones])

    def phone_times(self) -> tuple[np.ndarray, np.ndarray]:
        """The phones' (start (n,), end (n,)) in seconds, float64, reference order."""
        return (np.array([p.start for p in self.phones], np.float64), np.array([p.end for p in self.phones], np.float64))


# ---- pocketsphinx ----------------------------------------------------------------------------
def pocketsphinx_version() -> str:
    try:
        from importlib.metadata import version

        return version("pocketsphinx")
    except Exception:  # pragma: no cover
        return "unknown"


@functools.lru_cache(maxsize=1)
def _model() -> tuple[str, np.ndarray, np.ndarray, int]:
    """(model dir, senones sorted by phone (fillers out), reduceat offsets per PHONES, n_sen)."""
    import pocketsphinx

    hmm = pocketsphinx.get_model_path("en-us/en-us")
    from apa.weights.sphinx_mdef import read_mdef

    ciphones, sen2ci = read_mdef(Path(hmm) / "mdef")
    phone_of_ci = np.array([PHONE_INDEX.get(p, -1) for p in ciphones])
    sen_phone = np.where(sen2ci >= 0, phone_of_ci[np.maximum(sen2ci, 0)], -1)
    missing = set(range(N_PHONES)) - set(sen_phone.tolist())
    if missing:
        raise RuntimeError(f"acoustic model lacks phones {[PHONES[i] for i in missing]}")
    order = np.argsort(sen_phone, kind="stable")
    order = order[sen_phone[order] >= 0]  # fillers out
    offsets = np.searchsorted(sen_phone[order], np.arange(N_PHONES))
    return hmm, order, offsets, len(sen2ci)


@functools.lru_cache(maxsize=1)
def _state_sets() -> tuple[np.ndarray, np.ndarray]:
    """(senone ids, reduceat offsets) grouping every senone by (phone of PHONES, state 0-2), in
    that order (row-major): the senones of that state position of any of the phone's triphones."""
    from apa.weights.sphinx_mdef import read_mdef_states

    hmm = _model()[0]
    names, base, states = read_mdef_states(Path(hmm) / "mdef")
    q_of = np.array([PHONE_INDEX.get(names[b], -1) for b in base])
    groups = [
        np.unique(states[q_of == q, k]) if states.shape[1] > k else np.zeros(0, np.int64)
        for q in range(N_PHONES) for k in range(3)
    ]  # fmt: skip
    if any(len(g) == 0 for g in groups):
        raise RuntimeError("acoustic model: a phone without 3 emitting states")
    offsets = np.cumsum([0] + [len(g) for g in groups[:-1]])
    return np.concatenate(groups), offsets


@functools.lru_cache(maxsize=1)
def _triphone_senones() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """((40, 40, 40, 4) phone ids of the triphones base x left x right x word position, in PHONES
    order, -1 where the model has none; (n_phone, 3) senones of every phone of the model; (40,)
    phone id of each of PHONES as a context-independent phone)."""
    from apa.weights.sphinx_mdef import read_mdef_triphones

    names, table, states = read_mdef_triphones(Path(_model()[0]) / "mdef")
    if states.shape[1] != 3:
        raise RuntimeError("acoustic model: phones without 3 emitting states")
    ci = np.array([names.index(p) for p in PHONES])
    return table[np.ix_(ci, ci, ci, np.arange(4))], states, ci


def _word_position(wids: Sequence[int], j: int) -> int:
    """pocketsphinx's word position of phone j (apa.weights.sphinx_mdef.WORD_*)."""
    from apa.weights.sphinx_mdef import WORD_BEGIN, WORD_END, WORD_INTERNAL, WORD_SINGLE

    first = j == 0 or wids[j - 1] != wids[j]
    last = j + 1 == len(wids) or wids[j + 1] != wids[j]
    return WORD_SINGLE if first and last else WORD_BEGIN if first else WORD_END if last else WORD_INTERNAL


def _candidate_senones(left: int, right: int, wpos: int) -> np.ndarray:
    """(40, 3) senones of every candidate phone between `left` and `right` (PHONES indices):
    its triphone in that context and word position, else in that context at another word
    position (the first the model lists), else its context-independent phone's own senones."""
    table, states, ci_ids = _triphone_senones()
    out = np.empty((N_PHONES, 3), np.int64)
    for q in range(N_PHONES):
        pid = table[q, left, right, wpos]
        if pid < 0:
            found = table[q, left, right][table[q, left, right] >= 0]
            pid = found.min() if found.size else ci_ids[q]
        out[q] = states[pid]
    return out


def _choice_scores(senscr: np.ndarray, segs: list[tuple[int, int, int]], wids: Sequence[int]) -> list[np.ndarray]:
    """Per aligned phone (canonical index, start frame, frames; wids: its word index), the (40,)
    forced-choice window log-likelihoods (module doc, choice_ll)."""
    idx, offsets = _state_sets()
    T = senscr.shape[0]
    any_ctx = (-np.minimum.reduceat(senscr[:, idx], offsets, axis=1).astype(np.float64) * SCORE_UNIT_NATS).reshape(
        T, N_PHONES, 3
    )
    sil = PHONE_INDEX["SIL"]
    out = []
    for j, (_c, start, dur) in enumerate(segs):
        lo = segs[j - 1][1] if j > 0 else start
        hi = (segs[j + 1][1] + segs[j + 1][2]) if j + 1 < len(segs) else start + dur
        lo, hi = min(lo, T - 1), max(min(hi, T), min(lo, T - 1) + 1)
        win = any_ctx[lo:hi]  # (W, 40, 3)
        left = segs[j - 1][0] if j > 0 else sil
        right = segs[j + 1][0] if j + 1 < len(segs) else sil
        sen = _candidate_senones(left, right, _word_position(wids, j))
        cand = -senscr[lo:hi][:, sen].astype(np.float64) * SCORE_UNIT_NATS  # (W, 40, 3)
        parts = []
        if j > 0:
            parts.append(np.broadcast_to(win[:, segs[j - 1][0], None, :], (hi - lo, N_PHONES, 3)))
        parts.append(cand)
        if j + 1 < len(segs):
            parts.append(np.broadcast_to(win[:, segs[j + 1][0], None, :], (hi - lo, N_PHONES, 3)))
        seq = np.concatenate(parts, axis=2)  # (W, 40 candidates, n states)
        d = np.full(seq.shape[1:], -np.inf)
        d[:, 0] = seq[0, :, 0]
        for t in range(1, seq.shape[0]):
            stay_or_move = np.maximum(d, np.concatenate([np.full((N_PHONES, 1), -np.inf), d[:, :-1]], axis=1))
            d = stay_or_move + seq[t]
        best = d[:, -1] if np.isfinite(d[:, -1]).any() else d.max(axis=1)
        best = best.copy()
        best[sil] = -np.inf
        out.append(best)
    return out


def _read_senones(path: Path, n_sen: int) -> np.ndarray:
    """A senlogdir dump with all senones active -> (n_frames, n_sen) int16, 0 = frame's best."""
    buf = path.read_bytes()
    end = buf.index(b"endhdr\n") + len(b"endhdr\n") + 4  # + byte-order magic
    data = np.frombuffer(buf, "<i2", offset=end)
    if data.size % (n_sen + 1):
        raise RuntimeError("senone dump: truncated or not all senones scored")
    data = data.reshape(-1, n_sen + 1)
    if data.size and not np.all(data[:, 0] == n_sen):
        raise RuntimeError("senone dump: not all senones scored (compallsen off?)")
    return data[:, 1:]


class _Fail(Exception):
    pass


def _decode(pcm: bytes, names: list[str], prons: list[str], beams: dict | None, n_phones_per_word: list[int]):
    """Two-pass forced alignment on a fresh decoder -> (word segs, phone segs, (T, n_sen) senone scores)."""
    import pocketsphinx

    hmm, order, offsets, n_sen = _model()
    with tempfile.TemporaryDirectory(prefix="apa-align-") as tmp:
        config = pocketsphinx.Config(
            hmm=hmm, dict=None, lm=None, compallsen=True, bestpath=False, loglevel="FATAL", senlogdir=tmp,
            **(beams or {}),
        )  # fmt: skip
        decoder = pocketsphinx.Decoder(config)
        try:
            for i, (name, pron) in enumerate(zip(names, prons)):
                decoder.add_word(name, pron, i == len(names) - 1)
            decoder.set_align_text(" ".join(names))
            for second in (False, True):
                if second:
                    decoder.set_alignment()
                decoder.start_stream()  # reset noise statistics: both passes see the same features
                decoder.start_utt()
                decoder.process_raw(pcm, full_utt=True)
                decoder.end_utt()
                if not second:
                    hyp = decoder.hyp()
                    if hyp is None or hyp.hypstr.split() != names:
                        raise _Fail("no word alignment")
            alignment = decoder.get_alignment()
            if alignment is None:
                raise _Fail("no phone alignment")
            words, phones = [], []
            # One nested loop: stored entries do not keep their iterator alive, so a stored word's
            # phones must never be iterated later (that crashed the process). Never break early.
            for w in alignment:
                wname, wstart, wdur = w.name, w.start, w.duration
                if wname in FILLER_WORDS:
                    for p in w:
                        for _s in p:
                            pass
                    continue
                words.append((wname, wstart, wdur))
                for p in w:
                    states = [(int(s.name), s.start, s.duration) for s in p]
                    phones.append((len(words) - 1, p.name, p.start, p.duration, p.score, states))
            n_frames = decoder.n_frames()
        finally:
            del decoder
        dumps = sorted(Path(tmp).glob("*.sen"))
        if not dumps:
            raise _Fail("no senone dump")
        senscr = _read_senones(dumps[-1], n_sen)
    if [w[0] for w in words] != names:
        raise _Fail("aligned words differ from the reference")
    per_word = [0] * len(names)
    for p in phones:
        per_word[p[0]] += 1
    if per_word != n_phones_per_word:
        raise _Fail("aligned phones differ from the reference")
    if senscr.shape[0] < n_frames - 1 or senscr.shape[0] == 0:  # the last frame is not dumped
        raise _Fail(f"senone dump has {senscr.shape[0]} frames for {n_frames}")
    return words, phones, senscr


def _log_posteriors(senscr: np.ndarray) -> np.ndarray:
    """(T, n_sen) senone scores -> (T, 40) log posteriors of PHONES (module doc, step 3)."""
    _hmm, order, offsets, _n_sen = _model()
    best = np.minimum.reduceat(senscr[:, order], offsets, axis=1).astype(np.float64)
    ll = -best * SCORE_UNIT_NATS  # ll[t, q] = best senone of phone q, nats
    m = ll.max(axis=1, keepdims=True)
    return ll - (m + np.log(np.exp(ll - m).sum(axis=1, keepdims=True)))


# ---- entry point -----------------------------------------------------------------------------
def align(audio: np.ndarray, reference: Sequence[tuple[str, Sequence[str]]]) -> Alignment:
    """Forced alignment of `audio` ((n,) float32, 16 kHz, [-1, 1]; integer PCM is scaled) to `reference`
    (((word, (CMU phone with stress digit, ...)), ...)). Never raises; see the module doc."""
    try:
        ref = [(str(w), tuple(str(p) for p in phones)) for w, phones in reference]
    except Exception as e:  # malformed reference
        return Alignment(False, f"bad reference: {e}", (), ())
    duration = 0.0
    try:
        x = np.asarray(audio)
        if x.ndim != 1:
            return _fallback(ref, 0.0, f"audio must be 1-D, got shape {x.shape}")
        duration = len(x) / SAMPLE_RATE
        pcm16 = x.astype("<i2") if x.dtype == np.int16 else None
        if np.issubdtype(x.dtype, np.integer):  # integer PCM -> [-1, 1]
            x = x.astype(np.float32) / float(np.iinfo(x.dtype).max + 1)
        reason = _check(x, ref)
        if reason:
            return _fallback(ref, duration if len(x) else 0.0, reason)
        if pcm16 is None:
            x = np.nan_to_num(x.astype(np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
            pcm16 = (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2")
        pcm = pcm16.tobytes()
        names = [f"w{i}" for i in range(len(ref))]
        prons = [" ".join(p.rstrip("012").upper() for p in phones) for _, phones in ref]
        counts = [len(phones) for _, phones in ref]
        reasons = []
        for beams in (None, WIDE_BEAMS):
            try:
                words, phones, senscr = _decode(pcm, names, prons, beams, counts)
                return _build(ref, words, phones, _log_posteriors(senscr), duration, senscr)
            except _Fail as e:
                reasons.append(str(e))
            except Exception as e:  # pocketsphinx RuntimeError etc.
                log.debug("alignment failed", exc_info=True)
                reasons.append(f"{type(e).__name__}: {e}")
        return _fallback(ref, duration, "not aligned (default and wide beams): " + "; ".join(reasons))
    except Exception as e:  # anything unforeseen: still a usable result
        log.warning("align: unexpected error", exc_info=True)
        return _fallback(ref, duration, f"internal error: {type(e).__name__}: {e}")


def _check(x: np.ndarray, ref: list[tuple[str, tuple[str, ...]]]) -> str:
    if not ref:
        return "empty reference"
    for w, phones in ref:
        if not phones:
            return f"word {w!r} has no phones"
        for p in phones:
            if p.rstrip("012").upper() not in CMU_PHONES:
                return f"word {w!r}: phone {p!r} is not one of the 39 CMU phones"
    if len(x) == 0:
        return "empty audio"
    if len(x) < MIN_AUDIO_S * SAMPLE_RATE:
        return f"audio shorter than {MIN_AUDIO_S} s"
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        return f"audio must be float (or integer PCM), got {x.dtype}"
    finite = np.isfinite(x)
    if not finite.all() and finite.mean() < 0.99:
        return "audio has non-finite samples"
    if float(np.max(np.abs(x[finite]), initial=0.0)) < SILENCE_PEAK:
        return "silent audio"
    return ""


def _build(ref, words, phones, lp: np.ndarray, duration: float, senscr: np.ndarray | None = None) -> Alignment:
    n_frames = lp.shape[0]
    post = np.exp(lp)
    flat = [PHONE_INDEX[sym.rstrip("012").upper()] for _, syms in ref for sym in syms]
    segs = [(c, p[2], max(p[3], 1)) for c, p in zip(flat, phones)]
    wids = [wi for wi, (_, syms) in enumerate(ref) for _ in syms]
    choice = _choice_scores(senscr, segs, wids) if senscr is not None else [None] * len(segs)
    aligned_words = tuple(
        AlignedWord(ref[i][0], s * FRAME_S, min((s + d) * FRAME_S, duration)) for i, (_, s, d) in enumerate(words)
    )
    out = []
    flat_symbols = [(wi, sym) for wi, (_, syms) in enumerate(ref) for sym in syms]
    for j, ((wi, sym), (pwi, _name, start, dur, score, _states)) in enumerate(zip(flat_symbols, phones)):
        c = PHONE_INDEX[sym.rstrip("012").upper()]
        s = min(start, n_frames - 1)  # n_frames: frames in the dump (the utterance's last is missing)
        e = max(min(start + dur, n_frames), s + 1)
        seg = lp[s:e]
        seg_post = post[s:e]
        mean_lp = seg.mean(axis=0)
        mean_post = seg_post.mean(axis=0)
        top = np.argsort(-mean_post, kind="stable")[:3]
        out.append(
            AlignedPhone(
                symbol=sym,
                word=wi,
                start=start * FRAME_S,
                end=min((start + dur) * FRAME_S, duration),
                lpp=float(mean_lp[c]),
                lpr=(mean_lp - mean_lp[c]).astype(np.float64),
                score_per_frame=float(score) * SCORE_UNIT_NATS / max(dur, 1),
                heard=tuple((PHONES[q], float(mean_post[q])) for q in top),
                frames=int(dur),
                post_mean=float(mean_post[c]),
                top1_frac=float(np.mean(seg.argmax(axis=1) == c)),
                post=mean_post.astype(np.float64),
                choice_ll=choice[j],
                choice_frames=_window_frames(segs, j, n_frames),
            )
        )
    return Alignment(True, "", aligned_words, tuple(out))


def _window_frames(segs: list[tuple[int, int, int]], j: int, n_frames: int) -> int:
    lo = segs[j - 1][1] if j > 0 else segs[j][1]
    hi = (segs[j + 1][1] + segs[j + 1][2]) if j + 1 < len(segs) else segs[j][1] + segs[j][2]
    return max(min(hi, n_frames) - min(lo, n_frames - 1), 1)


def _fallback(ref, duration: float, reason: str) -> Alignment:
    """ok=False: phones spread evenly over [0, duration], measurements NaN (module doc)."""
    n = sum(len(p) for _, p in ref)
    words, phones, j = [], [], 0
    step = duration / n if n else 0.0
    nan_lpr = np.full(N_PHONES, np.nan)
    for wi, (w, syms) in enumerate(ref):
        first = j
        for sym in syms:
            phones.append(
                AlignedPhone(
                    sym, wi, j * step, (j + 1) * step, math.nan, nan_lpr.copy(), math.nan, (),
                    frames=int(round(step / FRAME_S)),
                )
            )  # fmt: skip
            j += 1
        words.append(AlignedWord(w, first * step, j * step))
    return Alignment(False, reason, tuple(words), tuple(phones))


# ---- corpus features file (training/align_corpus.py) -----------------------------------------
@dataclass(frozen=True)
class CorpusFeatures:
    """One utterance of a corpus-features file."""

    ok: bool
    reason: str
    symbols: tuple[str, ...]  # reference phones (with stress digits)
    word: np.ndarray  # (n_phones,) int: word index of each phone
    start: np.ndarray  # (n_phones,) float32 seconds
    end: np.ndarray
    features: np.ndarray  # (n_phones, F) float32, columns feature_names
    word_start: np.ndarray  # (n_words,) float32 seconds
    word_end: np.ndarray
    heard: np.ndarray  # (n_phones, 3) int8 indices into PHONES (-1 in the fallback)
    heard_p: np.ndarray  # (n_phones, 3) float32
    split: str = ""  # "train" / "test"


def load_corpus_features(path: str | os.PathLike) -> dict[str, CorpusFeatures]:
    """{utt_id: CorpusFeatures} from the .npz that training/align_corpus.py writes.

    Its metadata (feature_names, phones, pocketsphinx_version, split) is in
    `load_corpus_meta(path)`."""
    with np.load(path, allow_pickle=False) as z:
        utts = z["utt_ids"].tolist()
        po, wo = z["phone_offsets"], z["word_offsets"]
        feats, start, end, word = z["features"], z["start"], z["end"], z["word"]
        ws, we, ok, reason = z["word_start"], z["word_end"], z["ok"], z["reason"].tolist()
        symbols, heard, heard_p = z["symbols"].tolist(), z["heard"], z["heard_p"]
        splits = z["utt_split"].tolist() if "utt_split" in z.files else [str(z["split"])] * len(utts)
    out = {}
    for i, u in enumerate(utts):
        a, b, c, d = po[i], po[i + 1], wo[i], wo[i + 1]
        out[u] = CorpusFeatures(
            bool(ok[i]), reason[i], tuple(symbols[a:b]), word[a:b], start[a:b], end[a:b], feats[a:b],
            ws[c:d], we[c:d], heard[a:b], heard_p[a:b], splits[i],
        )  # fmt: skip
    return out


def load_corpus_meta(path: str | os.PathLike) -> dict[str, object]:
    with np.load(path, allow_pickle=False) as z:
        return {
            "feature_names": tuple(z["feature_names"].tolist()),
            "phones": tuple(z["phones"].tolist()),
            "pocketsphinx_version": str(z["pocketsphinx_version"]),
            "split": str(z["split"]),
        }

