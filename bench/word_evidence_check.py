"""Does Whisper's forced reading of a word say how well it was said? Each word-evidence column
against the words' accuracy labels, beside a GOPT helper's out-of-fold word prediction, and a
stack of the two.

    python -m bench.word_evidence_check --words runs/words/train.npz --gopt runs/gopt6 \
        --out bench/results/word_evidence_check.md

Inputs: `training.word_evidence`'s file for the train split and a `training.fit_gopt` directory
(its out-of-fold predictions, `oof.npz`: a helper that never saw the clip's speaker). For every
word with an accuracy label: PCC / SCC of each column of `apa.transcribe.WORD_EVIDENCE_NAMES` and
of the helper's word-accuracy prediction; then a gradient-boosted regressor on the helper's
prediction alone and on it with the word columns, each scored by 5-fold cross-validation grouped by
speaker (so a speaker's words are never both fitted and scored). Prints a markdown report.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

FOLDS = 5


def word_table(words: dict, oof: dict, records) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(X (n, len(WORD_EVIDENCE_NAMES)), helper (n,), labels (n,), speakers) over the labelled words
    of the records that both files hold."""
    from apa.gopt import OUTPUT_NAMES

    col = OUTPUT_NAMES.index("pred_word_accuracy")
    xs, hs, ys, groups = [], [], [], []
    for r in records:
        if r.utt_id not in words or r.utt_id not in oof:
            continue
        first = np.cumsum([0] + [len(w.phones) for w in r.labels.words])[:-1]  # each word's first phone
        for k, w in enumerate(r.labels.words):
            if w.accuracy is None or not np.isfinite(words[r.utt_id][k]).all():
                continue
            xs.append(words[r.utt_id][k])
            hs.append(oof[r.utt_id][first[k], col])
            ys.append(w.accuracy)
            groups.append(r.speaker)
    return np.array(xs, np.float64), np.array(hs, np.float64), np.array(ys, np.float64), groups


def grouped_cv_pcc(x: np.ndarray, y: np.ndarray, groups: Sequence[str], seed: int = 0) -> float:
    """PCC of out-of-fold predictions of a gradient-boosted regressor, folds grouped by `groups`."""
    from scipy import stats
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.model_selection import GroupKFold

    pred = np.zeros_like(y)
    for train, test in GroupKFold(FOLDS).split(x, y, groups):
        model = HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, random_state=seed)
        pred[test] = model.fit(x[train], y[train]).predict(x[test])
    return float(stats.pearsonr(pred, y)[0])


def main(argv: Sequence[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--words", required=True, help="training.word_evidence's file (train split)")
    ap.add_argument("--gopt", required=True, help="a training.fit_gopt directory (oof.npz)")
    ap.add_argument("--data", default="")
    ap.add_argument("--out", default="bench/results/word_evidence_check.md")
    args = ap.parse_args(argv)
    from scipy import stats

    from apa import config
    from apa.data import load_split
    from apa.transcribe import WORD_EVIDENCE_NAMES
    from bench.common import publish
    from training.fit_gopt import load_oof
    from training.word_evidence import load_word_evidence

    x, helper, y, groups = word_table(load_word_evidence(args.words), load_oof(args.gopt),
                                      load_split(config.corpus_dir(args.data or None), "train"))
    lines = [
        "# Whisper's word evidence against the word accuracy labels (train split)",
        "",
        f"`python -m bench.word_evidence_check --words {args.words} --gopt {args.gopt}`: {len(y)} labelled words, "
        f"{len(set(groups))} speakers.",
        "",
        "| column | PCC | SCC |",
        "|---|---:|---:|",
    ]
    for k, name in enumerate(WORD_EVIDENCE_NAMES):
        lines.append(f"| {name} | {stats.pearsonr(x[:, k], y)[0]:.3f} | {stats.spearmanr(x[:, k], y)[0]:.3f} |")
    lines.append(f"| the helper's out-of-fold word accuracy | {stats.pearsonr(helper, y)[0]:.3f} | {stats.spearmanr(helper, y)[0]:.3f} |")
    alone = grouped_cv_pcc(helper[:, None], y, groups)
    both = grouped_cv_pcc(np.column_stack([helper, x]), y, groups)
    lines += ["", f"Gradient-boosted, {FOLDS} folds grouped by speaker, PCC: the helper's prediction alone {alone:.3f}; "
              f"with the word columns {both:.3f}."]
    return publish(lines, args.out)


if __name__ == "__main__":
    sys.exit(main() and None)
