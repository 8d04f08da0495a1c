"""LoRA SFT of a Qwen2Audio-class model on Speechocean762 (the paper's recipe).

    python -m training.train training/configs/apa-mini.yaml [--num_train_epochs 4 ...]
    torchrun --nproc_per_node 2 -m training.train training/configs/apa-mini.yaml   # DDP
    accelerate launch -m training.train training/configs/qwen2-audio-7b.yaml      # FSDP etc.

The same script runs on one CPU, one GPU or many (transformers' Trainer on accelerate).
Output: a standard PEFT adapter (LoRA + `modules_to_save`, e.g. the projector), the
processor, and `resolved_config.json` next to every checkpoint. `--resume True` continues
from the last checkpoint in output_dir.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser, TrainingArguments

from apa.config import corpus_dir, cuda_available

LLM_LINEAR = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"


@dataclass
class ModelArguments:
    model: str = field(default="apa-mini", metadata={"help": "'apa-mini', a Hub id or a local dir"})
    random_init: bool = field(default=False, metadata={"help": "random weights from the model's config (benchmarks)"})
    config_json: str | None = field(default=None, metadata={"help": "config.json for --random_init (no Hub access)"})
    processor: str | None = field(default=None, metadata={"help": "processor dir (default: the model's)"})
    unfreeze_audio_layers: int = field(default=0, metadata={"help": "train the top N audio-tower layers fully"})
    model_dtype: str = field(default="auto", metadata={"help": "weights dtype: float32, bfloat16, or auto (float32 for apa-mini; bf16 autocast still applies)"})
    projector_lr: float | None = field(default=None, metadata={"help": "learning rate of the fully trained modules (default: learning_rate)"})


@dataclass
class DataArguments:
    data: str = field(default="", metadata={"help": "Speechocean762 root (Kaldi layout) or parquet dir / Hub id"})
    train_split: str = "train"
    max_train_samples: int | None = None
    exclude_ids: str = field(default="", metadata={"help": "file of utterance ids (one per line) left out of training, e.g. a held-out fold (training.fit_blend ids)"})
    evidence_features: str = field(default="", metadata={"help": "phone-evidence features of the split (training.align_corpus output)"})
    evidence_mode: str = field(default="", metadata={"help": "how the model takes the evidence: text, embedding or both (apa.evidence)"})
    slot_balance: float = field(default=0.0, metadata={"help": "loss weight of phone/word slots by label rarity: (top count / count) ** this (0: off)"})
    slot_weight_cap: float = field(default=8.0, metadata={"help": "largest slot loss weight"})
    slot_balance_mass: bool = field(default=False, metadata={"help": "keep each balanced kind's total loss weight (spares the sentence slots)"})
    evidence_context_layers: int = field(default=0, metadata={"help": "transformer layers over the utterance's phones in the evidence projector"})
    evidence_aux_weight: float = field(default=0.0, metadata={"help": "weight of the projector's auxiliary phone-label loss (0: off)"})
    evidence_gopt: str = field(default="", metadata={"help": "training.fit_gopt output dir: its out-of-fold predictions join the evidence (apa.gopt)"})
    evidence_level: str = field(default="lpp", metadata={"help": "evidence column bucketed into the prompt's match level (e.g. pred_phone with --evidence_gopt)"})


@dataclass
class LoraArguments:
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target: str = LLM_LINEAR
    modules_to_save: list[str] = field(default_factory=list)
    resume: bool = False


def parse_args(argv: list[str]) -> tuple[ModelArguments, DataArguments, LoraArguments, TrainingArguments]:
    """A YAML config first (optional), then --key value overrides."""
    args: list[str] = []
    if argv and argv[0].endswith((".yaml", ".yml")):
        for k, v in yaml.safe_load(Path(argv[0]).read_text()).items():
            if isinstance(v, list):
                args += [f"--{k}", *map(str, v)] if v else []
            else:
                args += [f"--{k}", str(v)]
        argv = argv[1:]
    parser = HfArgumentParser((ModelArguments, DataArguments, LoraArguments, TrainingArguments))
    return parser.parse_args_into_dataclasses(args=args + argv)


def load_base(margs: ModelArguments, dtype):
    """(model, processor) for 'apa-mini', a Hub id / dir, or random weights from a config."""
    from transformers import AutoProcessor, Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    if margs.model == "apa-mini":
        from apa.mini import assemble_apa_mini

        path = str(assemble_apa_mini())
    else:
        path = margs.model
    processor = AutoProcessor.from_pretrained(margs.processor or path)
    if margs.random_init:
        import torch
        from transformers import WhisperFeatureExtractor

        cfg = Qwen2AudioConfig.from_dict(json.loads(Path(margs.config_json).read_text())) if margs.config_json else Qwen2AudioConfig.from_pretrained(path)
        # Benchmark path: the real architecture with this processor's tokenizer ids and mel bins.
        cfg.audio_token_id = processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
        if processor.feature_extractor.feature_size != cfg.audio_config.num_mel_bins:
            processor.feature_extractor = WhisperFeatureExtractor(feature_size=cfg.audio_config.num_mel_bins)
        device = "cuda" if cuda_available() else "cpu"
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):  # initialise 8B random weights on the GPU, not the CPU
                model = Qwen2AudioForConditionalGeneration(cfg)
        finally:
            torch.set_default_dtype(default)
    else:
        model = Qwen2AudioForConditionalGeneration.from_pretrained(path, dtype=dtype)
    return model, processor


def build_peft_model(model, largs: LoraArguments, unfreeze_audio_layers: int = 0):
    """LoRA on the LLM's linear layers; `modules_to_save` (+ top audio layers) trained fully."""
    from peft import LoraConfig, get_peft_model

    to_save = list(largs.modules_to_save)
    n = len(model.model.audio_tower.layers)
    to_save += [f"audio_tower.layers.{i}" for i in range(n - unfreeze_audio_layers, n)]
    if unfreeze_audio_layers:
        to_save.append("audio_tower.layer_norm")
    config = LoraConfig(
        r=largs.lora_r,
        lora_alpha=largs.lora_alpha,
        lora_dropout=largs.lora_dropout,
        target_modules=largs.lora_target,
        modules_to_save=to_save or None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def make_optimizer(model, targs: TrainingArguments, full_lr: float):
    """AdamW with two groups: LoRA weights at learning_rate, modules_to_save at full_lr."""
    import torch

    lora, full = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (lora if "lora_" in name else full).append(p)
    groups = [{"params": lora, "lr": targs.learning_rate}, {"params": full, "lr": full_lr}]
    return torch.optim.AdamW(groups, lr=targs.learning_rate, weight_decay=targs.weight_decay, betas=(targs.adam_beta1, targs.adam_beta2))


def load_training_data(dargs: DataArguments):
    """(SFT dataset, evidence config or None, slot weights or None) for the training split."""
    from apa.data import load_split
    from apa.evidence import fit_config
    from apa.prompts import build_template, slots
    from apa.sft import SFTDataset, balanced_slot_weights, example_values

    records = load_split(dargs.data, dargs.train_split)
    if dargs.exclude_ids:
        held_out = set(Path(dargs.exclude_ids).read_text().split())
        records = [r for r in records if r.utt_id not in held_out]
    if dargs.max_train_samples:
        records = records[: dargs.max_train_samples]
    evidence = ev_config = None
    if dargs.evidence_features:
        from apa.align import load_corpus_features, load_corpus_meta

        evidence = {u: c.features for u, c in load_corpus_features(dargs.evidence_features).items()}
        names = tuple(load_corpus_meta(dargs.evidence_features)["feature_names"])
        if dargs.evidence_gopt:
            evidence, names = with_out_of_fold(evidence, names, dargs.evidence_gopt)
        ev_config = fit_config([evidence[r.utt_id] for r in records if r.utt_id in evidence], names,
                               dargs.evidence_mode or "both", level_feature=names.index(dargs.evidence_level),
                               context_layers=dargs.evidence_context_layers, aux_weight=dargs.evidence_aux_weight)
    dataset = SFTDataset(records, evidence, ev_config.n_features if ev_config else 0)
    slot_weights = None
    if dargs.slot_balance > 0:
        kinds = [[s.kind for s in slots(build_template(r.reference))] for r in records]
        slot_weights = balanced_slot_weights([example_values(r) for r in records], kinds, dargs.slot_balance, dargs.slot_weight_cap,
                                            preserve_mass=dargs.slot_balance_mass)
    return dataset, ev_config, slot_weights


def check_frozen_tower(gopt_dir: str, unfreeze_audio_layers: int) -> None:
    """A helper that reads the audio tower was fitted on the base model's states: training the
    tower would feed it other ones at inference."""
    from apa.gopt import GOPTConfig

    config = GOPTConfig.load(gopt_dir)
    if config is not None and config.tower_layers and unfreeze_audio_layers > 0:
        raise ValueError(f"{gopt_dir}: its helper reads the audio tower, which --unfreeze_audio_layers would change")


def with_out_of_fold(evidence: dict, names: tuple[str, ...], gopt_dir: str) -> tuple[dict, tuple[str, ...]]:
    """The alignment features with the GOPT helper's out-of-fold predictions appended
    (NaN columns for an utterance it has none for), and the extended column names."""
    import numpy as np

    from apa.gopt import OUTPUT_NAMES, GOPTConfig
    from training.fit_gopt import load_oof

    config = GOPTConfig.load(gopt_dir)
    if config is None or config.feature_names != names:
        raise ValueError(f"{gopt_dir}: no GOPT helper fitted on these features")
    oof = load_oof(gopt_dir)
    k = len(OUTPUT_NAMES)
    out = {u: np.concatenate([f, oof.get(u, np.full((len(f), k), np.nan, np.float32))], axis=1) for u, f in evidence.items()}
    return out, names + OUTPUT_NAMES


def main(argv: list[str] | None = None) -> None:
    import torch
    from transformers import set_seed

    from apa.evidence import EvidenceProjector
    from apa.sft import EvidenceHook, EvidenceTrainer, SFTCollator
    from apa.mini import record_adapter_base

    # 1. arguments and seed
    margs, dargs, largs, targs = parse_args(sys.argv[1:] if argv is None else argv)
    set_seed(targs.seed)
    dargs.data = str(corpus_dir(dargs.data))
    if not cuda_available():  # bf16 autocast on CPU is slow and lossy; keep fp32
        targs.bf16 = False
    # Small models keep fp32 master weights (bf16 autocast does the maths): bf16 weights would
    # round away lr-1e-4 updates. The 7B loads in bf16 to fit; PEFT keeps its adapters in fp32.
    if margs.model_dtype == "auto":
        dtype = torch.bfloat16 if targs.bf16 and margs.model != "apa-mini" else torch.float32
    else:
        dtype = getattr(torch, margs.model_dtype)

    # 2. data
    if dargs.evidence_gopt:
        check_frozen_tower(dargs.evidence_gopt, margs.unfreeze_audio_layers)
    dataset, ev_config, slot_weights = load_training_data(dargs)

    # 3. model + LoRA
    model, processor = load_base(margs, dtype)
    model = build_peft_model(model, largs, margs.unfreeze_audio_layers)
    hook = None
    if ev_config is not None and ev_config.uses_embedding:
        # trained fully beside the LoRA (a submodule of the PEFT model, so in the optimizer); saved apart
        model.evidence_projector = EvidenceProjector(ev_config, model.config.text_config.hidden_size)
        hook = EvidenceHook(model, model.evidence_projector)
    if targs.gradient_checkpointing:
        model.enable_input_require_grads()
    model.print_trainable_parameters()

    # 4. resolved config next to the checkpoints
    out = Path(targs.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    resolved = {"model": asdict(margs), "data": asdict(dargs), "lora": asdict(largs), "training": targs.to_dict(), "n_train": len(dataset),
                "evidence": asdict(ev_config) if ev_config else None, "slot_weights": slot_weights}
    (out / "resolved_config.json").write_text(json.dumps(resolved, indent=2, default=str))

    # 5. train (fully trained modules may get their own learning rate: the projector starts random)
    targs.remove_unused_columns = False
    optimizers = (make_optimizer(model, targs, margs.projector_lr), None) if margs.projector_lr else (None, None)
    trainer = EvidenceTrainer(model=model, args=targs, train_dataset=dataset, data_collator=SFTCollator(processor, ev_config, slot_weights),
                              optimizers=optimizers, evidence_hook=hook,
                              aux_weight=ev_config.aux_weight if ev_config is not None else 0.0)
    has_ckpt = any(out.glob("checkpoint-*"))
    result = trainer.train(resume_from_checkpoint=bool(largs.resume and has_ckpt))

    # 6. save adapter (standard PEFT format), processor and metrics
    if trainer.is_world_process_zero():
        model.save_pretrained(out / "adapter")
        record_adapter_base(out / "adapter", model.config._name_or_path, model)  # the base it was trained on
        processor.save_pretrained(out / "adapter")
        if ev_config is not None:
            ev_config.save(out / "adapter")
            if hook is not None:
                model.evidence_projector.save(out / "adapter")
            if dargs.evidence_gopt:  # the fold models the adapter reads at inference (apa.gopt)
                from apa.gopt import GOPTEnsemble

                GOPTEnsemble.load(dargs.evidence_gopt).save(out / "adapter")
        (out / "adapter" / "resolved_config.json").write_text(json.dumps(resolved, indent=2, default=str))
        metrics = dict(result.metrics)
        (out / "train_metrics.json").write_text(json.dumps(metrics, indent=2))
        print(json.dumps(metrics))


if __name__ == "__main__":
    main()
