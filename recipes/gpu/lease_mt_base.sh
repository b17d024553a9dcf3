#!/usr/bin/env bash
# Issue 21's stronger translation base in one bounded run on a lent GPU machine (about 9 minutes on one H100/H200):
# the paper's transformer_base shape (preset "base": 6+6 layers, d 512, 8 heads, d_ff 2048; our 8,000-piece
# vocabulary) trained from scratch on the extended corpus (data/mt_docs: data/mt plus Debian's paired documentation,
# dev and test byte-identical to data/mt's, so its BLEU compares with the mt-small baseline's 17.75).
#
#   here:    recipes/mt/00b_docs_corpus.sh                       # data/mt_docs (once per machine, ~2 minutes)
#            bash recipes/gpu/lease_mt_base.sh --pack            # .devcarry/mt_docs.tar.xz (~20 MB)
#   machine: the device tool's `run`, carrying .devcarry/mt_docs.tar.xz:   bash recipes/gpu/lease_mt_base.sh
#            (knobs: MINUTES of training, 8; TOKENS per batch, 25000; LR, 7e-4)
#   back:    $OUT/lease_mt.tar.part-* (the float16 model ~90 MB, its learning curve, logs); here
#            cat <files_at>/lease_mt.tar.part-* | tar xf -   puts lease_mt/ in place: models/mt/base.safetensors
#            (with its .json: step, dev loss, greedy dev BLEU on 300 sentences), runs/mt/base/log.jsonl.
#   then:    the teacher's beam-4 outputs and the Both fine-tuning from this base (recipes/gpu/lease.sh's MT half,
#            with --base pointing here) are the next lease; the CPU tables (recipes/mt/04_tables.py) after that.
#
# Smoke test on the CPU (a minute, nothing is kept): DEVICE=cpu MINUTES=0.3 OUT=/tmp/lease-mt bash recipes/gpu/lease_mt_base.sh
set -u
cd "$(dirname "$0")/../.."
if [ "${1:-}" = "--pack" ]; then
  set -e
  grep -qx '/.devcarry/' .git/info/exclude || echo '/.devcarry/' >> .git/info/exclude
  mkdir -p .devcarry
  (cd data/mt_docs && tar cf - train.en train.de dev.en dev.de test.en test.de spm.model spm.vocab manifest.json \
    | xz -9 -T2 > ../../.devcarry/mt_docs.tar.xz)
  du -h .devcarry/mt_docs.tar.xz
  exit 0
fi
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE TQDM_MININTERVAL=20
DEVICE=${DEVICE:-cuda}
MINUTES=${MINUTES:-8}
TOKENS=${TOKENS:-25000}
LR=${LR:-7e-4}
OUT=${OUT:-/tmp/lease-out}
PY=${PY:-python3}
W=lease_mt
mkdir -p "$OUT" $W/logs $W/data/mt_docs $W/models/mt
tar xJf .devcarry/mt_docs.tar.xz -C $W/data/mt_docs
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null | tee $W/logs/gpu.txt
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())" | tee -a $W/logs/gpu.txt
start=$(date +%s)
# the whole cosine schedule inside MINUTES (--time-schedule); the dev BLEU at the end decodes on the machine's CPUs
$PY recipes/mt/01_baseline.py --preset base --data $W/data/mt_docs --device "$DEVICE" --minutes "$MINUTES" \
  --steps 1000000 --time-schedule --max-tokens "$TOKENS" --lr "$LR" --threads 8 --run $W/runs/mt/base \
  --out $W/models/mt/base.safetensors > $W/logs/base.log 2>&1
echo "exit $? after $(( $(date +%s) - start )) s" | tee -a $W/logs/gpu.txt
tr '\r' '\n' < $W/logs/base.log | grep -v '^train:' | tail -30
tar cf - --exclude='*.pt' --exclude=$W/data $W | split -b 15m - "$OUT/lease_mt.tar.part-"
ls -la "$OUT"
