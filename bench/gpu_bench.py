"""GPU benchmark: naive `generate` vs our constrained slot decoder, and LoRA training speed.

    python bench/gpu_bench.py --data DIR --out DIR [--skip-7b] [--skip-mini]

Models:
  * qwen2-audio-7b: the Qwen2-Audio-7B-Instruct architecture (training/configs/
    qwen2-audio-7b-config.json) with RANDOM bf16 weights (the real weights are not
    downloadable here); tokenizer and features from apa-mini's processor with 128 mel bins.
  * apa-mini: the assembled base + the shipped adapter (assets/apa-mini-adapter).
Measures, per model: latency of one assessment at batch 1 for a 10-word sentence (median of
5), decode steps and tokens; naive = `model.generate` of the full target length, greedy,
unconstrained; throughput over the test split with batching (apa-mini: all 2,500; 7B: 256);
training: LoRA steps at batch 8 (samples/s, tokens/s, peak memory). Prints a markdown table
and writes it with the raw numbers to --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TEN_WORDS = "SOMETIMES I WALK TO THE PARK WITH MY LITTLE BROTHER"


def sync() -> None:
    if torch.cuda.is_available():
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


def load_7b(processor_dir: Path):
    from transformers import AutoProcessor, Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, WhisperFeatureExtractor

    processor = AutoProcessor.from_pretrained(processor_dir)
    cfg = Qwen2AudioConfig.from_dict(json.loads((REPO / "training/configs/qwen2-audio-7b-config.json").read_text()))
    cfg.audio_token_id = processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    processor.feature_extractor = WhisperFeatureExtractor(feature_size=cfg.audio_config.num_mel_bins)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = Qwen2AudioForConditionalGeneration(cfg)
    torch.set_default_dtype(torch.float32)
    return model.eval(), processor


def bench_decode(name, model, processor, records, batch_sizes, n_throughput, rows, raw):
    from apa.model import AudioLMMScorer, DecodeOptions, chat_text, encode_target
    from apa.prompts import build_template, slots

    # a 10-word sentence: the first test record with exactly 10 words, else the longest short one
    rec = next((r for r in records if len(r.reference) == 10), records[0])
    audio = rec.audio()
    scorer = AudioLMMScorer(model, processor, name=name, options=DecodeOptions(batch_size=1))
    t_ours, readings = timed(lambda: scorer.read_slots([audio], [rec.reference]))
    n_slots = len(readings[0])
    template = build_template(rec.reference)
    target_ids, _ = encode_target(scorer.pieces, template, ["10"] * len(slots(template)))
    stats = getattr(scorer, "last_stats", {}) or {}

    # naive: plain generate of the full target, unconstrained greedy
    inputs = processor(text=[chat_text(processor, rec.reference)], audio=[audio], sampling_rate=16000, return_tensors="pt").to(model.device)
    inputs["input_features"] = inputs["input_features"].to(model.dtype)
    n_new = len(target_ids)

    def naive():
        return model.generate(**inputs, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False)

    t_naive, _ = timed(naive, repeat=3)
    rows.append(f"| {name} | latency, batch 1, {len(rec.reference)}-word sentence ({n_new} target tokens, {n_slots} slots) | {t_naive:.2f} s | {t_ours:.3f} s | {t_naive / t_ours:.1f}x |")
    raw.setdefault(name, {}).update({"latency_naive_s": t_naive, "latency_ours_s": t_ours, "target_tokens": n_new, "slots": n_slots, "decoder_stats": stats})

    # throughput with batching
    subset = records[:n_throughput]
    audios = [r.audio() for r in subset]
    refs = [r.reference for r in subset]
    for bs in batch_sizes:
        scorer.options = DecodeOptions(batch_size=bs, fast=False)  # the batched decoder
        sync()
        t = time.perf_counter()
        scorer.score(audios, refs)
        sync()
        dt = time.perf_counter() - t
        rows.append(f"| {name} | throughput, {len(subset)} test utterances, batch {bs} | | {len(subset) / dt:.1f} utt/s ({dt:.1f} s) | |")
        raw[name][f"throughput_b{bs}"] = {"n": len(subset), "seconds": dt}
    # naive throughput on a small batch, extrapolated per utterance
    sub = subset[:16]
    enc = processor(text=[chat_text(processor, r.reference) for r in sub], audio=[r.audio() for r in sub], sampling_rate=16000, return_tensors="pt", padding=True)
    enc = enc.to(model.device)
    enc["input_features"] = enc["input_features"].to(model.dtype)
    longest = max(len(encode_target(scorer.pieces, build_template(r.reference), ["10"] * len(slots(build_template(r.reference))))[0]) for r in sub)
    processor.tokenizer.padding_side = "left"
    sync()
    t = time.perf_counter()
    model.generate(**enc, max_new_tokens=longest, min_new_tokens=longest, do_sample=False)
    sync()
    dt = time.perf_counter() - t
    rows.append(f"| {name} | naive generate throughput, batch 16 ({longest} new tokens) | {16 / dt:.1f} utt/s | | |")
    raw[name]["naive_throughput_b16"] = {"seconds": dt, "new_tokens": longest}


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
    raw.setdefault(name, {})["train"] = {"step_s": step_s, "peak_gib": peak, "tokens": tokens, "steps": steps, "last_loss": float(loss.detach())}
    peft_model.eval()
    return peft_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--skip-7b", action="store_true")
    ap.add_argument("--skip-mini", action="store_true")
    args = ap.parse_args()
    from apa.data import load_split
    from apa.mini import assemble_apa_mini

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = load_split(args.data, "test")
    mini_dir = assemble_apa_mini()
    rows = ["| model | what | naive | ours | speed-up |", "|---|---|---:|---:|---:|"]
    raw: dict = {}
    if not args.skip_mini:
        from apa.model import AudioLMMScorer

        scorer = AudioLMMScorer.from_pretrained(mini_dir, REPO / "assets" / "apa-mini-adapter", device="cuda")
        bench_decode("apa-mini", scorer.model, scorer.processor, records, [128], 512, rows, raw)
        print("\n".join(rows), flush=True)
        from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

        base = Qwen2AudioForConditionalGeneration.from_pretrained(mini_dir, dtype=torch.float32).cuda()
        bench_train("apa-mini", base, AutoProcessor.from_pretrained(mini_dir), load_split(args.data, "train"), rows, raw, steps=30)
        del scorer, base
        torch.cuda.empty_cache()
    if not args.skip_7b:
        model, processor = load_7b(mini_dir)
        peft_model = bench_train("qwen2-audio-7b (random weights)", model, processor, load_split(args.data, "train"), rows, raw, steps=20, checkpointing=True)
        merged = peft_model.merge_and_unload()
        bench_decode("qwen2-audio-7b (random weights)", merged, processor, records, [64], 256, rows, raw)
    header = (
        f"GPU benchmark, {time.strftime('%Y-%m-%d')}: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
        f"transformers {__import__('transformers').__version__}, peft {__import__('peft').__version__}, Python {platform.python_version()}\n"
    )
    table = header + "\n" + "\n".join(rows) + "\n"
    print(table)
    (out / "gpu_bench.md").write_text(table)
    (out / "gpu_bench.json").write_text(json.dumps(raw, indent=2, default=str))


if __name__ == "__main__":
    main()
