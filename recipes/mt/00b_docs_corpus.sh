#!/usr/bin/env bash
# Extended en→de corpus with Debian's English/German documentation (issue 21, "every parallel corpus offline").
#
#   recipes/mt/00b_docs_corpus.sh [--force] [--base DIR] [--out DIR] [extra args for blockwise.data.mt_corpus]
#
# Needs the base corpus (recipes/mt/00_setup.sh → data/mt). Runs
#   python -m blockwise.data.mt_corpus --extend data/mt --docs --out data/mt_docs
# which downloads the documentation packages with `apt-get download` into OUT/debs (nothing is installed),
# copies dev/test and spm.model from the base corpus byte for byte (models stay comparable), and appends the
# aligned documentation pairs to the base train set, minus any pair whose English or German side occurs in
# dev/test. Useful extra args: --docs-sets man,libreoffice  --no-docs-system-man  --retrain-spm  --quiet.
# Runs on one core at low priority (the machine may be timing something else).
#
# Idempotent: does nothing when OUT/manifest.json exists, unless --force.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

BASE=data/mt
OUT=data/mt_docs
FORCE=0
EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --force) FORCE=1 ;;
        --base) BASE="$2"; shift ;;
        --base=*) BASE="${1#--base=}" ;;
        --out) OUT="$2"; shift ;;
        --out=*) OUT="${1#--out=}" ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) EXTRA+=("$1") ;;
    esac
    shift
done

if [ -f "$OUT/manifest.json" ] && [ "$FORCE" -eq 0 ]; then
    echo "[00b_docs] $OUT/manifest.json exists: extended corpus already built (use --force to rebuild)"
    exit 0
fi
if [ ! -f "$BASE/manifest.json" ]; then
    echo "[00b_docs] $BASE/manifest.json missing: run recipes/mt/00_setup.sh first" >&2
    exit 1
fi
for tool in apt-get dpkg-deb tar; do
    command -v "$tool" >/dev/null 2>&1 || { echo "[00b_docs] $tool not found (a Debian system is needed)" >&2; exit 1; }
done

if [ -n "${PYTHON:-}" ]; then
    PY="$PYTHON"
elif [ -z "${VIRTUAL_ENV:-}" ] && [ -x "$ROOT/.venv/bin/python" ]; then
    PY="$ROOT/.venv/bin/python"
else
    PY=python
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE

PIN=()
if command -v taskset >/dev/null 2>&1; then PIN=(taskset -c "$(( $(nproc) - 1 ))"); fi
echo "[00b_docs] building $OUT from $BASE"
nice -n 19 "${PIN[@]}" "$PY" -m blockwise.data.mt_corpus --extend "$BASE" --docs --out "$OUT" "${EXTRA[@]}"
echo "[00b_docs] done: $OUT/manifest.json"
