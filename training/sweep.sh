#!/usr/bin/env bash
# Device-side sweep: phone-evidence features for both splits, then several apa-mini configs
# trained in parallel on one GPU, each evaluated on the test split (with the deaf control).
# First round (evidence text / embedding / both): results/evidence-sweep; this second round
# adds score-balanced slot weighting to "both".
# Runs detached (setsid) so short device calls can poll it:
#   bash training/sweep.sh features ; bash training/sweep.sh start ; bash training/sweep.sh wait [seconds]
# Results: /root/results/<name>/{metrics.md,metrics.json,predictions.jsonl} + /root/runs/<name>/adapter.
set -uo pipefail
export PYTHONPATH=/root/site:$PWD HF_HUB_OFFLINE=1 APA_CACHE=/root/cache PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
DATA=/root/stage/speechocean762
FEAT=/root/features
CFG=${CFG:-training/configs/apa-mini-tuned.yaml}
run() {  # name, extra training args...
  local name=$1; shift
  mkdir -p /root/results/$name
  ( python3 -m training.train $CFG --data $DATA --output_dir /root/runs/$name --dataloader_num_workers 3 "$@" \
      > /root/results/$name/train.log 2>&1 \
    && python3 -m training.evaluate --adapter /root/runs/$name/adapter --data $DATA --batch-size 128 \
      --evidence-features $FEAT/test.npz --out /root/results/$name > /root/results/$name/eval.log 2>&1
    echo "exit $?" > /root/results/$name/done ) &
}
ev() { echo --evidence_features $FEAT/train.npz --evidence_mode "$@"; }
case "${1:-}" in
  features)  # both splits, all cores; ~0.5 s of a core per utterance
    mkdir -p $FEAT
    for s in train test; do
      python3 -m training.align_corpus --data $DATA --split $s --workers "$(nproc)" --out $FEAT/$s.npz || exit 1
    done
    ls -la $FEAT ;;
  start)
    setsid bash -c "
      source training/sweep.sh define
      run ev-both-b05 $(ev both) --slot_balance 0.5
      run ev-both-b1 $(ev both) --slot_balance 1.0
      run ev-both-b05-plr $(ev both) --slot_balance 0.5 --projector_lr 1e-3
      wait" > /root/sweep.log 2>&1 < /dev/null &
    sleep 2; echo started ;;
  define) ;;
  wait)
    end=$((SECONDS + ${2:-540}))
    while [ $SECONDS -lt $end ] && [ "$(ls /root/results/*/done 2>/dev/null | wc -l)" -lt "$(ls -d /root/results/*/ | wc -l)" ]; do sleep 10; done
    for d in /root/results/*/; do echo "== $d $(cat $d/done 2>/dev/null)"; tail -c 300 $d/train.log | tr '\r' '\n' | tail -2; tail -3 $d/eval.log 2>/dev/null; done ;;
esac
