"""Medusa-style residual heads for SmolLM2, the kind vLLM serves (``blockwise export --to vllm``), trained on the
self-distillation answers the drafter recipes already made (data/lm/seq_chat and seq_chat2: 5,900 chat prompts none of
which is a benchmark prompt; recipes/lm/05_drafter_data.py). Writes a heads folder like `blockwise train-heads` does.

    python recipes/engines/residual_heads.py --minutes 15       # -> runs/engines/residual/heads.safetensors
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import blockwise  # noqa: F401  before torch: importing blockwise sets OMP_WAIT_POLICY

import torch

from blockwise.tasks.hf import SMOLLM2_NAME, load_smollm2
from blockwise.tasks.lm import drafter, heads_io, training
from blockwise.tasks.lm.train_heads import base_info


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", default=["data/lm/seq_chat", "data/lm/seq_chat2"])
    ap.add_argument("--out", default="runs/engines/residual")
    ap.add_argument("--k", type=int, default=5, help="heads p1..pK (K-1 residual blocks; default 5)")
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.time()
    paths = [p for folder in args.data for p in sorted(Path(folder).glob("shard_*.safetensors"))]
    if not paths:
        raise SystemExit(f"no shards in {args.data}: run recipes/lm/05_drafter_data.py first")
    seqs = drafter.load_sequences(paths)
    data = drafter.answers_only(seqs, range(len(seqs)))
    del seqs
    print(f"{len(paths)} shards, {len(data)} answer positions")
    _, hf = load_smollm2()
    out = Path(args.out)
    cfg = training.FitConfig(kind="residual", num_heads=args.k, proposal_vocab=4096, minutes=args.minutes)
    heads, vocab, metrics = training.fit_heads(data, hf.get_output_embeddings().weight.detach().float(), cfg,
                                               out / "run")
    metrics["data"] = {"folders": args.data, "shards": len(paths), "answer_positions": len(data)}
    metrics["config"] = {"kind": "residual", "k": args.k, "minutes": args.minutes}
    metrics["wall_s"] = round(time.time() - started)
    info = base_info(SMOLLM2_NAME, hf)
    heads_io.save_heads(heads, out / "heads.safetensors", vocab, {"metrics": metrics, "base": info})
    (out / "metrics.json").write_text(json.dumps({"base": info, **metrics}, indent=1))
    print(json.dumps({k: metrics[k] for k in ("top1", "expected_accepted")}, indent=1))


if __name__ == "__main__":
    main()
