#!/usr/bin/env bash
# The ×2 Fine-tuning model of results/sr/x2/, trained on the 2-core CPU (no GPU was lent), then the ×2 table.
#
# The second GPU lease's ×2 fine tuning started from barely trained Regular heads with p1 as one loss in ten and broke
# its base (greedy 14.6 dB, below bicubic). This redoes it the way the ×4 model was redone (recipes/gpu/lease_both.sh):
# from the trained Regular model (runs/sr/x2/regular/), p1's loss weighted 0.5, lr 2e-4 — but on the CPU, batch 16,
# for MINUTES (default 55, the recorded run): 1,355 steps of 16 images, where the ×4 lease made 4,422 steps of 64 on an H200.
# Resumable: rerun and it continues from runs/sr/x2/finetune/checkpoint.pt. Then the ×2 table (~16 min, one thread;
# keep the machine otherwise idle, its speedups are wall-clock).
#
#   bash recipes/sr/cpu_x2_finetune.sh            # MINUTES=55 by default
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE
PY=${PY:-python}
MINUTES=${MINUTES:-55}
test -f runs/sr/x2/regular/model.safetensors || { echo "needs runs/sr/x2/regular/ (the ×2 Regular model)" >&2; exit 2; }
$PY recipes/sr/train.py --factor 2 --stage finetune --minutes "$MINUTES" --time-schedule --steps 100000 \
  --batch 16 --p1-weight 0.5 --lr 2e-4 --threads 2 --eval-images 8
$PY recipes/sr/table.py --root runs/sr/x2 --out results/sr/x2 --lfw 0
