#!/usr/bin/env bash
# Third GPU lease (about 9 minutes on one H200): the fine-tuned models that the Both rows of Tables 1 and 2 need, each
# protecting its base with a weighted p1 loss (--p1-weight) instead of counting p1 as one loss in k (which broke both
# bases in the second lease), two settings of each side by side on the one GPU.
#
#   SR ×4  Fine tuning from the trained Regular model (runs/sr/x4/regular/, carried): finetune (p1 weight 0.5, lr 2e-4)
#          and finetune_b (p1 weight 0.25, lr 3e-4), 7.2 min each.
#   MT     self-distillation: the baseline's own greedy translations of as much of the training set as 2.4 minutes
#          decode (the beam-4 teacher of 02_teacher.py covers only 36k pairs, and fine tuning on so few pairs
#          overfitted: BLEU 8.6); chained heads (k = 10) on the frozen base on those targets (Distillation), then
#          everything from there (Both): models/mt_self (p1 weight 0.5, lr 1e-4) and models/mt_self_b (0.3, 2e-4).
#
#   machine: the device tool's `run`, carrying .devcarry/ (recipes/gpu/pack_data.sh) and
#            runs/sr/x4/regular/model.{safetensors,json}; the tracked assets that no stage reads were moved out of the
#            tree for the call (64 MiB limit).
#   output:  lease/ packed into 15 MiB parts under $OUT; recipes/gpu/unpack.py puts them in place.
# Smoke test on the CPU (a minute, nothing is kept): DEVICE=cpu SCALE=0.02 OUT=/tmp/lease-out bash recipes/gpu/lease_both.sh
. "$(dirname "$0")/setup.sh"
mkdir -p $W/runs/sr/x4/regular $W/models/mt_self $W/models/mt_self_b
cp runs/sr/x4/regular/model.safetensors runs/sr/x4/regular/model.json $W/runs/sr/x4/regular/

sr_finetune() {  # name p1-weight lr minutes
  $PY recipes/sr/train.py --factor 4 --stage finetune --device "$DEVICE" --minutes "$(m "$4")" --steps 100000 \
    --time-schedule --batch 64 --p1-weight "$2" --lr "$3" --run $W/runs/sr/x4/"$1" > $W/logs/sr_x4_"$1".log 2>&1
}
mt_heads() {  # regime models-folder minutes [extra args]
  local regime=$1 folder=$2 minutes=$3; shift 3
  $PY recipes/mt/03_heads.py --regime "$regime" --kind chain --k 10 --d-hidden 384 --loss mean --device "$DEVICE" \
    --minutes "$minutes" --steps 100000 --time-schedule --max-tokens 12000 --data $W/data/mt \
    --base models/mt/baseline.safetensors --teacher $W/models/mt_self/teacher_greedy.tsv.gz \
    --runs $W/runs/"$folder" --models $W/models/"$folder" "$@" > $W/logs/"${folder}"_"$regime".log 2>&1
}

tb=$([ "$DEVICE" = cpu ] && echo 16 || echo 1024)  # teacher batch (a CPU smoke test decodes a few sentences)
sr_finetune finetune 0.5 2e-4 7.2 &
sr_finetune finetune_b 0.25 3e-4 7.2 &
(
  $PY recipes/mt/02_teacher.py --device "$DEVICE" --beam 1 --limit 400000 --minutes "$(m 2.4)" --batch-size "$tb" \
    --chunk $((tb * 8)) --partial --data $W/data/mt --teacher models/mt/baseline.safetensors \
    --work $W/runs/mt_self/teacher/targets.tsv --out $W/models/mt_self/teacher_greedy.tsv.gz \
    > $W/logs/mt_self_teacher.log 2>&1
  mt_heads distillation mt_self "$(m 2.5)"
  # Both takes what is left of 8.2 minutes from the start
  left=$($PY -c "print(max(0.2, round(($start + 8.2 * 60 * $SCALE - $(date +%s)) / 60, 2)))")
  mt_heads both mt_self "$left" --init $W/models/mt_self/distillation.safetensors --p1-weight 0.5 --lr 1e-4 &
  mt_heads both mt_self_b "$left" --init $W/models/mt_self/distillation.safetensors --p1-weight 0.3 --lr 2e-4 &
  wait
) &
wait
echo "all stages done in $(( $(date +%s) - start )) s" | tee -a $W/logs/gpu.txt

# the frozen-base stages keep their bases' weights: bring back the heads alone (unpack.py re-joins them)
$PY -c "from blockwise.model.blockwise_model import save_heads_only as s; \
s('$W/models/mt_self/distillation.safetensors', '$W/models/mt_self/distillation.heads.safetensors')" \
  && rm -f $W/models/mt_self/distillation.safetensors
rm -rf $W/runs/sr/x4/regular
tar cf - --exclude='*.pt' --exclude='*.tsv' --exclude=$W/data $W | split -b 15m - "$OUT/lease.tar.part-"
for f in $W/logs/*.log; do echo "== $f"; tr '\r' '\n' < "$f" | grep -v '^train:' | tail -4; done
ls -la "$OUT"
