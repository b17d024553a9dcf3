#!/usr/bin/env bash
# Build the German–English corpus for en→de translation (issue 3, item 1).
#
#   recipes/mt/00_setup.sh [--force] [--out DIR] [extra args for blockwise.data.mt_corpus]
#
# 1. installs the Debian packages the pipeline reads: trans-de-en (Ding dictionary)
#    and lz4 (apt's compressed index files); `sudo` only when not root, and
#    `apt-get update` only when the install fails without it;
# 2. runs `python -m blockwise.data.mt_corpus --out data/mt`, which fetches Debian's
#    description translations into data/mt/apt (the system's apt lists stay untouched),
#    writes {train,dev,test}.{en,de}, manifest.json and spm.model.
#
# Idempotent: does nothing when DIR/manifest.json exists, unless --force.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

OUT=data/mt
FORCE=0
EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --force) FORCE=1 ;;
        --out) OUT="$2"; shift ;;
        --out=*) OUT="${1#--out=}" ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) EXTRA+=("$1") ;;
    esac
    shift
done

if [ -f "$OUT/manifest.json" ] && [ "$FORCE" -eq 0 ]; then
    echo "[00_setup] $OUT/manifest.json exists: corpus already built (use --force to rebuild)"
    exit 0
fi

# --- Debian packages ---------------------------------------------------------------
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "[00_setup] not root and no sudo: install trans-de-en and lz4 by hand" >&2
    fi
fi
missing=()
for pkg in trans-de-en lz4; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "[00_setup] installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! $SUDO apt-get install -y -q "${missing[@]}"; then
        echo "[00_setup] install failed; running apt-get update first"
        $SUDO apt-get update -q
        $SUDO apt-get install -y -q "${missing[@]}"
    fi
else
    echo "[00_setup] trans-de-en and lz4 already installed"
fi

# --- Python --------------------------------------------------------------------------
if [ -n "${PYTHON:-}" ]; then
    PY="$PYTHON"
elif [ -z "${VIRTUAL_ENV:-}" ] && [ -x "$ROOT/.venv/bin/python" ]; then
    PY="$ROOT/.venv/bin/python"
else
    PY=python
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import sentencepiece, tqdm" 2>/dev/null; then
    echo "[00_setup] $PY lacks sentencepiece/tqdm: run \`pip install -e '.[mt]'\`" >&2
    exit 1
fi

export OMP_WAIT_POLICY=PASSIVE
echo "[00_setup] building $OUT"
"$PY" -m blockwise.data.mt_corpus --out "$OUT" "${EXTRA[@]}"
echo "[00_setup] done: $OUT/manifest.json"
