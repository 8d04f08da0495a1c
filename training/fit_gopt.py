"""Cross-fit the GOPT-style helper (apa.gopt) on the training split's alignment features.

    python -m training.fit_gopt --features runs/align/so762.npz --out runs/gopt
    python -m training.fit_gopt --features runs/align/so762.npz --out runs/gopt --eval-split test
    python -m training.fit_gopt --features runs/feat/train.npz --eval-features runs/feat/test.npz --eval-split test --out runs/gopt
    python -m training.fit_gopt --features F --eval-split test --out runs/gopt --evaluate-only True   # re-score only
    python -m training.fit_gopt --features runs/feat/train.npz --tower-states runs/tower/train.npz \
        --eval-features runs/feat/test.npz --eval-tower-states runs/tower/test.npz --eval-split test --out runs/gopt
        # + the audio tower's states per phone (training/tower_states.py): the helper apa-mini v6 ships
    python -m training.fit_gopt --features runs/feat/train.npz --tower-states runs/tower/train.npz \
        --word-evidence runs/words/train.npz --eval-features runs/feat/test.npz --eval-tower-states runs/tower/test.npz \
        --eval-word-evidence runs/words/test.npz --eval-split test --out runs/gopt7
        # + Whisper's forced reading of each word (training/word_evidence.py): the helper of apa-mini v7

Writes to --out: `gopt.json` + `gopt.safetensors` (the fold models; training.train copies them
into the adapter with `--evidence_gopt`), `oof.npz` (each training utterance's out-of-fold
prediction: what the audio LMM trains on), `resolved_config.json`, and `metrics.json` /
`metrics.md`: PCC / SCC of the out-of-fold predictions and, with --eval-split, of the ensemble
on that split: how good the evidence columns are before the LMM reads them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

# Whisper's per-word columns the helper reads (the sentence-wide means are left out: see README, "Results")
DEFAULT_WORD_COLUMNS = ("lp_sum", "pmi_sum", "lp_min", "lp_mean", "pmi_mean", "n_tokens")


@dataclass(frozen=True)
class FitArguments:
    features: str
    out: str
    data: str = ""
    folds: int = 5
    epochs: int = 60
    width: int = 48
    layers: int = 3
    lr: float = 1e-3  # peak learning rate (apa.gopt.train_one)
    dropout: float = 0.1  # the transformer's dropout (apa.gopt.GOPTConfig)
    seed: int = 0  # the folds' and the models' seed
    eval_split: str = ""
    eval_features: str = ""  # default: --features
    evaluate_only: bool = False  # score the ensemble already in --out on --eval-split (no fitting)
    tower_states: str = ""  # training/tower_states.py's file for the training split: the helper reads them too
    eval_tower_states: str = ""  # the same for --eval-split
    tower_pca: int = 24  # principal components kept per tower layer (0: all its states)
    word_evidence: str = ""  # training/word_evidence.py's file for the training split: the helper reads its word columns
    eval_word_evidence: str = ""  # the same for --eval-split
    word_columns: str = ",".join(DEFAULT_WORD_COLUMNS)  # which of apa.transcribe.WORD_EVIDENCE_NAMES (comma-separated)


def utterances(features_path: str, data: str, split: str, tower_path: str = "", word_path: str = "",
               word_columns: Sequence[str] = ()) -> tuple[list[str], list[str], list]:
    """(utt_ids, speakers, apa.gopt.Utterance list) of one split, labels attached; with
    word_path, each clip's word columns (`word_columns`, repeated per phone) follow its
    alignment features, and with tower_path its pooled tower states follow those (a clip
    without them is left out)."""
    from apa.align import load_corpus_features
    from apa.config import corpus_dir
    from apa.data import load_split
    from apa.gopt import SENTENCE_TARGETS, WORD_TARGETS, Utterance, word_inputs

    table = load_corpus_features(features_path)
    words_table = None
    if word_path:
        from training.word_evidence import load_word_evidence

        words_table = load_word_evidence(word_path)
    tower = None
    if tower_path:
        from training.tower_states import load_tower_states

        tower = load_tower_states(tower_path)
    ids, speakers, out = [], [], []
    for r in load_split(corpus_dir(data or None), split):
        c = table.get(r.utt_id)
        if c is None or (tower is not None and r.utt_id not in tower) or (words_table is not None and r.utt_id not in words_table):
            continue
        words = r.labels.words
        phone = np.array([np.nan if p.score is None else p.score for w in words for p in w.phones], np.float32)
        if len(phone) != len(c.symbols):
            raise ValueError(f"{r.utt_id}: {len(c.symbols)} aligned phones, {len(phone)} labelled")
        word = np.array([[np.nan if getattr(w, a) is None else getattr(w, a) for a in WORD_TARGETS] for w in words], np.float32)
        sent = np.array([np.nan if getattr(r.labels.sentence, a) is None else getattr(r.labels.sentence, a)
                         for a in SENTENCE_TARGETS], np.float32)
        x = c.features
        if words_table is not None:
            x = np.concatenate([x, word_inputs(words_table[r.utt_id], np.asarray(c.word), word_columns)], axis=1)
        if tower is not None:
            x = np.concatenate([x, tower[r.utt_id]], axis=1)
        out.append(Utterance(x, c.symbols, np.asarray(c.word, np.int64), phone, word, sent))
        ids.append(r.utt_id)
        speakers.append(r.speaker)
    return ids, speakers, out


def scores(utts: Sequence, preds: Sequence[np.ndarray]) -> dict[str, dict[str, float]]:
    """PCC / SCC of the predictions against the labels: phone, word accuracy/total, sentence."""
    from scipy import stats

    from apa.gopt import OUTPUT_NAMES, SENTENCE_TARGETS, WORD_TARGETS

    pairs: dict[str, tuple[list, list]] = {n: ([], []) for n in OUTPUT_NAMES}
    for u, p in zip(utts, preds):
        pairs["pred_phone"][0].extend(p[:, 0])
        pairs["pred_phone"][1].extend(u.phone_score)
        first = np.unique(u.word, return_index=True)[1]  # one row per word
        for k, a in enumerate(WORD_TARGETS):
            pairs[f"pred_word_{a}"][0].extend(p[first, 1 + k])
            pairs[f"pred_word_{a}"][1].extend(u.word_scores[:, k])
        for k, a in enumerate(SENTENCE_TARGETS):
            pairs[f"pred_sent_{a}"][0].append(p[0, 1 + len(WORD_TARGETS) + k])
            pairs[f"pred_sent_{a}"][1].append(u.sentence[k])
    out = {}
    for name, (x, y) in pairs.items():
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        keep = np.isfinite(x) & np.isfinite(y)
        out[name] = {"pcc": float(stats.pearsonr(x[keep], y[keep])[0]), "scc": float(stats.spearmanr(x[keep], y[keep])[0]),
                     "n": int(keep.sum())}
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, f in FitArguments.__dataclass_fields__.items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=str if isinstance(f.default, bool) or name in ("features", "out") else type(f.default),
                        default=f.default if name not in ("features", "out") else None, required=name in ("features", "out"))
    parsed = vars(ap.parse_args(argv))
    parsed["evaluate_only"] = str(parsed["evaluate_only"]).lower() in ("1", "true", "yes")
    args = FitArguments(**parsed)
    import torch

    from apa.align import load_corpus_meta
    from apa.gopt import GOPTConfig, GOPTEnsemble, cross_fit, fit_normalisation

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.evaluate_only:  # the saved ensemble on --eval-split; the out-of-fold figures are kept
        metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").is_file() else {}
        ens = GOPTEnsemble.load(out)
        _, _, test = utterances(args.eval_features or args.features, args.data, args.eval_split, args.eval_tower_states,
                                args.eval_word_evidence, ens.config.word_columns)
        metrics[args.eval_split] = scores(test, ens.predict(test))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (out / "metrics.md").write_text(to_markdown(metrics))
        print(to_markdown(metrics))
        return

    # 1. the training split's features and labels
    word_columns = tuple(c for c in args.word_columns.split(",") if c) if args.word_evidence else ()
    ids, speakers, utts = utterances(args.features, args.data, "train", args.tower_states, args.word_evidence, word_columns)
    names = load_corpus_meta(args.features)["feature_names"]
    n_direct = len(names) + len(word_columns)  # the columns before the tower states
    mean, std = fit_normalisation(utts)
    tower_layers, tower_width, pca_k, pca = (), 0, 0, None
    if args.tower_states:
        from apa.gopt import fit_tower_pca, reduced_normalisation
        from training.tower_states import tower_layers_of

        tower_layers = tower_layers_of(args.tower_states)
        tower_width = (utts[0].features.shape[1] - n_direct) // len(tower_layers)
        if 0 < args.tower_pca < tower_width:
            pca_k = args.tower_pca
            pca = fit_tower_pca(utts, n_direct, len(tower_layers), pca_k, seed=args.seed)
            mean, std = reduced_normalisation(utts, n_direct, pca)
    word_model = ""
    if word_columns:
        with np.load(args.word_evidence, allow_pickle=False) as z:
            word_model = str(z["model"])
    config = GOPTConfig(feature_names=tuple(names), mean=mean, std=std, width=args.width, layers=args.layers,
                        folds=args.folds, dropout=args.dropout, tower_layers=tower_layers, tower_width=tower_width,
                        tower_pca=pca_k, word_columns=word_columns, word_model=word_model)
    print(f"{len(utts)} training utterances, {len(set(speakers))} speakers, {args.folds} folds", flush=True)

    # 2. fold models, grouped by speaker; out-of-fold predictions
    t0 = time.perf_counter()
    ens, oof = cross_fit(config, utts, speakers, epochs=args.epochs, seed=args.seed, lr=args.lr,
                         log=lambda m: print(m, flush=True), tower_pca=pca)
    print(f"cross-fit in {time.perf_counter() - t0:.0f} s", flush=True)
    ens.save(out)
    save_oof(out, ids, oof)
    metrics = {"train_out_of_fold": scores(utts, oof)}

    # 3. optional: the ensemble on another split
    if args.eval_split:
        _, _, test = utterances(args.eval_features or args.features, args.data, args.eval_split, args.eval_tower_states,
                                args.eval_word_evidence, word_columns)
        metrics[args.eval_split] = scores(test, ens.predict(test))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "metrics.md").write_text(to_markdown(metrics))
    (out / "resolved_config.json").write_text(json.dumps({"args": asdict(args), "gopt": asdict(config)}, indent=2))
    for split, m in metrics.items():
        print(f"\n{split}: " + ", ".join(f"{k} {v['pcc']:.3f}/{v['scc']:.3f}" for k, v in m.items()))


def to_markdown(metrics: dict[str, dict[str, dict[str, float]]]) -> str:
    """metrics.json -> a table: one row per prediction, PCC / SCC per split."""
    splits = list(metrics)
    rows = ["| prediction | " + " | ".join(f"{s} PCC / SCC" for s in splits) + " |", "|---|" + "---:|" * len(splits)]
    for name in metrics[splits[0]]:
        rows.append(f"| {name} | " + " | ".join(f"{metrics[s][name]['pcc']:.3f} / {metrics[s][name]['scc']:.3f}" for s in splits) + " |")
    return "\n".join(rows) + "\n"


def save_oof(directory: str | os.PathLike, utt_ids: Sequence[str], predictions: Sequence[np.ndarray]) -> Path:
    """Write the out-of-fold predictions (one (n_phones, K) array per utterance) as oof.npz."""
    path = Path(directory) / "oof.npz"
    offsets = np.cumsum([0] + [len(p) for p in predictions])
    np.savez_compressed(path, utt_ids=np.array(utt_ids), offsets=offsets, predictions=np.concatenate(predictions))
    return path


def load_oof(directory: str | os.PathLike) -> dict[str, np.ndarray]:
    """{utt_id: (n_phones, len(OUTPUT_NAMES))} out-of-fold predictions saved by `main`."""
    with np.load(Path(directory) / "oof.npz", allow_pickle=False) as z:
        o, p = z["offsets"], z["predictions"]
        return {u: p[o[i] : o[i + 1]] for i, u in enumerate(z["utt_ids"].tolist())}


if __name__ == "__main__":
    sys.exit(main())
