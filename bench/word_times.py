"""Word times: do the alignment's word starts and ends agree with independent evidence?

    python -m bench.word_times [--n 100] [--out bench/results/word_times.md]

On N Speechocean762 test clips spread evenly over the split, the word times that the app shows
(`apa.align.align` -> `apa.annotate`) are checked three ways, each sharing nothing with
pocketsphinx:

1. Pauses. Silero VAD (`apa.audio.speech_probabilities`, 32 ms frames, the hysteresis of
   `apa.audio.find_speech`) finds the runs of non-speech of at least PAUSE_MIN_S between the first
   and the last speech frame; each is a pause between two words. Its edges are refined on 10 ms
   frame energy: the longest run of frames quieter than the clip's noise floor (10th percentile)
   + PAUSE_DB that overlaps the VAD pause (else the VAD edges). For every pause, the aligned word
   boundary (a word end and the next word's start) nearest to it: is the word end within TOL_S of
   the pause's start, and the next start within TOL_S of its end? The speech onset and offset
   (`apa.audio.find_speech`) against the first word's start and the last word's end likewise.
   These edges are clean (silence against speech) but there are few of them: most word boundaries
   in read speech have no pause.
2. A second aligner. espeak-ng reads the sentence word by word (each word synthesised alone,
   trimmed, joined with REF_GAP_S of silence), so its word edges are known; the learner's MFCCs
   (librosa, 13 coefficients without c0, mean and variance normalised per clip) are aligned to the
   rendering's by DTW (cosine distance), and each reference word edge is mapped through the path
   (a start to the first learner frame matched to the word's first frame, an end to the last frame
   matched to its last). Every word edge is compared; DTW between a synthetic voice and a learner
   is a coarse aligner, so disagreement is shared between the two.
3. Whisper-base cross-attention word times (`faster_whisper`, `word_timestamps=True`), matched to
   the reference words by text; only run where faster_whisper is installed (it is not a
   dependency of the app), else left out of the report.

Reported per check: shares of edges within TOL_S (and within 2 TOL_S), median absolute and signed
differences.
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import io
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from bench.common import publish  # noqa: E402

TOL_S = 0.1
SR = 16000
HOP_S = 0.01  # MFCC and energy frames
PAUSE_MIN_S = 0.15  # shortest VAD non-speech run counted as a pause (as bench.gop_check)
PAUSE_DB = 12.0  # quiet frames: under the noise floor + this (as bench.gop_check)
REF_GAP_S = 0.05  # silence between the words of the espeak rendering
REF_EDGE_S = 0.2  # ... and before / after it
TRIM_LEVEL = 0.01  # a synthesised word spans its samples above this
N_MFCC = 13
REPO = Path(__file__).resolve().parents[1]


# ---- 1. pauses -------------------------------------------------------------------------------
def vad_pauses(probs: np.ndarray, frame_s: float, on: float, off: float, min_s: float = PAUSE_MIN_S) -> list[tuple[float, float]]:
    """Runs of non-speech frames (hysteresis: speech starts at >= on, goes on while >= off) of at
    least min_s seconds strictly between the first and the last speech frame, as (start, end) s."""
    from apa.audio.vad import hysteresis

    voiced = hysteresis(probs, on, off)
    idx = np.flatnonzero(voiced)
    if idx.size == 0:
        return []
    out, i, last = [], int(idx[0]), int(idx[-1])
    while i < last:
        if voiced[i]:
            i += 1
            continue
        j = i
        while not voiced[j]:
            j += 1
        if (j - i) * frame_s >= min_s:
            out.append((i * frame_s, j * frame_s))
        i = j
    return out


def quiet_runs(x: np.ndarray, sr: int = SR) -> list[tuple[float, float]]:
    """Runs of 10 ms frames quieter than the clip's noise floor (10th percentile) + PAUSE_DB, s."""
    hop = int(sr * HOP_S)
    n = len(x) // hop
    if n == 0:
        return []
    e = 10 * np.log10(np.mean(x[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1) + 1e-10)
    quiet = e < np.percentile(e, 10) + PAUSE_DB
    edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]])))
    return [(a * HOP_S, b * HOP_S) for a, b in zip(edges[::2], edges[1::2])]


