"""Score the test split with a model (+ adapter, or none for zero-shot) and measure it.

    python -m training.evaluate --out results/apa-mini                  # apa-mini + the shipped adapter
    python -m training.evaluate --adapter none --out results/zero-shot  # the bare base model

Writes into --out: predictions.jsonl (utterance id, greedy and expected-value assessments),
metrics.md and metrics.json (nine aspects x PCC/SCC/RMSE, for both readings), and one scatter
plot per aspect (HTML; PNG too when kaleido is installed). The references are the corpus'
own words and phones, as in the paper.

`--control silence` (the default) scores every clip a second time with its audio replaced by
silence of the same length (and, for a model taking phone evidence, the evidence a failed
alignment gives): a deaf control. metrics.json then holds `control` beside `expected`, and the
share of each correlation that the recording earns, 1 - r(silence) / r(audio).
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from apa.data import LABEL_SNAPSHOT, load_split
from apa.metrics import ASPECTS, evaluate, pairs, to_dict, to_markdown
from apa import config
from apa.decoding import SlotReading
from apa.scorer import HISTORIES, MODES, AudioLMMScorer, DecodeOptions, to_assessment

CONTROLS = ("silence", "none")


def scatter_plots(preds, labels, out: Path, title: str) -> list[Path]:
    """One plotly scatter per aspect (prediction vs label); returns the files written."""
    try:
        import plotly.graph_objects as go
    except ImportError:  # plots are optional (e.g. on a bare GPU image)
        return []
    written = []
    for aspect, (x, y, _) in pairs(preds, labels).items():
        if not len(x):
            continue
        fig = go.Figure(go.Scattergl(x=y, y=x, mode="markers", marker={"size": 4, "opacity": 0.3}))
        fig.update_layout(title=f"{title}: {aspect}", xaxis_title="label", yaxis_title="prediction", width=520, height=480)
        path = out / f"scatter_{aspect}.html"
        fig.write_html(path, include_plotlyjs="cdn")
        written.append(path)
        try:
            fig.write_image(out / f"scatter_{aspect}.png")
        except Exception:  # kaleido absent: HTML only
            pass
    return written


def build_parser() -> argparse.ArgumentParser:
    """The command line of `main`."""
    ap = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help=config.MODEL_HELP)
    ap.add_argument("--adapter", default=None, help=config.ADAPTER_HELP + "; 'none' scores zero-shot")
    ap.add_argument("--data", default=None, help="Speechocean762 root (default: $APA_SO762_DIR, else ../shared/speechocean762)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=None, help="only the first N utterances")
    ap.add_argument("--ids", default=None, help="file of utterance ids (one per line): only those (e.g. a held-out train fold)")
    ap.add_argument("--shard", default=None, help="K/N: only utterances K, K+N, K+2N, ... (merge with training.merge_shards)")
    ap.add_argument("--batch-size", type=int, default=None, help="clips per batch (default: 256 on a GPU, 8 on a CPU)")
    ap.add_argument("--device", default=None, help="torch device (default: $APA_DEVICE, else cuda when available, else cpu)")
    ap.add_argument("--dtype", default=None, help="model dtype (default: bfloat16 on a GPU, float32 on a CPU)")
    ap.add_argument("--decoder", default="fast", choices=["fast", "reference"],
                    help="fast: real-length encoder + speculative decoding (clips together on a GPU); "
                         "reference: the step-by-step reference decoder")
    ap.add_argument("--workers", type=int, default=8, help="threads decoding the audio files")
    ap.add_argument("--align-workers", type=int, default=1,
                    help="processes aligning the clips when no --evidence-features are given (one core each)")
    ap.add_argument("--evidence-features", default=None,
                    help="precomputed phone evidence of the split (training.align_corpus); default: aligned here")
    ap.add_argument("--evidence-oof", default=None,
                    help="training.fit_gopt output dir: the helper's columns from its out-of-fold predictions "
                         "(for held-out train clips, which the ensemble saw) instead of the ensemble's")
    ap.add_argument("--word-evidence", default=None,
                    help="precomputed Whisper word evidence of the split (training.word_evidence), for a helper "
                         "with word columns; default: computed here")
    ap.add_argument("--gopt-blend", type=float, default=DecodeOptions.gopt_blend,
                    help="weight of a GOPT helper's predictions in the scores (apa.gopt.blend; 0: the LMM alone; "
                         "default: the weights fitted with the adapter, blend.json)")
    ap.add_argument("--history", default=DecodeOptions.history, choices=HISTORIES,
                    help="what each word and phone slot is read after (apa.scorer.DecodeOptions.history): greedy "
                         "values, top values, or the GOPT helper's predictions")
    ap.add_argument("--control", default="silence", choices=CONTROLS, help="deaf control: score silence of the same length too")
    ap.add_argument("--out", required=True)
    return ap


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)

    # 1. model and data
    choice = config.resolve_model(args.model, args.adapter)  # as load_scorer: no --adapter = shipped one with apa-mini
    model = choice.model
    if choice.is_default_model:
        from apa.mini import assemble_apa_mini

        model = str(assemble_apa_mini())
    device = config.pick_device(args.device)
    batch_size = args.batch_size or (256 if device.type == "cuda" else 8)
    options = DecodeOptions(batch_size=batch_size, fast=args.decoder == "fast", gopt_blend=args.gopt_blend,
                            history=args.history)
    scorer = AudioLMMScorer.from_pretrained(model, choice.adapter, device=device, dtype=args.dtype, options=options)
    records = load_split(config.corpus_dir(args.data), args.split)
    if args.ids:
        wanted = set(Path(args.ids).read_text().split())
        records = [r for r in records if r.utt_id in wanted]
    records = records[: args.limit]
    if args.shard:
        k, n = (int(v) for v in args.shard.split("/"))
        records = records[k::n]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:  # file decoding releases the GIL
        audios = list(pool.map(lambda r: r.audio(), records))
    load_seconds = time.perf_counter() - t0
    print(f"{len(records)} clips loaded in {load_seconds:.1f} s", flush=True)

    refs = [r.reference for r in records]
    evidence = spans = None
    if scorer.evidence is not None:
        t0 = time.perf_counter()
        if args.evidence_features:
            from apa.align import load_corpus_features

            table = load_corpus_features(args.evidence_features)
            evidence = [table[r.utt_id].features if r.utt_id in table else nan_evidence(scorer, ref) for r, ref in zip(records, refs)]
            spans = [(table[r.utt_id].start, table[r.utt_id].end) if r.utt_id in table else None for r in records]
            if args.evidence_oof:  # every clip must be aligned: the held-out clips are the helper's own
                from apa.align import load_corpus_meta
                from training.train import with_out_of_fold

                names = tuple(load_corpus_meta(args.evidence_features)["feature_names"])
                oof, _ = with_out_of_fold({r.utt_id: table[r.utt_id].features for r in records}, names, args.evidence_oof)
                evidence = [oof[r.utt_id] for r in records]
        elif args.align_workers > 1:
            evidence, spans = align_in_processes(audios, refs, args.align_workers)
        else:
            evidence, spans = scorer.aligned_evidence(audios, refs)
        words = None
        if args.word_evidence:
            from training.word_evidence import load_word_evidence

            word_table = load_word_evidence(args.word_evidence)
            words = [word_table.get(r.utt_id) for r in records]
        evidence = scorer.evidence_inputs(evidence, refs, audios, spans, words)  # + a GOPT helper's predictions
        print(f"phone evidence for {len(records)} clips in {time.perf_counter() - t0:.1f} s", flush=True)

    # 2. decode once; both readings come from the same pass
    t0 = time.perf_counter()
    readings: list[list[SlotReading]] = scorer.read_many(
        audios, refs, evidence=evidence,
        progress=lambda done, n: print(f"{done}/{n} utterances, {time.perf_counter() - t0:.1f} s", flush=True),
    )
    seconds = time.perf_counter() - t0
    preds: dict[str, list] = {m: [] for m in MODES}
    with open(out / "predictions.jsonl", "w") as f:
        for i, (rec, rd) in enumerate(zip(records, readings)):
            row = {"utt_id": rec.utt_id}
            for m in MODES:
                a = scorer.blended(to_assessment(rec.reference, rd, m, scorer.name), evidence[i] if evidence else None)
                preds[m].append(a)
                row[m] = a.to_dict()
            f.write(json.dumps(row) + "\n")

    # 3. metrics for both readings, markdown + JSON, plots
    labels = [r.labels for r in records]
    device = str(scorer.device) + (f" ({torch.cuda.get_device_name()})" if scorer.device.type == "cuda" else "")
    device += f", {str(scorer.model.dtype).removeprefix('torch.')}"
    result = {"model": scorer.name, "labels": LABEL_SNAPSHOT, "split": args.split, "n": len(records), "decoder": args.decoder,
              "batch_size": batch_size, "device": device, "load_seconds": round(load_seconds, 1),
              "decode_seconds": round(seconds, 1), "history": args.history, "aspects": list(ASPECTS), "shard": args.shard,
              "gopt_blend": blend_record(scorer.blend_weights) if scorer.gopt is not None else None}
    md = [f"# {scorer.name} on {LABEL_SNAPSHOT}, {args.split} split ({len(records)} utterances)\n",
          f"Decoding: {seconds:.1f} s ({args.decoder} decoder, batch {batch_size}, {device}, history {args.history}; "
          f"audio files read in {load_seconds:.1f} s before)\n"]
    for m in MODES:
        res = evaluate(preds[m], labels)
        result[m] = to_dict(res)
        md += [f"\n## {m} scores\n", to_markdown(res)]
        scatter_plots(preds[m], labels, out, f"{scorer.name} ({m})") if m == "expected" else None
    if args.control == "silence":
        control = deaf_control(scorer, audios, refs, labels)
        result["control"] = control
        md += ["\n## deaf control: the same clips with the audio replaced by silence of the same length\n",
               control_markdown(result["expected"], control)]
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    (out / "metrics.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return result


def alignment_features(audio: np.ndarray, reference) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """One clip's (n_phones, F) alignment features (`apa.align`; NaN rows where it failed) and its
    phones' (start, end) seconds."""
    from apa.align import align

    a = align(audio, reference)
    return a.features(), a.phone_times()


