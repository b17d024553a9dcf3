#!/usr/bin/env bash
# llama.cpp (through llama-cpp-python, which builds it from source: ~10 minutes on 2 cores) in its own virtual
# environment, .venv-llamacpp, never a dependency of blockwise. Used by recipes/engines/benchmark.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${VENV:-.venv-llamacpp}
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
  echo "llama.cpp already installed in $VENV"; exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
# a CPU build for this machine's instruction set (GGML_NATIVE), both cores
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_BLAS=OFF" \
  "$VENV/bin/pip" install --no-cache-dir "llama-cpp-python==0.3.36"
"$VENV/bin/python" -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__)"
