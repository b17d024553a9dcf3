#!/usr/bin/env bash
# The heavy training of issues 3 and 5 in one bounded run on a lent GPU machine (about 8 minutes on one H200).
#
#   machine: the device tool's `run`, carrying .devcarry/ (the MT corpus as mt.tar.xz and Fashion-MNIST's four IDX
#            files, made by `recipes/gpu/pack_data.sh`); the machine's own python3 (PyTorch 2.11 + CUDA) runs our code
#            from src/ without installing it.
#   work:    MT  teacher beam-4 outputs (a time-bounded subset) and the four regimes of Table 1 (k = 10) on the
#                committed baseline; SR  base model, then Regular heads, then Fine tuning, ×4.
#   output:  lease/ (models, logs, learning curves), packed into 15 MiB parts under $OUT; `recipes/gpu/unpack.py`
#            puts them in place here.
#
# Smoke test on the CPU (seconds, nothing is kept): DEVICE=cpu SCALE=0.03 OUT=/tmp/lease-out bash recipes/gpu/lease.sh
. "$(dirname "$0")/setup.sh"
mkdir -p $W/models/mt

heads() {  # regime minutes
  $PY recipes/mt/03_heads.py --regime "$1" --device "$DEVICE" --minutes "$(m "$2")" --steps 100000 --time-schedule \
    --max-tokens 12000 --data $W/data/mt --base models/mt/baseline.safetensors \
    --teacher $W/models/mt/teacher_targets.tsv.gz --runs $W/runs/mt --models $W/models/mt > $W/logs/mt_$1.log 2>&1
}
sr() {  # stage minutes [extra args]
  local stage=$1 minutes=$2; shift 2
  $PY recipes/sr/train.py --stage "$stage" --device "$DEVICE" --minutes "$(m "$minutes")" --steps 100000 \
    --time-schedule --run $W/runs/sr/x4/"$stage" "$@" > $W/logs/sr_"$stage".log 2>&1
}

# phase 1: teacher outputs, the two regimes that need none, the SR base model
$PY recipes/mt/02_teacher.py --device "$DEVICE" --limit 400000 --minutes "$(m 3.0)" --batch-size 256 --chunk 2048 \
  --partial --data $W/data/mt --teacher models/mt/baseline.safetensors --work $W/runs/mt/teacher/targets.tsv \
  --out $W/models/mt/teacher_targets.tsv.gz > $W/logs/mt_teacher.log 2>&1 &
teacher=$!
heads regular 3.3 &
heads finetune 3.3 &
( sr base 3.9 --batch 48 && sr regular 1.4 --batch 48 && sr finetune 1.4 --batch 48 ) &
wait $teacher
# phase 2: the distilled regimes
heads distillation 3.2 &
heads both 3.2 &
wait
echo "all stages done in $(( $(date +%s) - start )) s" | tee -a $W/logs/gpu.txt

# regular and distillation keep the baseline's weights: bring back their heads alone (unpack.py re-joins them)
$PY recipes/gpu/heads_only.py
tar cf - --exclude='*.pt' --exclude=$W/data --exclude=$W/models/mt/regular.safetensors \
  --exclude=$W/models/mt/distillation.safetensors $W | split -b 15m - "$OUT/lease.tar.part-"
for f in $W/logs/*.log; do echo "== $f"; tr '\r' '\n' < "$f" | grep -v '^train:' | tail -4; done
ls -la "$OUT"