def align_in_processes(audios, refs, workers: int) -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """`alignment_features` of every clip over `workers` spawned processes (a fork would copy the
    loaded model and torch's thread pools), in input order: (features per clip, times per clip)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        done = list(pool.map(alignment_features, audios, refs, chunksize=4))
    return [f for f, _ in done], [t for _, t in done]


def blend_record(weights) -> float | dict:
    """The blend weights as metrics.json records them: a float, or {aspect: weight}."""
    from dataclasses import asdict, is_dataclass

    return asdict(weights) if is_dataclass(weights) else weights


def nan_evidence(scorer: AudioLMMScorer, reference) -> np.ndarray:
    """What a failed alignment gives: (n_phones, F) NaN."""
    return np.full((sum(len(p) for _, p in reference), scorer.evidence.n_features), np.nan, np.float32)


def deaf_control(scorer: AudioLMMScorer, audios, refs, labels) -> dict:
    """Expected-value metrics with each clip replaced by silence of its length (no evidence)."""
    silent = [np.zeros_like(a) for a in audios]
    evidence = [nan_evidence(scorer, r) for r in refs] if scorer.evidence is not None else None
    readings = scorer.read_many(silent, refs, evidence=evidence)
    preds = [to_assessment(ref, rd, "expected", scorer.name) for ref, rd in zip(refs, readings)]
    return to_dict(evaluate(preds, labels))


def control_markdown(real: dict, control: dict) -> str:
    """aspect | PCC/SCC with the audio | with silence | share the recording earns (PCC, SCC)."""
    def share(a, b):
        return "n/a" if a is None or b is None or a <= 0 else f"{1 - b / a:.0%}"

    def f(v):
        return "n/a" if v is None else f"{v:.3f}"

    rows = ["| aspect | audio PCC / SCC | silence PCC / SCC | earned by the audio (PCC / SCC) |", "|---|---:|---:|---:|"]
    for a in ASPECTS:
        r, c = real[a], control[a]
        rows.append(f"| {a} | {f(r['pcc'])} / {f(r['scc'])} | {f(c['pcc'])} / {f(c['scc'])} | "
                    f"{share(r['pcc'], c['pcc'])} / {share(r['scc'], c['scc'])} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
