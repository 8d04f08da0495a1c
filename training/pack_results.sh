#!/usr/bin/env bash
# Device-side: pack each run's metrics, configs, gzipped predictions and an fp16 copy of
# its adapter (and each other evaluation's metrics and predictions) into $OUT/results.tgz (split into 15 MB parts for the transfer limit).
# SHIP=<run name> keeps that run's adapter in float32 (the one to ship).
set -uo pipefail
cd /root
rm -rf pack && mkdir pack
for d in runs/*/; do
  n=$(basename "$d"); mkdir -p pack/$n/adapter
  cp runs/$n/train_metrics.json runs/$n/adapter/resolved_config.json runs/$n/adapter/adapter_config.json pack/$n/ 2>/dev/null
  cp runs/$n/adapter/adapter_config.json runs/$n/adapter/evidence.json runs/$n/adapter/evidence_projector.safetensors \
     runs/$n/adapter/gopt.json runs/$n/adapter/gopt.safetensors pack/$n/adapter/ 2>/dev/null
  cp results/$n/metrics.md results/$n/metrics.json results/$n/eval.log pack/$n/ 2>/dev/null
  [ -f results/$n/predictions.jsonl ] && gzip -c results/$n/predictions.jsonl > pack/$n/predictions.jsonl.gz
  python3 - "$n" <<'PY'
import sys, torch
from safetensors.torch import load_file, save_file
n = sys.argv[1]
sd = load_file(f"/root/runs/{n}/adapter/adapter_model.safetensors")
import os
if os.environ.get("SHIP") != n:
    sd = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
save_file(sd, f"/root/pack/{n}/adapter/adapter_model.safetensors", metadata={"format": "pt"})
PY
done
for d in results/*/; do  # evaluations without a trained run of their own (e.g. the shipped adapter)
  n=$(basename "$d"); [ -d runs/$n ] && continue
  mkdir -p pack/$n && cp results/$n/metrics.md results/$n/metrics.json results/$n/eval.log pack/$n/ 2>/dev/null
  [ -f results/$n/predictions.jsonl ] && gzip -c results/$n/predictions.jsonl > pack/$n/predictions.jsonl.gz
done
tar czf /root/results.tgz pack && split -b 15M -d /root/results.tgz $OUT/results.tgz.part_
ls -la $OUT
