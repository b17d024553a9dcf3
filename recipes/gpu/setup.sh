# Sourced by the lease scripts (recipes/gpu/lease*.sh): environment, knobs, the work folder and the MT corpus.
#   DEVICE (cuda)  SCALE (1: multiplies every stage's minutes; a small value for a CPU smoke test)
#   OUT (/tmp/lease-out: what comes back)  PY (python3)
# Gives: W=lease, m MINUTES (scaled), $start; records the GPU and PyTorch in $W/logs/gpu.txt.
set -u
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE TQDM_MININTERVAL=20
export BLOCKWISE_FASHION_MNIST=$PWD/.devcarry
DEVICE=${DEVICE:-cuda}
SCALE=${SCALE:-1}
OUT=${OUT:-/tmp/lease-out}
PY=${PY:-python3}
W=lease
m() { $PY -c "print(round($1 * $SCALE, 3))"; }
mkdir -p "$OUT" $W/logs $W/data/mt
tar xJf .devcarry/mt.tar.xz -C $W/data/mt
if ls .devcarry/*-ubyte.xz >/dev/null 2>&1; then  # Fashion-MNIST packed as xz (smaller): back to the gzip IDX files
  mkdir -p $W/data/fashion-mnist
  for f in .devcarry/*-ubyte.xz; do xz -dc "$f" | gzip -1 > $W/data/fashion-mnist/"$(basename "${f%.xz}")".gz; done
  export BLOCKWISE_FASHION_MNIST=$PWD/$W/data/fashion-mnist
fi
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null | tee $W/logs/gpu.txt
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())" | tee -a $W/logs/gpu.txt
start=$(date +%s)
