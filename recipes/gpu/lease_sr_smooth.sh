#!/usr/bin/env bash
# Second GPU lease (about 8 minutes on one H200): the super-resolution models with ordinal-smoothed targets
# (recipes/sr/train.py --smooth, sr.ordinal_criterion) at ×4 and ×2, a larger base (d 192, 4+2 layers), and the MT
# Both regime with chained heads (k = 10), all three at once on the one GPU.
#
#   machine: the device tool's `run`, carrying .devcarry/ (recipes/gpu/pack_data.sh); the machine's python3 runs src/.
#   output:  lease/ packed into 15 MiB parts under $OUT (SR Regular as heads only); recipes/gpu/unpack.py puts them in
#            runs/sr/x<f>/<stage>/ and models/mt_chain/.
# The committed results/sr/ came from this script before recipes/sr/train.py kept the frozen base in train mode
# (Regular made 52 steps), plus a second call that retrained Regular alone, 1.9 min at each factor, with the base
# folders carried: recipes/sr/train.py --factor F --stage regular --device cuda --minutes 1.9 --steps 100000
# --time-schedule --batch 64. The Fine-tuning stages still started from the 52-step heads (results/sr/README.md).
# Smoke test on the CPU (seconds, nothing is kept): DEVICE=cpu SCALE=0.02 OUT=/tmp/lease-out bash recipes/gpu/lease_sr_smooth.sh
. "$(dirname "$0")/setup.sh"
mkdir -p $W/models/mt_chain

sr() {  # factor stage minutes [extra args]
  local factor=$1 stage=$2 minutes=$3; shift 3
  $PY recipes/sr/train.py --factor "$factor" --stage "$stage" --device "$DEVICE" --minutes "$(m "$minutes")" \
    --steps 100000 --time-schedule --batch 64 --run $W/runs/sr/x"$factor"/"$stage" "$@" \
    > $W/logs/sr_x"${factor}"_"$stage".log 2>&1
}
chain() {  # minutes
  $PY recipes/mt/03_heads.py --regime both --kind chain --k 10 --d-hidden 384 --loss mean --device "$DEVICE" \
    --minutes "$(m "$1")" --steps 100000 --time-schedule --max-tokens 12000 --data $W/data/mt \
    --base models/mt/baseline.safetensors --teacher models/mt/teacher_targets.tsv.gz --runs $W/runs/mt_chain \
    --models $W/models/mt_chain > $W/logs/mt_chain_both.log 2>&1
}
base_args="--d-model 192 --layers 4 --encoder-layers 2 --smooth 4"
for f in 4 2; do
  ( sr $f base 4.3 $base_args && sr $f regular 1.1 && sr $f finetune 1.1 ) &
done
chain 6.8 &
wait
echo "all stages done in $(( $(date +%s) - start )) s" | tee -a $W/logs/gpu.txt

# Regular keeps the base's weights: bring back its heads alone (unpack.py re-joins them)
for f in 4 2; do
  $PY -c "from blockwise.model.blockwise_model import save_heads_only as s; \
s('$W/runs/sr/x$f/regular/model.safetensors', '$W/runs/sr/x$f/regular/heads.safetensors')" \
    && rm -f $W/runs/sr/x$f/regular/model.safetensors
done
tar cf - --exclude='*.pt' --exclude=$W/data $W | split -b 15m - "$OUT/lease.tar.part-"
for f in $W/logs/*.log; do echo "== $f"; tr '\r' '\n' < "$f" | grep -v '^train:' | tail -5; done
ls -la "$OUT"
