#!/usr/bin/env bash
# Issue 18's drafter data and training on a lent GPU machine (recipes/gpu/drafter.py), about 9 minutes on one H200.
#
# The machine cannot download SmolLM2 and a call carries at most 64 MiB, so the 98 MB GGUF travels in two parts:
#   here:  python recipes/lm/09_drafter_prompts.py
#          python recipes/gpu/drafter.py --pack data/lm/drafter_v3/prompts.jsonl .devcarry/drafter/prompts.npz
#          split -b 52000000 <the GGUF> .devcarry/gguf.part-; sha256sum <the GGUF> | cut -c1-64 > .devcarry/drafter/gguf.sha256
#          pip download gguf==0.19.0 into .whl (recipes/gpu/README: the device tool's wheel recipe)
#          (move the large tracked models out of the working tree for the two calls: it must stay under 64 MiB)
#   call 1 (carry .devcarry/gguf.part-aa):  mkdir -p /tmp/stash && cp .devcarry/gguf.part-aa /tmp/stash/
#   call 2 (carry .devcarry/gguf.part-ab .devcarry/drafter .whl):  GEN=3.8 TRAIN=4.5 bash recipes/gpu/lease_drafter.sh
# As run for the shipped drafter (2026-12-04): call 2 with GEN=3.8 TRAIN=3.2, whose training stopped after 57 s (a
# step count set from a warm-up probe; fixed since), then a third call on the still-warm machine, carrying
# .devcarry/drafter with call 2's answers.npz and heads.safetensors copied in:
#   python3 recipes/gpu/drafter.py --gguf /tmp/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --answers \
#     .devcarry/drafter/answers.npz --init .devcarry/drafter/heads1.safetensors --train-minutes 4.3 --save-every 400
# What comes back ($OUT): answers.npz, heads.safetensors, metrics.json, log.jsonl, train_config.json, run.log.
set -u
OUT=${OUT:-/tmp/lease-out}
mkdir -p "$OUT" /tmp/smollm2
G=/tmp/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
cat /tmp/stash/gguf.part-aa .devcarry/gguf.part-ab > $G
[ "$(sha256sum $G | cut -c1-64)" = "$(cat .devcarry/drafter/gguf.sha256)" ] || { echo "GGUF checksum differs"; exit 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 TQDM_DISABLE=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/run.log"
python3 recipes/gpu/drafter.py --gguf $G --out "$OUT" --gen-minutes "${GEN:-4}" --train-minutes "${TRAIN:-3.2}" \
  ${EXTRA:-} 2>&1 | grep -v -E "Converting|it/s\]" | tee -a "$OUT/run.log"
ls -la "$OUT"
