#!/usr/bin/env bash
# Device-side sweep: train several apa-mini configs in parallel on one GPU, then evaluate
# each on the test split. Runs detached (setsid) so short device calls can poll it:
#   bash training/sweep.sh start   ;   bash training/sweep.sh wait [seconds]
# Results: /root/results/<name>/{metrics.md,metrics.json,predictions.jsonl} + adapter.
set -uo pipefail
export PYTHONPATH=/root/site:$PWD HF_HUB_OFFLINE=1 APA_CACHE=/root/cache PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
DATA=/root/stage/speechocean762
CFG=training/configs/apa-mini.yaml
run() {  # name, extra training args...
  local name=$1; shift
  mkdir -p /root/results/$name
  ( python3 -m training.train $CFG --data $DATA --output_dir /root/runs/$name --dataloader_num_workers 5 "$@" \
      > /root/results/$name/train.log 2>&1 \
    && python3 -m training.evaluate --adapter /root/runs/$name/adapter --data $DATA --batch-size 128 \
      --out /root/results/$name > /root/results/$name/eval.log 2>&1
    echo "exit $?" > /root/results/$name/done ) &
}
case "${1:-}" in
  start)
    setsid bash -c "
      source training/sweep.sh define
      run paper
      run tuned-u2 --lora_r 16 --lora_alpha 32 --learning_rate 3e-4 --projector_lr 5e-4 --unfreeze_audio_layers 2
      run tuned-u6 --lora_r 16 --lora_alpha 32 --learning_rate 3e-4 --projector_lr 5e-4 --unfreeze_audio_layers 6
      wait" > /root/sweep.log 2>&1 < /dev/null &
    sleep 2; echo started ;;
  define) ;;
  wait)
    end=$((SECONDS + ${2:-540}))
    while [ $SECONDS -lt $end ] && [ "$(ls /root/results/*/done 2>/dev/null | wc -l)" -lt "$(ls -d /root/results/*/ | wc -l)" ]; do sleep 10; done
    for d in /root/results/*/; do echo "== $d $(cat $d/done 2>/dev/null)"; tail -c 300 $d/train.log | tr '\r' '\n' | tail -2; tail -3 $d/eval.log 2>/dev/null; done ;;
esac
