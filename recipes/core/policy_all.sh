#!/usr/bin/env bash
# Issue 16's measurements in one go, on the CPU as it is and under the AVX2 imitation (PyTorch's own kernels, MKL and
# oneDNN capped at AVX2: no AVX-512, no native bf16). Each step writes its own results folder; nothing else may run.
#   bash recipes/core/policy_all.sh [MT_TEST_EN]        (MT_TEST_EN: data/mt/test.en from recipes/mt/00_setup.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
MT_TEST=${1:-data/mt/test.en}
export OMP_WAIT_POLICY=PASSIVE
AVX2=(env ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2)
LM=(recipes/lm/03_benchmark.py --repeats 2 --threads 2 --batches 1,8,32 --ks 2,3,4,auto --trees "" --n1 6 --n8 32
    --max-new 96 --lookup 0 --hf-dtypes float32
    --merge-into results/lm/summary.json --run policy)
step() { echo "== $(date +%H:%M:%S) $*"; }

step probe: small-M float32 products
$PY recipes/core/probes/small_m_gemm.py results/core/small_m_gemm_native.json
"${AVX2[@]}" $PY recipes/core/probes/small_m_gemm.py results/core/small_m_gemm_avx2.json
step LM native
$PY "${LM[@]}" --dtypes bfloat16,float32 --out results/lm/policy/native
step LM avx2
"${AVX2[@]}" $PY "${LM[@]}" --dtypes float32 --out results/lm/policy/avx2
if [ -f "$MT_TEST" ]; then
  step MT native
  $PY recipes/mt/05_policy.py --test "$MT_TEST" --n 100 --batches 1,32 --ks 2,4,10,auto
  step MT avx2
  "${AVX2[@]}" $PY recipes/mt/05_policy.py --test "$MT_TEST" --n 100 --batches 1,32 --ks 2,4,10,auto
fi
step SR native
$PY recipes/sr/policy.py --n 4 --batches 1,8 --ks 2,6,10,auto
step SR avx2
"${AVX2[@]}" $PY recipes/sr/policy.py --n 4 --batches 1,8 --ks 2,6,10,auto
step demo native / avx2
for kind in native avx2; do
  run=(); [ $kind = avx2 ] && run=("${AVX2[@]}")
  "${run[@]}" .venv/bin/blockwise generate --compare 2>&1 >/dev/null | tail -2 | sed "s/^/$kind generate: /"
  "${run[@]}" .venv/bin/blockwise translate --compare "The package provides a command-line tool." \
    "Please restart the computer after the update." "The file could not be opened because it is too large." \
    | tail -1 | sed "s/^/$kind translate: /"
done
step done
