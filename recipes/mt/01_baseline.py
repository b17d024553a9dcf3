#!/usr/bin/env python3
"""Stage 1 of the translation recipe: train the en→de baseline Transformer (no proposal heads).

Resumable: rerun the same command and it continues from runs/mt/baseline/checkpoint.pt, losing at most the steps since
the last checkpoint. ``--minutes`` bounds one run (the session's time); ``--steps`` is the whole schedule. At the end of
every run the float16 weights go to models/mt/baseline.safetensors (committed between runs) with the dev loss and a
greedy dev BLEU on a fixed 300-sentence sample.

    OMP_WAIT_POLICY=PASSIVE python recipes/mt/01_baseline.py --minutes 90
    python recipes/mt/01_baseline.py --preset base --data data/mt_docs --device cuda --minutes 8 --max-tokens 25000 \
        --time-schedule --run runs/mt/base --out models/mt/base.safetensors    # a lent GPU (recipes/gpu/lease_mt_base.sh)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from blockwise import BlockwiseModel, HeadsConfig, preset  # before torch: importing blockwise sets OMP_WAIT_POLICY
from blockwise.eval.timing import git_commit
from blockwise.tasks.translation import (PAD, Corpus, bleu, dev_loss, label_smoothed_loss,
                                         token_batches, translate)
from blockwise.training import TrainConfig, train

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/mt")
    ap.add_argument("--run", default="runs/mt/baseline")
    ap.add_argument("--out", default="models/mt/baseline.safetensors")
    ap.add_argument("--preset", default="mt-small")
    ap.add_argument("--steps", type=int, default=30000, help="length of the whole schedule (all runs together)")
    ap.add_argument("--minutes", type=float, default=90.0, help="stop this run after so many minutes")
    ap.add_argument("--max-tokens", type=int, default=2500, help="padded target tokens per batch")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--upsample", type=int, default=2, help="repeat sentence pairs (not dictionary phrases) n times")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (bf16 autocast on either); the dev BLEU at the end "
                    "decodes on the CPU")
    ap.add_argument("--time-schedule", action="store_true", help="the learning-rate schedule spans --minutes, not "
                    "--steps (a bounded run on a lent GPU: the whole schedule in one run)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    corpus = Corpus(args.data)
    train_pairs = corpus.pairs("train", upsample_sentences=args.upsample)
    dev_pairs = corpus.pairs("dev")
    cfg = preset(args.preset, vocab_size=corpus.vocab_size, dropout=0.1)
    torch.manual_seed(args.seed)
    model = BlockwiseModel(cfg, HeadsConfig(num_heads=1))
    initial_step = 0
    meta = Path(args.out).with_suffix(".json")
    if not (Path(args.run) / "checkpoint.pt").exists() and Path(args.out).exists() and meta.exists():
        # a fresh machine: continue from the committed float16 weights (the optimiser state starts anew)
        model.load_state_dict(BlockwiseModel.load(args.out).state_dict())
        initial_step = json.loads(meta.read_text())["step"]
        print(f"continuing from {args.out} at step {initial_step}", flush=True)
    print(f"{len(train_pairs):,} training pairs, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters",
          flush=True)

    model.to(args.device)

    def loss_fn(batch):
        src, tgt = (t.to(args.device) for t in batch)
        return label_smoothed_loss(model.base.project(model(tgt[:, :-1], src)), tgt[:, 1:])

    def evaluate():
        return {"dev_loss": dev_loss(model, dev_pairs[:500])}

    tc = TrainConfig(steps=args.steps, lr=args.lr, warmup=500, bf16=True, save_every=500, eval_every=1000,
                     seed=args.seed, time_schedule=args.time_schedule)
    started = time.time()
    last = train(model, loss_fn, token_batches(train_pairs, args.max_tokens, args.seed + initial_step), tc,
                 run_dir=args.run, evaluate=evaluate, time_limit=args.minutes * 60, initial_step=initial_step)
    model.eval()
    model.cpu()
    sample_en = corpus.lines("dev", "en")[:300]
    sample_de = corpus.lines("dev", "de")[:300]
    result = translate(model, corpus, sample_en, "greedy", batch_size=64)
    report = {"step": last.get("step"), "dev_loss": dev_loss(model, dev_pairs[:500]),
              "dev_bleu_greedy_300": bleu(result.hypotheses, sample_de), "run_minutes": (time.time() - started) / 60,
              "commit": git_commit(), "preset": args.preset, "examples": list(zip(sample_en[:5], result.hypotheses[:5]))}
    print(json.dumps(report, indent=1, ensure_ascii=False), flush=True)
    with open(Path(args.run) / "runs.jsonl", "a") as f:
        f.write(json.dumps(report, ensure_ascii=False) + "\n")
    model.save(args.out)
    meta.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
