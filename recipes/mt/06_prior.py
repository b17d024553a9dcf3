"""Measure a translation checkpoint's held-out expected accepted block sizes and store them in it (issue 16).

E(k), k = 1..K, is what one exact blockwise iteration at block size k accepts on average, measured on the dev
sentences (never the test set) with one decode at k = K (``tasks.translation.held_out_expected``). Stored in the
checkpoint's metadata, it is the prior of the k = "auto" policy (decoding/policy.py): without one the policy assumes
each proposal is accepted half the time, and on the shipped model (dev E(2) = 1.35) it tried blocks that do not pay
in the first steps of every text, so `blockwise translate --compare` printed 0.71-0.87x on short inputs.

Rewrites the checkpoint in place (the tensors unchanged, ``metrics`` added to the metadata) and writes
``results/mt/prior/<checkpoint name>.json``.

    python recipes/mt/06_prior.py                      # the shipped model, 500 dev sentences
    python recipes/mt/06_prior.py --model runs/mt/both/best.safetensors --n 1000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from blockwise.decoding.policy import prior_from_expected  # before torch: importing blockwise sets OMP_WAIT_POLICY
from blockwise.cli_translate import find_spm
from blockwise.eval.timing import cpu_label, git_commit
from blockwise.model import BlockwiseModel
from blockwise.model.blockwise_model import record_expected
from blockwise.tasks.translation import Corpus, held_out_expected

import torch

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "src" / "blockwise" / "assets" / "mt_both.safetensors"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(DEFAULT), help="translation checkpoint (default: the shipped model)")
    ap.add_argument("--dev", default="data/mt/dev.en", help="held-out English sentences (recipes/mt/00_setup.sh)")
    ap.add_argument("--n", type=int, default=500, help="dev sentences decoded (default 500)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dry-run", action="store_true", help="measure and print, change nothing")
    args = ap.parse_args()
    dev = Path(args.dev)
    if not dev.exists():
        ap.error(f"no {dev}: build the corpus with recipes/mt/00_setup.sh first")
    torch.set_num_threads(args.threads)
    model_path = Path(args.model)
    model, corpus = BlockwiseModel.load(model_path), Corpus.from_spm(find_spm(model_path))
    sentences = [line.strip() for line in dev.read_text(encoding="utf-8").splitlines() if line.strip()][: args.n]
    start = time.perf_counter()
    expected = held_out_expected(model, corpus, sentences, args.batch_size, progress=True)
    seconds = time.perf_counter() - start
    prior = prior_from_expected(expected)
    print("E(k), k = 1..K:", " ".join(f"{e:.3f}" for e in expected))
    print("a_2..a_K:      ", " ".join(f"{a:.3f}" for a in prior))
    if args.dry_run:
        return
    record_expected(model_path, expected)
    out = ROOT / "results" / "mt" / "prior" / f"{model_path.stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "model": str(model_path.relative_to(ROOT) if model_path.is_relative_to(ROOT) else model_path),
        "data": f"{dev} (first {len(sentences)} sentences)", "k": model.num_heads,
        "expected_accepted": {f"k{i + 1}": round(e, 3) for i, e in enumerate(expected)},
        "prior": [round(a, 3) for a in prior], "commit": git_commit(), "cpu": cpu_label(),
        "seconds": round(seconds, 1)}, indent=1) + "\n")
    print(f"stored in {model_path}'s metadata; wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
