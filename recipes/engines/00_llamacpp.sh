#!/usr/bin/env bash
# llama.cpp (through llama-cpp-python, which builds it from source: ~10 minutes on 2 cores) in its own virtual
# environment, .venv-llamacpp, never a dependency of blockwise. Used by recipes/engines/benchmark.py.
# AVX2=1: a build for AVX2-only CPUs (no AVX-512) in .venv-llamacpp-avx2, to set beside our kernels under the AVX2
# imitation (ATEN_CPU_CAPABILITY=avx2 ...), which llama.cpp's own kernels ignore:
#     AVX2=1 bash recipes/engines/00_llamacpp.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
AVX2=${AVX2:-0}
if [ "$AVX2" = 1 ]; then VENV=${VENV:-.venv-llamacpp-avx2}; else VENV=${VENV:-.venv-llamacpp}; fi
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
  echo "llama.cpp already installed in $VENV"; exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
# a CPU build for this machine's instruction set (GGML_NATIVE), or for AVX2 (with FMA and F16C, as every AVX2 CPU
# has them), both cores
ARGS="-DGGML_NATIVE=ON -DGGML_BLAS=OFF"
if [ "$AVX2" = 1 ]; then
  ARGS="-DGGML_NATIVE=OFF -DGGML_BLAS=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF"
  ARGS="$ARGS -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF"
fi
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} CMAKE_ARGS="$ARGS" \
  "$VENV/bin/pip" install --no-cache-dir "llama-cpp-python==0.3.36"
if [ "$AVX2" = 1 ]; then echo "AVX2" > "$VENV/ISA"; fi  # what the benchmark may set beside an imitation
"$VENV/bin/python" -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__)"
