#!/usr/bin/env bash
# Device-side sweep: phone-evidence features for both splits, then several apa-mini configs
# trained in parallel on one GPU, each evaluated on the test split (with the deaf control).
# Round 1 (evidence text / embedding / both): results/evidence-sweep; round 2 added score-balanced
# slot weighting to "both" (apa-mini v2); this round 3: mass-preserving weighting (sparing the
# sentence slots), a projector with context over the utterance's phones and an auxiliary
# phone-label loss, the shipped v2 on the whole test split, and the 7B architecture (random
# weights) trained with the same evidence; round 4: the GOPT helper's cross-fitted predictions
# as extra evidence columns (apa.gopt; fitted with training.fit_gopt, carried to $GOPT), read
# as the prompt's match level or not, and for more epochs; round 5 (start5): adapters small
# enough for git, saved in fp16 before they are evaluated (as shipped), scored unblended
# (--gopt-blend 0: the blend is applied after, training.merge_shards), and one trained without
# the helper's fold 0 and scored on it, for training.fit_blend ($HELDOUT: training.fit_blend ids);
# round 6 (start6): the same with a helper that also reads the audio tower (apa-mini v6);
# round 7 (start7): v6's recipe without the helper's folds 1 and 2 ($HELDOUT1, $HELDOUT2), each
# scored on its fold with the greedy and the helper's history (DecodeOptions.history), and the
# shipped adapter on the test split with each history, unblended; round 8 (start8): v6's recipe on
# a helper that also reads Whisper's forced reading of each word ($GOPT: fit_gopt --word-evidence;
# apa-mini v7), with the three held-out folds for its blend weights, and the test split read with
# the split's word evidence from $WORDS (training.word_evidence), unblended.
# Evaluations in float32.
# Runs detached (setsid) so short device calls can poll it:
#   bash training/sweep.sh features ; bash training/sweep.sh start ; bash training/sweep.sh wait [seconds]
# Results: /root/results/<name>/{metrics.md,metrics.json,predictions.jsonl} + /root/runs/<name>/adapter.
set -uo pipefail
export PYTHONPATH=/root/site:$PWD HF_HUB_OFFLINE=1 APA_CACHE=/root/cache PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
DATA=/root/stage/speechocean762
FEAT=/root/features
GOPT=/root/gopt
HELDOUT=/root/heldout.txt
HELDOUT1=/root/heldout1.txt
HELDOUT2=/root/heldout2.txt
WORDS=/root/words
GOPT_TRAIN="--evidence_features $FEAT/train.npz --evidence_gopt $GOPT"  # training on the helper's out-of-fold columns
FOLD_EVAL="--gopt-blend 0 --split train --evidence-features $FEAT/train.npz --evidence-oof $GOPT --control none"  # a held-out fold, unblended
EVAL=${EVAL:-}
CFG=${CFG:-training/configs/apa-mini-tuned.yaml}
half() {  # an adapter's weights to fp16 in place (the precision it ships in)
  python3 -c "import sys, torch; from safetensors.torch import load_file, save_file; p = sys.argv[1]
save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in load_file(p).items()}, p, metadata={'format': 'pt'})" \
    /root/runs/$1/adapter/adapter_model.safetensors
}
run() {  # name, extra training args... ($EVAL: extra evaluation args; $HALF=1: fp16 adapter first)
  local name=$1; shift
  mkdir -p /root/results/$name
  ( python3 -m training.train $CFG --data $DATA --output_dir /root/runs/$name --dataloader_num_workers 3 "$@" \
      > /root/results/$name/train.log 2>&1 \
    && { [ -z "${HALF:-}" ] || half $name; } \
    && python3 -m training.evaluate --adapter /root/runs/$name/adapter --data $DATA --batch-size 128 \
      --dtype float32 --evidence-features $FEAT/test.npz --out /root/results/$name $EVAL > /root/results/$name/eval.log 2>&1
    echo "exit $?" > /root/results/$name/done ) &
}
ev() { echo --evidence_features $FEAT/train.npz --evidence_mode "$@"; }
shipped() {  # the shipped adapter on the whole test split (float32, deaf control)
  mkdir -p /root/results/$1
  ( python3 -m training.evaluate --data $DATA --batch-size 128 --dtype float32 --evidence-features $FEAT/test.npz \
      --out /root/results/$1 > /root/results/$1/eval.log 2>&1; echo "exit $?" > /root/results/$1/done ) &
}
q7b() {  # Qwen2-Audio-7B architecture, random bf16 weights, the paper's LoRA + the same evidence: 20 steps
  mkdir -p /root/results/q7b
  ( python3 -m training.train training/configs/qwen2-audio-7b.yaml --model apa-mini --random_init True \
      --config_json training/configs/qwen2-audio-7b-config.json --model_dtype bfloat16 --data $DATA \
      --output_dir /root/runs7b/q7b --max_steps 20 --logging_steps 5 --save_strategy no --dataloader_num_workers 2 \
      $(ev both) --evidence_context_layers 2 --evidence_aux_weight 10 > /root/results/q7b/train.log 2>&1
    echo "exit $?" > /root/results/q7b/done ) &
}
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
      CFG=training/configs/apa-mini-v3.yaml
      gopt='--evidence_features $FEAT/train.npz --evidence_gopt $GOPT'
      run v4-gopt \$gopt --evidence_level pred_phone
      run v4-gopt-lpp \$gopt --evidence_level lpp
      run v4-gopt-e5 \$gopt --evidence_level pred_phone --num_train_epochs 5
      wait" > /root/sweep.log 2>&1 < /dev/null &
    sleep 2; echo started ;;
  start5)  # round 5: adapters small enough for git (LoRA rank 6 / 8, encoder frozen), same evidence
    setsid bash -c "
      source training/sweep.sh define
      CFG=training/configs/apa-mini-v5-small.yaml
      gopt='--evidence_features $FEAT/train.npz --evidence_gopt $GOPT'
      export HALF=1 EVAL='--gopt-blend 0'
      run v5-small-r6 \$gopt
      run v5-small-r8 \$gopt --lora_r 8 --lora_alpha 16
      EVAL='--gopt-blend 0 --split train --ids $HELDOUT --evidence-features $FEAT/train.npz --evidence-oof $GOPT --control none' \
        run v5-small-r6-f0 \$gopt --exclude_ids $HELDOUT
      wait" > /root/sweep.log 2>&1 < /dev/null &
    sleep 2; echo started ;;
  start6)  # round 6: the helper reads the audio tower too ($GOPT: fit_gopt --tower-states), v5's recipe otherwise
    setsid bash -c "
      source training/sweep.sh define
      CFG=training/configs/apa-mini-v6.yaml
      gopt='--evidence_features $FEAT/train.npz --evidence_gopt $GOPT'
      export HALF=1 EVAL='--gopt-blend 0'
      run v6 \$gopt
      run v6-e4 \$gopt --num_train_epochs 4
      EVAL='--gopt-blend 0 --split train --ids $HELDOUT --evidence-features $FEAT/train.npz --evidence-oof $GOPT --control none' \
        run v6-f0 \$gopt --exclude_ids $HELDOUT
      wait" > /root/sweep.log 2>&1 < /dev/null &
    sleep 2; echo started ;;
  start7)  # round 7: two more held-out folds for the blend weights; the slots' history
    setsid bash -c "
      source training/sweep.sh define
      CFG=training/configs/apa-mini-v6.yaml gopt=\$GOPT_TRAIN fold=\$FOLD_EVAL HALF=1
      export HALF
      EVAL=\"\$fold --ids $HELDOUT1 --history greedy\" run v6-f1 \$gopt --exclude_ids $HELDOUT1
      EVAL=\"\$fold --ids $HELDOUT2 --history greedy\" run v6-f2 \$gopt --exclude_ids $HELDOUT2
      wait  # (beside two trainings, the test split's tower states ran out of GPU memory)
      for h in greedy top helper; do
        mkdir -p /root/results/test-\$h
        python3 -m training.evaluate --data $DATA --batch-size 128 --dtype float32 --evidence-features $FEAT/test.npz \
          --gopt-blend 0 --control none --history \$h --out /root/results/test-\$h > /root/results/test-\$h/eval.log 2>&1
        echo \"exit \$?\" > /root/results/test-\$h/done
      done
      for f in 1 2; do
        mkdir -p /root/results/v6-f\$f-helper
        python3 -m training.evaluate --adapter /root/runs/v6-f\$f/adapter --data $DATA --batch-size 128 --dtype float32 \
          \$fold --ids /root/heldout\$f.txt --history helper --out /root/results/v6-f\$f-helper > /root/results/v6-f\$f-helper/eval.log 2>&1
        echo \"exit \$?\" > /root/results/v6-f\$f-helper/done
      done" > /root/sweep.log 2>&1 < /dev/null &
    sleep 2; echo started ;;
  start8)  # round 8: apa-mini v7 (the helper reads Whisper's word evidence) and its three held-out folds
    setsid bash -c "
      source training/sweep.sh define
      CFG=training/configs/apa-mini-v7.yaml gopt=\$GOPT_TRAIN fold=\$FOLD_EVAL HALF=1
      export HALF
      EVAL=\"\$fold --ids $HELDOUT\" run v7-f0 \$gopt --exclude_ids $HELDOUT
      EVAL=\"\$fold --ids $HELDOUT1\" run v7-f1 \$gopt --exclude_ids $HELDOUT1
      EVAL=\"\$fold --ids $HELDOUT2\" run v7-f2 \$gopt --exclude_ids $HELDOUT2
      mkdir -p /root/results/v7
      ( python3 -m training.train \$CFG --data $DATA --output_dir /root/runs/v7 --dataloader_num_workers 3 \$gopt \
          > /root/results/v7/train.log 2>&1 && half v7 ) &
      wait  # the test split's tower states are computed after the trainings (memory)
      python3 -m training.evaluate --adapter /root/runs/v7/adapter --data $DATA --batch-size 128 --dtype float32 \
        --evidence-features $FEAT/test.npz --word-evidence $WORDS/test.npz --gopt-blend 0 --control none \
        --out /root/results/v7 > /root/results/v7/eval.log 2>&1
      echo \"exit \$?\" > /root/results/v7/done" > /root/sweep.log 2>&1 < /dev/null &
    sleep 2; echo started ;;
  define) ;;
  wait)
    end=$((SECONDS + ${2:-540}))
    while [ $SECONDS -lt $end ] && [ "$(ls /root/results/*/done 2>/dev/null | wc -l)" -lt "$(ls -d /root/results/*/ | wc -l)" ]; do sleep 10; done
    for d in /root/results/*/; do echo "== $d $(cat $d/done 2>/dev/null)"; tail -c 300 $d/train.log | tr '\r' '\n' | tail -2; tail -3 $d/eval.log 2>/dev/null; done ;;
esac
