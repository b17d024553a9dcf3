#!/usr/bin/env python3
"""Stage 3: the four regimes of Table 1 — proposal heads (k = 10) added to the baseline.

    regular       frozen base, heads trained on the original targets
    distillation  frozen base, heads trained on the teacher's beam outputs (stage 2)
    finetune      everything trained, original targets
    both          everything trained, teacher outputs

One model with 10 heads per regime; the tables evaluate it with its first k heads. p1 is the identity path (the base
output itself), so a frozen base decodes exactly as the baseline. Loss: ``--loss random`` (the paper's one head per
minibatch, drawn uniformly; default, a tenth of the cost) or ``--loss mean`` (all heads). Resumable per regime.

    OMP_WAIT_POLICY=PASSIVE python recipes/mt/03_heads.py --regime both --minutes 20
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

from blockwise import BlockwiseModel, HeadsConfig  # before torch: importing blockwise sets OMP_WAIT_POLICY
from blockwise.eval.timing import git_commit
from blockwise.tasks.translation import Corpus, token_batches
from blockwise.training import TrainConfig, proposal_loss, train

import torch

REGIMES = {"regular": (False, False), "distillation": (False, True), "finetune": (True, False), "both": (True, True)}


def teacher_targets(corpus: Corpus, path: str) -> list[str]:
    """The teacher's translation of every training line it distilled (stage 2), "" for the others: as targets for
    ``Corpus.pairs``, which skips empty targets, they give the distilled subset's pairs."""
    if not Path(path).exists():
        raise FileNotFoundError(f"no teacher outputs at {path}: run recipes/mt/02_teacher.py first")
    targets = [""] * len(corpus.lines("train", "en"))
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            i, hyp = line.rstrip("\n").split("\t", 1)
            targets[int(i)] = hyp
    return targets


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--regime", required=True, choices=sorted(REGIMES))
    ap.add_argument("--data", default="data/mt")
    ap.add_argument("--base", default="models/mt/baseline.safetensors")
    ap.add_argument("--teacher", default="models/mt/teacher_targets.tsv.gz")
    ap.add_argument("--num-heads", "--k", dest="num_heads", type=int, default=10,
                    help="heads to train, p1..p_num_heads (--k: the old name)")
    ap.add_argument("--d-hidden", type=int, default=256)
    ap.add_argument("--kind", choices=["paper", "chain"], default="paper", help="paper: the paper's multi-output "
                    "layer; chain: each head also sees the token proposed before it (Hydra-style)")
    ap.add_argument("--loss", choices=["random", "mean"], default="random")
    ap.add_argument("--init", default=None, help="continue from this model with heads (e.g. the GPU lease's heads, "
                    "or Regular/Distillation heads as the start of fine-tuning) instead of fresh heads on --base")
    ap.add_argument("--p1-weight", type=float, default=None, help="fine tuning: weight of p1's loss, the rest "
                    "shared by p2..pk as --loss says (default: p1 is one head among k, as the paper; 0.5 protects the "
                    "base)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--lr", type=float, default=None, help="default: 1e-3 frozen base, 2e-4 fine-tuning")
    ap.add_argument("--max-tokens", type=int, default=2500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (bf16 autocast on either)")
    ap.add_argument("--time-schedule", action="store_true", help="end the cosine schedule when --minutes are up "
                    "(a single run of unknown speed, e.g. a GPU lease)")
    ap.add_argument("--upsample", type=int, default=2)
    ap.add_argument("--runs", default="runs/mt", help="checkpoints (resume) go to RUNS/<regime>/")
    ap.add_argument("--models", default="models/mt", help="the float16 model goes to MODELS/<regime>.safetensors")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    finetune, distil = REGIMES[args.regime]
    corpus = Corpus(args.data)
    pairs = corpus.pairs("train", teacher_targets(corpus, args.teacher) if distil else None, args.upsample)
    if args.init:
        model = BlockwiseModel.load(args.init)
        if model.num_heads != args.num_heads:
            raise SystemExit(f"{args.init} has {model.num_heads} heads, not --num-heads {args.num_heads}")
    else:
        base = BlockwiseModel.load(args.base)
        model = base.with_heads(HeadsConfig(num_heads=args.num_heads, d_hidden=args.d_hidden, kind=args.kind,
                                            p1="identity"))
    for p in model.base.parameters():
        p.requires_grad_(finetune)
    heads = tuple(range(1 if finetune else 2, args.num_heads + 1))  # a frozen p1 has nothing to learn
    model.to(args.device)
    g = torch.Generator().manual_seed(0)

    def loss_fn(batch):
        src, tgt = (t.to(args.device) for t in batch)
        if finetune:
            hidden = model(tgt[:, :-1], src)
        else:
            model.base.eval()  # frozen: no dropout either (train() puts the whole model in train mode)
            with torch.no_grad():
                hidden = model(tgt[:, :-1], src)
        return proposal_loss(model, hidden, tgt[:, 1:], args.num_heads, mode=args.loss, pad_id=0, generator=g, heads=heads,
                             p1_weight=args.p1_weight)

    lr = args.lr or (2e-4 if finetune else 1e-3)
    cfg = TrainConfig(steps=args.steps, lr=lr, warmup=100, bf16=True, save_every=200, eval_every=10**9,
                      time_schedule=args.time_schedule)
    run = Path(args.runs) / args.regime
    started = time.time()
    last = train(model, loss_fn, token_batches(pairs, args.max_tokens, 0), cfg, run_dir=run,
                 time_limit=args.minutes * 60)
    out = Path(args.models) / f"{args.regime}.safetensors"
    model.cpu().save(out)
    info = {"regime": args.regime, "kind": model.heads_cfg.kind, "k": args.num_heads, "loss": args.loss,
            "p1_weight": args.p1_weight, "init": args.init, "device": args.device, "max_tokens": args.max_tokens, "pairs": len(pairs), "step": last.get("step"),
            "train_loss": last.get("loss"), "lr": lr, "finetune": finetune, "distilled": distil,
            "minutes": (time.time() - started) / 60, "commit": git_commit()}
    with open(run / "runs.jsonl", "a") as f:
        f.write(json.dumps(info) + "\n")
    print(json.dumps(info), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
