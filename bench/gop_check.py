"""How much phone-level evidence apa.align's pocketsphinx features carry, and how good its word times are.

    python -m bench.gop_check --n 200 --words 20

1. GOP: on N test utterances spread evenly over the split (or the first N), PCC/SCC against the experts' phone scores (0-2; phones
   whose label is missing are skipped) of the `lpp` scalar and of the other scalar features, the
   top-1 "heard == canonical" rate (overall and per label band), and a ridge regression over all
   N_FEATURES features (+ phone identity) with 5-fold cross-validation grouped by speaker.
2. Word times: on the first W of those utterances, the aligned words against independent
   evidence: the speech span of Silero VAD (apa.audio.find_speech: first word start, last word
   end), and pauses found from frame energy (>= 0.15 s below the clip's noise floor + 12 dB,
   inside the speech span), whose edges should sit on a word boundary. Agreement within 0.1 s.
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


def energy_pauses(x: np.ndarray, lo: float, hi: float, sr: int = 16000) -> list[tuple[float, float]]:
    """Runs of 10 ms frames quieter than the noise floor + PAUSE_DB, >= PAUSE_MIN_S, inside (lo, hi) s."""
    hop = sr // 100
    n = len(x) // hop
    e = 10 * np.log10(np.mean(x[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1) + 1e-10)
    floor = np.percentile(e, 10)
    quiet = e < floor + PAUSE_DB
    out, i = [], 0
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


def word_time_check(items) -> dict:
    """items: [(audio, Alignment)] -> agreement rates of aligned word times with VAD/energy evidence."""
    from apa.audio import SAMPLE_RATE, find_speech

    start_ok, end_ok, end_signed, edges, edges_ok, n = [], [], [], 0, 0, 0
    for audio, al in items:
        if not al.ok:
            continue
        span = find_speech(audio)
        if span is None:
            continue
        n += 1
        lo, hi = span.start / SAMPLE_RATE, span.end / SAMPLE_RATE
        start_ok.append(abs(al.words[0].start - lo))
        end_ok.append(abs(al.words[-1].end - hi))
        end_signed.append(al.words[-1].end - hi)
        ends = np.array([w.end for w in al.words[:-1]])
        starts = np.array([w.start for w in al.words[1:]])
        for s, t in energy_pauses(audio, lo, hi):
            # a pause should begin where a word ends and end where the next word starts
            edges += 2
            if ends.size:
                k = int(np.argmin(np.abs(ends - s)))
                edges_ok += abs(ends[k] - s) <= TOL_S
                edges_ok += abs(starts[k] - t) <= TOL_S
    start_ok, end_ok = np.array(start_ok), np.array(end_ok)
    return {
        "clips": n,
        "first_word_start_within_0.1s": float(np.mean(start_ok <= TOL_S)) if n else float("nan"),
        "last_word_end_within_0.1s": float(np.mean(end_ok <= TOL_S)) if n else float("nan"),
        "median_abs_start_diff_s": float(np.median(start_ok)) if n else float("nan"),
        "median_abs_end_diff_s": float(np.median(end_ok)) if n else float("nan"),
        "median_end_minus_vad_end_s": float(np.median(end_signed)) if n else float("nan"),
        "pause_edges": edges,
        "pause_edges_on_word_boundary_within_0.1s": edges_ok / edges if edges else float("nan"),
    }


def ridge_cv(X, y, groups, lam=1.0, folds=5) -> np.ndarray:
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
    args = ap.parse_args(argv)

    from apa import align as A
    from apa.config import corpus_dir
    from apa.data import load_split

    records = load_split(corpus_dir(args.data), args.split)
    records = records[: args.n] if args.first else records[:: max(1, len(records) // args.n)][: args.n]
    feats, labels, canon, heard1, spk = [], [], [], [], []
    kept, failed, t_align, audio_s = [], [], 0.0, 0.0
    for i, r in enumerate(records):
        audio = r.audio()
        t = time.perf_counter()
        al = A.align(audio, r.reference)
        t_align += time.perf_counter() - t
        audio_s += len(audio) / 16000
        if i < args.words:
            kept.append((audio, al))
        if not al.ok:
            failed.append((r.utt_id, al.reason))
            continue
        scores = [ph.score for w in r.labels.words for ph in w.phones]
        for p, s, row in zip(al.phones, scores, al.features()):
            if s is None:
                continue
            feats.append(row)
            labels.append(s)
            canon.append(A.PHONE_INDEX[p.symbol.rstrip("012")])
            heard1.append(p.heard[0][0] == p.symbol.rstrip("012"))
            spk.append(r.speaker)
    X, y, canon, heard1, spk = np.array(feats), np.array(labels), np.array(canon), np.array(heard1), np.array(spk)
    names = A.FEATURE_NAMES
    print(f"pocketsphinx {A.pocketsphinx_version()}, {len(records)} {args.split} utterances ({audio_s:.0f} s of audio), "
          f"{len(failed)} not aligned {[u for u, _ in failed]}; {len(y)} labelled phones")
    print(f"align: {t_align / len(records):.3f} s per utterance, real-time factor {t_align / audio_s:.3f} "
          f"(this machine, {os.cpu_count()} cores shared)\n")
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
    print(f"| ridge over all {A.N_FEATURES} features + phone identity, 5-fold CV by speaker | "
          f"{rows['ridge_cv'][0]:.3f} | {rows['ridge_cv'][1]:.3f} |")
    print(f"\ntop-1 heard == canonical: {heard1.mean():.3f} of {len(y)} phones")
    for lo, hi, tag in ((0, 0.5, "label < 0.5 (wrong)"), (0.5, 1.5, "0.5-1.5 (accented)"), (1.5, 2.01, ">= 1.5 (right)")):
        m = (y >= lo) & (y < hi)
        if m.any():
            print(f"  {tag}: {heard1[m].mean():.3f} of {m.sum()}")
    out = {"n": len(records), "failed": failed, "phones": len(y), "s_per_utt": t_align / len(records),
           "table": rows, "heard_top1": float(heard1.mean())}
    if args.words:
        wc = word_time_check(kept)
        print(f"\nword times on {wc['clips']} clips (agreement within {TOL_S} s):")
        for k, v in wc.items():
            print(f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}")
        out["word_times"] = wc
    return out


if __name__ == "__main__":
    main()
