"""GPU benchmark: naive `generate` vs our decoder, and LoRA training speed.

    python -m bench.gpu_bench --data DIR [--out bench/results] [--skip-7b] [--skip-mini] [--limit N]

Models:
  * qwen2-audio-7b: the Qwen2-Audio-7B-Instruct architecture (training/configs/
    qwen2-audio-7b-config.json) with RANDOM bf16 weights (the real weights are not
    downloadable here); tokenizer and features from apa-mini's processor with 128 mel bins.
  * apa-mini: the assembled base + the shipped adapter (assets/apa-mini-adapter), bf16.
Measures, per model:
  1. latency of one assessment at batch 1 for a 10-word sentence: ours (the fast path, median
     of 5) vs naive = `model.generate` of the full target length, greedy, unconstrained (median of 3);
  2. throughput over the test split (audio decoded before the clock starts): ours = `read_many`
     (clips of similar length decoded together), with LLM forwards, passes and tokens per
     utterance; naive = `generate` at batch 16 on 16 utterances, per utterance;
  3. training: LoRA steps at batch 8 (samples/s, tokens/s, peak memory).
Prints a markdown table and writes it, with the raw numbers, to --out/gpu_bench.{md,json}; rows
of the other model from an earlier run there are kept (run the models in separate calls).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from apa.config import cuda_available

REPO = Path(__file__).resolve().parents[1]
TEN_WORDS = "SOMETIMES I WALK TO THE PARK WITH MY LITTLE BROTHER"


def sync() -> None:
    if cuda_available():
        torch.cuda.synchronize()


def timed(fn, repeat: int = 5) -> tuple[float, object]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeat):
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def load_7b(processor_dir: Path, device: torch.device):
    from transformers import AutoProcessor, Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, WhisperFeatureExtractor

    processor = AutoProcessor.from_pretrained(processor_dir)
    cfg = Qwen2AudioConfig.from_dict(json.loads((REPO / "training/configs/qwen2-audio-7b-config.json").read_text()))
    cfg.audio_token_id = processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    processor.feature_extractor = WhisperFeatureExtractor(feature_size=cfg.audio_config.num_mel_bins)
    torch.set_default_dtype(torch.bfloat16)
    with device:
        model = Qwen2AudioForConditionalGeneration(cfg)
    torch.set_default_dtype(torch.float32)
    return model.eval(), processor


def bench_decode(name, model, processor, records, audios, batch_size, rows, raw):
    from apa.decoding import chat_text, encode_target
    from apa.scorer import AudioLMMScorer, DecodeOptions
    from apa.prompts import build_template, slots

    # 1. latency: a 10-word sentence (the first test record with exactly 10 words, else the first)
    i10 = next((i for i, r in enumerate(records) if len(r.reference) == 10), 0)
    rec, audio = records[i10], audios[i10]
    scorer = AudioLMMScorer(model, processor, name=name, options=DecodeOptions(batch_size=1))
    t_ours, readings = timed(lambda: scorer.read_slots([audio], [rec.reference]))
    n_slots = len(readings[0])
    stats = dict(scorer.stats)
    template = build_template(rec.reference)
    target_ids, _ = encode_target(scorer.pieces, template, ["10"] * len(slots(template)))
    inputs = processor(text=[chat_text(processor, rec.reference)], audio=[audio], sampling_rate=16000, return_tensors="pt").to(model.device)
    inputs["input_features"] = inputs["input_features"].to(model.dtype)
    n_new = len(target_ids)

    def naive():
        return model.generate(**inputs, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False)

    t_naive, _ = timed(naive, repeat=3)
    rows.append(f"| {name} | latency, batch 1, {len(rec.reference)}-word sentence ({n_new} target tokens, {n_slots} slots; "
                f"ours: {stats['passes']} passes, {stats['llm_tokens']} LLM tokens) | {t_naive:.2f} s | {t_ours:.3f} s | {t_naive / t_ours:.1f}x |")
    raw.update({"latency_naive_s": t_naive, "latency_ours_s": t_ours, "target_tokens": n_new, "slots": n_slots, "decoder_stats_b1": stats})

    # 2. throughput: every utterance given, clips of similar length decoded together
    scorer.options = DecodeOptions(batch_size=batch_size)
    total: dict[str, int] = {}

    def add_stats(done: int, n: int) -> None:
        for k, v in scorer.stats.items():
            total[k] = total.get(k, 0) + v

    refs = [r.reference for r in records]
    scorer.read_many(audios[:batch_size], refs[:batch_size])  # warm-up (kernels, allocator)
    total.clear()
    if cuda_available():
        torch.cuda.reset_peak_memory_stats()
    sync()
    t = time.perf_counter()
    scorer.read_many(audios, refs, progress=add_stats)
    sync()
    dt = time.perf_counter() - t
    n = len(records)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda_available() else float("nan")

    # naive: plain generate at batch 16, the longest target of the 16 for all
    sub = list(range(min(16, n)))
    enc = processor(text=[chat_text(processor, records[i].reference) for i in sub], audio=[audios[i] for i in sub],
                    sampling_rate=16000, return_tensors="pt", padding=True).to(model.device)
    enc["input_features"] = enc["input_features"].to(model.dtype)
    longest = max(len(encode_target(scorer.pieces, build_template(records[i].reference), ["10"] * len(slots(build_template(records[i].reference))))[0]) for i in sub)
    processor.tokenizer.padding_side = "left"
    sync()
    t = time.perf_counter()
    model.generate(**enc, max_new_tokens=longest, min_new_tokens=longest, do_sample=False)
    sync()
    dt_naive = time.perf_counter() - t
    naive_rate = len(sub) / dt_naive
    per = {k: total.get(k, 0) / n for k in ("forwards", "passes", "llm_tokens", "padded_tokens")}
    rows.append(
        f"| {name} | throughput, {n} test utterances (ours: batch {batch_size}, {per['passes']:.1f} passes and "
        f"{per['llm_tokens']:.0f} LLM tokens per utterance, {per['padded_tokens']:.0f} with padding, peak {peak:.1f} GiB; "
        f"naive: batch 16, {longest} new tokens) | {naive_rate:.2f} utt/s ({n / naive_rate:.0f} s for {n}) | "
        f"**{n / dt:.1f} utt/s ({dt:.1f} s)** | {n / dt / naive_rate:.0f}x |")
    raw.update({"throughput": {"n": n, "batch_size": batch_size, "seconds": dt, "peak_gib": peak, "per_utterance": per, "stats": total},
                "naive_throughput_b16": {"seconds": dt_naive, "n": len(sub), "new_tokens": longest}})


def bench_train(name, model, processor, records, rows, raw, steps: int = 20, batch: int = 8, checkpointing: bool = False):
    from peft import LoraConfig, get_peft_model

    from apa.sft import SFTCollator, example_from_record

    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    if checkpointing:
        peft_model.gradient_checkpointing_enable()
        peft_model.enable_input_require_grads()
    peft_model.train()
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-4)
    collate = SFTCollator(processor)
    examples = [example_from_record(r) for r in records[: batch * 4]]
    batches = [collate(examples[i : i + batch]) for i in range(0, len(examples), batch)]
    dev = next(model.parameters()).device
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, tokens = [], 0
    for step in range(steps):
        b = {k: v.to(dev) for k, v in batches[step % len(batches)].items()}
        sync()
        t = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = peft_model(**b).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - t)
        tokens += int(b["attention_mask"].sum())
        assert torch.isfinite(loss), "non-finite loss"
    step_s = statistics.median(times[2:])
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
    rows.append(f"| {name} | LoRA training, batch {batch}, {steps} steps{' (grad. checkpointing)' if checkpointing else ''} | | {batch / step_s:.1f} samples/s, {tokens / sum(times):.0f} tokens/s, {step_s:.2f} s/step, peak {peak:.1f} GiB | |")
    raw["train"] = {"step_s": step_s, "peak_gib": peak, "tokens": tokens, "steps": steps, "last_loss": float(loss.detach())}
    peft_model.eval()
    return peft_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="Speechocean762 root")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    ap.add_argument("--skip-7b", action="store_true")
    ap.add_argument("--skip-mini", action="store_true")
    ap.add_argument("--limit", type=int, default=None, help="only the first N test utterances for throughput")
    ap.add_argument("--workers", type=int, default=8, help="threads decoding the audio files")
    ap.add_argument("--device", default=None, help="default: cuda when available (a CPU run is a smoke test)")
    args = ap.parse_args()
    from apa.data import load_split
    from apa.mini import assemble_apa_mini
    from apa.config import pick_device

    dev = pick_device(args.device)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = load_split(args.data, "test")[: args.limit]
    with ThreadPoolExecutor(args.workers) as pool:
        audios = list(pool.map(lambda r: r.audio(), records))
    train_records = load_split(args.data, "train")
    mini_dir = assemble_apa_mini()
    old = json.loads((out / "gpu_bench.json").read_text()) if (out / "gpu_bench.json").exists() else {}
    results = {k: v for k, v in old.items() if isinstance(v, dict) and "rows" in v}  # earlier runs, per model
    if not args.skip_mini:
        from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

        from apa.scorer import AudioLMMScorer

        name, rows, raw = "apa-mini", [], {}
        scorer = AudioLMMScorer.from_pretrained(mini_dir, REPO / "assets" / "apa-mini-adapter", device=dev)
        bench_decode(name, scorer.model, scorer.processor, records, audios, 256, rows, raw)
        print("\n".join(rows), flush=True)
        del scorer
        base = Qwen2AudioForConditionalGeneration.from_pretrained(mini_dir, dtype=torch.float32).to(dev)
        bench_train(name, base, AutoProcessor.from_pretrained(mini_dir), train_records, rows, raw, steps=30)
        del base
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        results[name] = {"rows": rows, "raw": raw, "date": time.strftime("%Y-%m-%d")}
    if not args.skip_7b:
        name, rows, raw = "qwen2-audio-7b (random weights)", [], {}
        model, processor = load_7b(mini_dir, dev)
        peft_model = bench_train(name, model, processor, train_records, rows, raw, steps=20, checkpointing=True)
        print("\n".join(rows), flush=True)
        merged = peft_model.merge_and_unload()
        del peft_model
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        bench_decode(name, merged, processor, records, audios, 64, rows, raw)
        results[name] = {"rows": rows, "raw": raw, "date": time.strftime("%Y-%m-%d")}
    machine = torch.cuda.get_device_name() if dev.type == "cuda" else f"CPU ({platform.processor() or platform.machine()})"
    header = (
        f"GPU benchmark, {time.strftime('%Y-%m-%d')}: {machine}, torch {torch.__version__}, "
        f"transformers {__import__('transformers').__version__}, peft {__import__('peft').__version__}, Python {platform.python_version()}. "
        + "Rows measured: " + ", ".join(f"{k} {v['date']}" for k, v in results.items()) + "\n"
    )
    table = ["| model | what | naive | ours | speed-up |", "|---|---|---:|---:|---:|"]
    for r in results.values():
        table += r["rows"]
    text = header + "\n" + "\n".join(table) + "\n"
    print(text)
    (out / "gpu_bench.md").write_text(text)
    (out / "gpu_bench.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
