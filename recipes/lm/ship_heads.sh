#!/usr/bin/env bash
# Reproduce the shipped SmolLM2 heads (src/blockwise/assets/smollm2-135m-heads.safetensors) end to end:
#   0. set-up: English text + the model (recipes/lm/00_setup.sh)
#   1. self-distillation data, three prompt sets (recipes/lm/01_generate_data.py):
#        text  -> data/lm/distill        173 shards: 0-49 float32 (2 threads), 50-172 bfloat16 (1 thread)
#        chat  -> data/lm/distill_chat    97 shards (all 2,335 prompts), bfloat16
#        chat2 -> data/lm/distill_chat2  159 shards (all 3,833 prompts), bfloat16
#   2. four chained head-training runs (recipes/lm/02_train_heads.py), each --init from the one before:
#        runs/lm/heads-chain-trial  12 min, text shards 0-123
#        runs/lm/heads-chain-768    30 min, text (173 shards)
#        runs/lm/heads-chain-chat   25 min, text + chat
#        runs/lm/heads-chain-chat2  28 min, text + chat + chat2, proposals over the 4,096 most frequent answer tokens
#   3. copy the last run's heads to the assets folder.
#
# Expected duration: about 4.5 hours on the 2 shared cores (with AVX512-BF16) the shipped heads were made on:
# data ~2.7 h (text 50 + 54 min, chat 21 min, chat2 35 min), training ~1.8 h (12 + 30 + 27.5 + 31 min plus loading).
#
# Resumable: stop it any time and rerun. A data set whose shards all exist is skipped (01 also skips each shard that
# exists); a training run whose heads.safetensors exists is skipped, an unfinished one resumes from its checkpoint.pt.
# The training flags are the recorded ones. Training budgets are wall time (the schedule's length is the measured speed
# times --minutes), so on another machine the runs take other step counts: the same recipe, not the same bits.
#
#     bash recipes/lm/ship_heads.sh                       # PYTHON=.venv/bin/python bash ... for another interpreter
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE
PY=${PYTHON:-python}

shards() {  # how many shard files FOLDER holds (01_generate_data.py writes them in order: shard_00000, 00001, ...)
  local n=0 f
  for f in "$1"/shard_*.safetensors; do
    if [ -e "$f" ]; then n=$((n + 1)); fi
  done
  echo "$n"
}

# generate FOLDER SHARDS ARGS...: 01_generate_data.py until shards 0..SHARDS-1 exist in FOLDER (no time limit)
generate() {
  local out=$1 want=$2
  shift 2
  if [ "$(shards "$out")" -ge "$want" ]; then
    echo "== $out: $want shards exist, skipped"
    return
  fi
  echo "== $out: generating up to $want shards"
  "$PY" recipes/lm/01_generate_data.py --out "$out" --max-shards "$want" --minutes 100000 "$@"
  if [ "$(shards "$out")" -lt "$want" ]; then
    echo "$out has $(shards "$out") shards, not $want" >&2
    exit 1
  fi
}

# train RUN ARGS...: 02_train_heads.py into RUN unless its heads exist (a rerun resumes from RUN/checkpoint.pt)
train() {
  local run=$1
  shift
  if [ -f "$run/heads.safetensors" ]; then
    echo "== $run: heads exist, skipped"
    return
  fi
  echo "== $run: training"
  "$PY" recipes/lm/02_train_heads.py --run "$run" "$@"
}

echo "== set-up"
bash recipes/lm/00_setup.sh

# 1. data. The text set was made as --minutes 50 in float32 (50 shards), then --dtype bfloat16 --threads 1 for 35 + 19
# minutes (173 shards); shard counts make it the same set whatever the machine's speed.
generate data/lm/distill 50
generate data/lm/distill 173 --dtype bfloat16 --threads 1
generate data/lm/distill_chat 97 --prompt-set chat --dtype bfloat16 --threads 2
generate data/lm/distill_chat2 159 --prompt-set chat2 --dtype bfloat16 --threads 2

# 2. heads. Each later run was recorded as the first run's flags with the ones it names changed; all four are written
# out in full here. The first run saw the 124 text shards that existed when it started: its shard list is fixed first
# (02_train_heads.py keeps the list of a run folder's shards.json).
CHAIN=(--kind chain --num-heads 6 --d-hidden 768 --bf16 --weight-decay 0.01)
mkdir -p runs/lm/heads-chain-trial
if [ ! -f runs/lm/heads-chain-trial/shards.json ]; then
  "$PY" -c 'import json, sys; print(json.dumps([f"data/lm/distill/shard_{i:05d}.safetensors" for i in range(124)]))' \
    > runs/lm/heads-chain-trial/shards.json
fi
train runs/lm/heads-chain-trial "${CHAIN[@]}" --minutes 12 --eval-every 1000
train runs/lm/heads-chain-768 "${CHAIN[@]}" --minutes 30 --threads 2 --eval-every 2000 \
  --init runs/lm/heads-chain-trial/heads.safetensors
# recorded with --ship too, which only also wrote these intermediate heads to the assets folder (step 3 copies the last)
train runs/lm/heads-chain-chat "${CHAIN[@]}" --data data/lm/distill data/lm/distill_chat --minutes 25 --threads 2 \
  --lr 5e-4 --eval-every 2000 --init runs/lm/heads-chain-768/heads.safetensors
train runs/lm/heads-chain-chat2 "${CHAIN[@]}" --data data/lm/distill data/lm/distill_chat data/lm/distill_chat2 \
  --minutes 28 --threads 2 --lr 5e-4 --eval-every 2000 --proposal-vocab 4096 \
  --init runs/lm/heads-chain-chat/heads.safetensors

# 3. ship
cp runs/lm/heads-chain-chat2/heads.safetensors src/blockwise/assets/smollm2-135m-heads.safetensors
echo "shipped src/blockwise/assets/smollm2-135m-heads.safetensors (from runs/lm/heads-chain-chat2)"