def refine(pause: tuple[float, float], quiet: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """The longest quiet run overlapping `pause` (clipped to it widened by TOL_S), else `pause`."""
    s, t = pause
    best, best_len = pause, 0.0
    for a, b in quiet:
        a, b = max(a, s - TOL_S), min(b, t + TOL_S)
        if b - a > best_len and a < t and b > s:
            best, best_len = (a, b), b - a
    return best


def pause_edge_errors(pauses: Sequence[tuple[float, float]], words: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Per pause, (word end - pause start, next word start - pause end) s for the word boundary
    whose gap is nearest the pause (by midpoints); [] with fewer than 2 words."""
    if len(words) < 2:
        return []
    mids = np.array([(words[i][1] + words[i + 1][0]) / 2 for i in range(len(words) - 1)])
    out = []
    for s, t in pauses:
        i = int(np.argmin(np.abs(mids - (s + t) / 2)))
        out.append((words[i][1] - s, words[i + 1][0] - t))
    return out


# ---- 2. DTW against an espeak-ng rendering ---------------------------------------------------
def espeak_words(words: Sequence[str], voice: str = "en-us") -> tuple[np.ndarray, list[tuple[float, float]]]:
    """espeak-ng reads each word alone; trimmed and joined with REF_GAP_S of silence (REF_EDGE_S
    before and after) -> (16 kHz audio, [(start, end) s of each word])."""
    import soundfile as sf
    import soxr

    parts, edges, t = [np.zeros(int(REF_EDGE_S * SR), np.float32)], [], REF_EDGE_S
    for w in words:
        wav = subprocess.run(["espeak-ng", "-v", voice, "--stdout", w.lower()], capture_output=True, check=True).stdout
        x, sr = sf.read(io.BytesIO(wav), dtype="float32")
        x = soxr.resample(x, sr, SR).astype(np.float32)
        nz = np.flatnonzero(np.abs(x) > TRIM_LEVEL)
        x = x[nz[0] : nz[-1] + 1] if nz.size else x[:0]
        edges.append((t, t + len(x) / SR))
        parts += [x, np.zeros(int(REF_GAP_S * SR), np.float32)]
        t += len(x) / SR + REF_GAP_S
    parts.append(np.zeros(int(REF_EDGE_S * SR), np.float32))
    return np.concatenate(parts), edges


def mfcc(x: np.ndarray) -> np.ndarray:
    """(frames, N_MFCC - 1) MFCCs without c0, mean and variance normalised over the clip."""
    import librosa

    m = librosa.feature.mfcc(y=x, sr=SR, n_mfcc=N_MFCC, n_fft=400, hop_length=int(SR * HOP_S))[1:].T
    return (m - m.mean(axis=0)) / (m.std(axis=0) + 1e-8)


def map_edges(path: np.ndarray, edges: Sequence[tuple[float, float]], n_ref: int) -> list[tuple[float, float]]:
    """Word edges of the reference (s) -> learner times through a DTW path ((k, 2) pairs of
    (reference frame, learner frame)): a start to the first learner frame matched to the word's
    first frame, an end to the end of the last learner frame matched to its last frame."""
    path = np.asarray(path)
    first = np.full(n_ref, np.iinfo(np.int64).max)
    last = np.full(n_ref, -1)
    np.minimum.at(first, path[:, 0], path[:, 1])
    np.maximum.at(last, path[:, 0], path[:, 1])
    out = []
    for s, e in edges:
        a = min(int(round(s / HOP_S)), n_ref - 1)
        b = min(max(int(round(e / HOP_S)) - 1, a), n_ref - 1)
        out.append((first[a] * HOP_S, (last[b] + 1) * HOP_S))
    return out


def dtw_word_times(audio: np.ndarray, words: Sequence[str]) -> list[tuple[float, float]]:
    """The words' (start, end) s in `audio` by DTW against espeak-ng's word-by-word reading."""
    import librosa

    ref, edges = espeak_words(words)
    a, b = mfcc(ref), mfcc(audio)
    _cost, path = librosa.sequence.dtw(X=a.T, Y=b.T, metric="cosine")
    return map_edges(path[::-1], edges, len(a))


# ---- 3. Whisper ------------------------------------------------------------------------------
def _norm(w: str) -> str:
    return re.sub(r"[^a-z']", "", w.lower())


def whisper_words(model, audio: np.ndarray) -> list[tuple[str, float, float]]:
    segments, _info = model.transcribe(
        audio, language="en", beam_size=1, word_timestamps=True, condition_on_previous_text=False,
        vad_filter=False, initial_prompt=None,
    )  # fmt: skip
    return [(_norm(w.word), float(w.start), float(w.end)) for s in segments for w in (s.words or ())]


def whisper_diffs(mine: Sequence[tuple[str, float, float]], theirs: Sequence[tuple[str, float, float]]):
    """(start diffs, end diffs) ours - Whisper's over the words matched by text (difflib)."""
    sm = difflib.SequenceMatcher(a=[m[0] for m in mine], b=[t[0] for t in theirs], autojunk=False)
    ds, de = [], []
    for block in sm.get_matching_blocks():
        for i in range(block.size):
            m, t = mine[block.a + i], theirs[block.b + i]
            ds.append(m[1] - t[1])
            de.append(m[2] - t[2])
    return ds, de


# ---- report ----------------------------------------------------------------------------------
def share(d: Sequence[float], tol: float = TOL_S) -> str:
    d = np.abs(np.asarray(d, float))
    return f"{np.mean(d <= tol):.2f} ({int(np.sum(d <= tol))}/{d.size})" if d.size else "-"


def median_abs(d: Sequence[float]) -> str:
    return f"{np.median(np.abs(d)):.3f}" if len(d) else "-"


def median_signed(d: Sequence[float]) -> str:
    return f"{np.median(d):+.3f}" if len(d) else "-"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "word_times.md"))
    args = ap.parse_args(argv)

    import importlib.util

    from apa.align import align, pocketsphinx_version
    from apa.audio import SAMPLE_RATE, find_speech, speech_probabilities
    from apa.audio.vad import VAD_FRAME, VAD_OFF, VAD_ON
    from apa.config import corpus_dir
    from apa.data import load_split

    records = load_split(corpus_dir(), "test")
    step = max(len(records) // args.n, 1)
    chosen = records[::step][: args.n]
    use_espeak = shutil.which("espeak-ng") is not None
    whisper = None
    if importlib.util.find_spec("faster_whisper") is not None:
        from faster_whisper import WhisperModel

        from apa.mini.sources import joined_whisper_ct2

        with joined_whisper_ct2() as d:
            whisper = WhisperModel(str(d), device="cpu", compute_type="int8", cpu_threads=1)

    d = {k: [] for k in ("pause_end", "pause_start", "vad_pause_end", "vad_pause_start", "onset", "offset",
                         "dtw_start", "dtw_end", "wh_start", "wh_end")}  # fmt: skip
    n_words = n_pauses = not_aligned = 0
    rows = []
    for r in chosen:
        audio = r.audio()
        al = align(audio, r.reference)
        if not al.ok:
            not_aligned += 1
            rows.append(f"| {r.utt_id} | {r.text} | not aligned | |")
            continue
        words = [(w.start, w.end) for w in al.words]
        n_words += len(words)
        span = find_speech(audio)
        if span is not None:
            d["onset"].append(words[0][0] - span.start / SAMPLE_RATE)
            d["offset"].append(words[-1][1] - span.end / SAMPLE_RATE)
        pauses = vad_pauses(speech_probabilities(audio), VAD_FRAME / SAMPLE_RATE, VAD_ON, VAD_OFF)
        n_pauses += len(pauses)
        quiet = quiet_runs(audio)
        for (e_end, e_start), (v_end, v_start) in zip(
            pause_edge_errors([refine(p, quiet) for p in pauses], words), pause_edge_errors(pauses, words)
        ):
            d["pause_end"].append(e_end)
            d["pause_start"].append(e_start)
            d["vad_pause_end"].append(v_end)
            d["vad_pause_start"].append(v_start)
        dtw_ok = "-"
        if use_espeak:
            theirs = dtw_word_times(audio, [w.text for w in al.words])
            ds = [m[0] - t[0] for m, t in zip(words, theirs)]
            de = [m[1] - t[1] for m, t in zip(words, theirs)]
            d["dtw_start"] += ds
            d["dtw_end"] += de
            dtw_ok = f"{np.mean(np.abs(ds + de) <= TOL_S):.2f}"
        if whisper is not None:
            ws, we = whisper_diffs([(_norm(w.text), w.start, w.end) for w in al.words], whisper_words(whisper, audio))
            d["wh_start"] += ws
            d["wh_end"] += we
        rows.append(f"| {r.utt_id} | {r.text} | {len(pauses)} | {dtw_ok} |")

    def line(name: str, a: str, b: str) -> str:
        return (f"| {name} | {share(d[a] + d[b])} | {share(d[a])} | {share(d[b])} | {share(d[a] + d[b], 2 * TOL_S)} "
                f"| {median_abs(d[a])} / {median_abs(d[b])} | {median_signed(d[a])} / {median_signed(d[b])} |")  # fmt: skip

    lines = [
        "# Word times against independent evidence",
        "",
        f"`python -m bench.word_times --n {args.n}`, {dt.date.today().isoformat()}, pocketsphinx "
        f"{pocketsphinx_version()}; {len(chosen)} Speechocean762 test clips spread evenly over the split "
        f"({not_aligned} not aligned), {n_words} words, {n_pauses} pauses. Tolerance {TOL_S} s. "
        "Differences are ours minus the evidence's.",
        "",
        f"| check | edges within {TOL_S} s | first edge (end / start / onset) | second edge (start / end / offset) "
        f"| edges within {2 * TOL_S:g} s | median abs diff (s) | median signed diff (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        line("pause edges, energy-refined: word end before / word start after", "pause_end", "pause_start"),
        line("pause edges, VAD frames only", "vad_pause_end", "vad_pause_start"),
        line("speech onset / offset (find_speech) vs first start / last end", "onset", "offset"),
    ]
    if use_espeak:
        lines.append(line("DTW against espeak-ng word by word: word starts / ends", "dtw_start", "dtw_end"))
    if whisper is not None:
        lines.append(line("Whisper-base cross-attention: word starts / ends (matched words)", "wh_start", "wh_end"))
    else:
        lines += ["", "Whisper check not run: faster_whisper is not installed."]
    lines += ["", "| clip | text | pauses | DTW: share of this clip's edges within 0.1 s |", "|---|---|---:|---:|", *rows]
    publish(lines, args.out)
    return {k: np.asarray(v) for k, v in d.items()}


if __name__ == "__main__":
    main()
