#!/usr/bin/env python3
"""Train the super-resolution models of Table 2 on Fashion-MNIST: the base, then the heads in two regimes.

    --stage base      the pixel Transformer alone (p1 only): encoder over the low-res pixels, decoder over the 784
                      high-res pixel tokens
    --stage regular   "Regular": the base frozen, only the proposal heads p2..pk train (mean of their losses)
    --stage finetune  "Fine tuning": everything trains on the loss of p1..pk (mean, or the paper's random single head),
                      starting from the Regular model (or from the base with fresh heads if there is none)

"Approximate" and "Both" are the Regular and Fine-tuning models decoded with the ε rule (recipes/sr/table.py).

Resumable: rerun the same command and it continues from runs/sr/x<factor>/<stage>/checkpoint.pt, losing at most the
steps since the last checkpoint. ``--steps`` is the whole schedule (all runs together); ``--minutes`` bounds one run.
After every run: <run>/model.safetensors (float16, + model.json with the image geometry), a line in <run>/runs.jsonl
(dev loss, greedy PSNR/SSIM of 8 dev images next to bicubic's, mean accepted block size for the heads), and the
learning curve in <run>/log.jsonl.

    OMP_WAIT_POLICY=PASSIVE python recipes/sr/train.py --stage base --minutes 60
    OMP_WAIT_POLICY=PASSIVE python recipes/sr/train.py --stage regular --minutes 30
    OMP_WAIT_POLICY=PASSIVE python recipes/sr/train.py --stage finetune --minutes 30
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from blockwise import Acceptance, BlockwiseModel, HeadsConfig  # before torch: importing blockwise sets OMP_WAIT_POLICY
from blockwise.eval.timing import environment
from blockwise.tasks import superres as sr
from blockwise.training import TrainConfig, proposal_loss, train

import torch


def build_model(args, run: Path) -> tuple[BlockwiseModel, list, str, float | None]:
    """The model of this stage, the parameters that train, the source layout and the target smoothing σ the model
    was trained with (None for a fresh base)."""
    root = run.parent
    if args.stage == "base":
        overrides = {"d_model": args.d_model, "n_layers": args.layers, "n_encoder_layers": args.encoder_layers,
                     "d_ff": args.d_ff or 4 * args.d_model, "n_heads": args.attn_heads, "dropout": args.dropout}
        torch.manual_seed(args.seed)
        model = BlockwiseModel(sr.model_config(**overrides), HeadsConfig(num_heads=1))
        sr.ordinal_init(model, args.seed)
        return model, list(model.parameters()), args.source, None
    base_path = root / "base" / "model.safetensors"
    init = root / "regular" / "model.safetensors"
    if args.stage == "finetune" and init.exists():
        start, meta = sr.load_sr(init)
        if start.heads_cfg.num_heads < args.num_heads:
            raise SystemExit(f"{init} has {start.heads_cfg.num_heads} heads; --num-heads {args.num_heads} needs a "
                             "Regular model as large")
        print(f"fine tuning starts from {init}")
        model = start
    else:
        if not base_path.exists():
            raise SystemExit(f"no base model at {base_path}: run --stage base first")
        base, meta = sr.load_sr(base_path)
        torch.manual_seed(args.seed)
        model = base.with_heads(sr.heads_config(args.num_heads, args.d_hidden))
    model.train()
    if args.stage == "regular":
        for p in model.base.parameters():
            p.requires_grad_(False)
        return model, list(model.heads.parameters()), meta["source"], meta.get("smooth", 0.0)
    return model, list(model.parameters()), meta["source"], meta.get("smooth", 0.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=["base", "regular", "finetune"], required=True)
    ap.add_argument("--factor", type=int, choices=[2, 4], default=4, help="4: 7×7 -> 28×28 (the paper's 4×); 2: 14×14")
    ap.add_argument("--run", default=None, help="run folder (default runs/sr/x<factor>/<stage>)")
    ap.add_argument("--steps", type=int, default=20000, help="length of the whole schedule (all runs together)")
    ap.add_argument("--minutes", type=float, default=60.0, help="stop this run after so many minutes")
    ap.add_argument("--batch", type=int, default=8, help="images per batch (784 target tokens each)")
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-3 base/regular, 3e-4 "
                                                           "fine tuning)")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--num-heads", "--k", dest="num_heads", type=int, default=10,
                    help="heads to train, p1..p_num_heads (--k: the old name)")
    ap.add_argument("--d-hidden", type=int, default=256, help="hidden size per head of the multi-output layer")
    ap.add_argument("--loss", choices=["mean", "random"], default="mean", help="mean of the k head losses, or one "
                                                                               "head drawn per batch (the paper)")
    ap.add_argument("--p1-weight", type=float, default=None, help="(finetune) weight of p1's loss, the rest shared "
                    "by p2..pk (default: p1 is one of the k heads, as the paper; that broke the base in 700 GPU steps "
                    "here, 0.5 protects it)")
    ap.add_argument("--d-model", type=int, default=128, help="(base stage) model width")
    ap.add_argument("--layers", type=int, default=3, help="(base stage) decoder layers")
    ap.add_argument("--encoder-layers", type=int, default=2, help="(base stage) encoder layers")
    ap.add_argument("--d-ff", type=int, default=None, help="(base stage) feed-forward size (default 4·d_model)")
    ap.add_argument("--attn-heads", type=int, default=4, help="(base stage) attention heads")
    ap.add_argument("--dropout", type=float, default=0.0, help="(base stage)")
    ap.add_argument("--source", choices=sr.LAYOUTS, default="aligned", help="(base stage) encoder input: the "
                    "low-res pixels repeated onto the high-res grid (aligned) or the l² pixels alone (raster)")
    ap.add_argument("--corrupt", type=float, default=0.25, help="(base stage) probability of replacing a fed pixel "
                    "with a random intensity, so the model learns to read the source")
    ap.add_argument("--smooth", type=float, default=None, help="σ (intensity levels) of the Gaussian that smooths the "
                    "targets over neighbouring intensities (sr.ordinal_criterion); 0: plain cross-entropy. Default 4 "
                    "for the base; the heads stages take the base's")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (bf16 autocast on either)")
    ap.add_argument("--time-schedule", action="store_true", help="end the cosine schedule when --minutes are up "
                    "(a single run of unknown speed, e.g. a GPU lease)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-bf16", action="store_true", help="train in float32 (bf16 autocast is the default)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--eval-images", type=int, default=8, help="dev images decoded greedily after the run")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    run = Path(args.run or f"runs/sr/x{args.factor}/{args.stage}")
    run.mkdir(parents=True, exist_ok=True)
    data = sr.load_fashion_mnist()
    model, params, layout, base_smooth = build_model(args, run)
    smooth = args.smooth if args.smooth is not None else (4.0 if args.stage == "base" else base_smooth)
    criterion = sr.ordinal_criterion(smooth)
    model.to(args.device)
    k = model.heads_cfg.num_heads
    n_train = sum(p.numel() for p in params)
    print(f"stage {args.stage}, ×{args.factor}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
          f"{n_train / 1e6:.2f}M training, k={k}, {len(data.train):,} training images", flush=True)

    def loss_fn(batch):
        src, tgt = (t.to(args.device) for t in batch)
        if args.stage == "base":
            return sr.pixel_loss(model, src, tgt, corrupt=args.corrupt, criterion=criterion)
        if args.stage == "regular":
            # frozen: no dropout either (train() switches the whole model to train mode). Without dropout train mode
            # is the same function, and eval mode in bf16 on the CPU takes the batch-invariant decoding path for
            # attention (unfused products, materialised scores; transformer.Attention), far slower over 784 positions
            model.base.train(model.base.cfg.dropout == 0)
            with torch.no_grad():  # no graph through the base
                hidden = model(tgt[:, :-1], src)
            return proposal_loss(model, hidden, tgt[:, 1:], k, mode=args.loss, pad_id=-100,
                                 heads=tuple(range(2, k + 1)), criterion=criterion)
        return proposal_loss(model, model(tgt[:, :-1], src), tgt[:, 1:], k, mode=args.loss, pad_id=-100,
                             criterion=criterion, p1_weight=args.p1_weight)

    dev = data.dev[:64]

    def evaluate():
        return {"eval_loss": sr.dev_loss(model, dev, args.factor, layout)}

    ckpt = run / "checkpoint.pt"
    done = torch.load(ckpt, map_location="cpu", weights_only=False)["step"] if ckpt.exists() else 0
    lr = args.lr or (3e-4 if args.stage == "finetune" else 1e-3)
    tc = TrainConfig(steps=args.steps, lr=lr, warmup=args.warmup, weight_decay=0.01, bf16=not args.no_bf16,
                     save_every=100, eval_every=500, seed=args.seed,
                     time_schedule=args.time_schedule)
    batches = sr.training_batches(data.train, args.factor, args.batch, seed=args.seed * 1_000_003 + done,
                                  layout=layout)
    started = time.time()
    last = train(model, loss_fn, batches, tc, run_dir=run, evaluate=evaluate, params=params,
                 time_limit=args.minutes * 60)
    model.eval().cpu()  # the float16 export and the look at real outputs run on the CPU
    minutes = (time.time() - started) / 60
    sr.save_sr(model, run / "model.safetensors", args.factor, layout=layout, stage=args.stage, step=last.get("step"),
                smooth=smooth)

    # a look at real outputs: greedy images of a few dev images, next to bicubic upsampling
    highs = data.dev[: args.eval_images]
    lows = sr.downsample(highs, args.factor)
    out = sr.upsample(model, lows, args.factor, "greedy", batch_size=len(lows), layout=layout)
    cubic = sr.bicubic(lows, args.factor)
    report = {"stage": args.stage, "factor": args.factor, "step": last.get("step"), "run_minutes": round(minutes, 2),
              "dev_loss_64": sr.dev_loss(model, dev, args.factor, layout), "greedy_psnr": sr.psnr(out.images, highs),
              "greedy_ssim": sr.ssim(out.images, highs), "bicubic_psnr": sr.psnr(cubic, highs),
              "bicubic_ssim": sr.ssim(cubic, highs), "eval_images": len(highs), "k": k, "source": layout,
              "smooth": smooth,
              "args": vars(args)}
    if k > 1:
        for name, accept in (("exact", Acceptance()), ("eps2", Acceptance("distance", eps=2))):
            res = sr.upsample(model, lows, args.factor, "blockwise", k=k, accept=accept, batch_size=len(lows),
                              layout=layout)
            report[f"mean_accepted_{name}_k{k}"] = round(res.stats.mean_accepted, 3)
    report["environment"] = environment()
    print(json.dumps(report, indent=1), flush=True)
    with open(run / "runs.jsonl", "a") as f:
        f.write(json.dumps(report) + "\n")
    sr.write_grid(run / "dev_grid.png", {"low-res": lows, "bicubic": cubic, "greedy": out.images, "original": highs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
