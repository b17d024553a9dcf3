"""Train proposal heads p2..pk on SmolLM2's stored hidden states (frozen base, self-distillation).

Resumable: checkpoints in --run every --save-every steps; a rerun with the same --run continues. Progress bar, a
JSON-lines learning curve (log.jsonl) and held-out top-1 agreement per head (metrics.json) in --run.

    python recipes/lm/02_train_heads.py --kind paper --minutes 30 --ship
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import blockwise  # noqa: F401  before torch: importing blockwise sets OMP_WAIT_POLICY

import torch

from blockwise.config import HeadsConfig
from blockwise.model.heads import make_heads
from blockwise.tasks.lm import distill, heads_io, training
from blockwise.training import TrainConfig, train


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", default=["data/lm/distill"], help="shard folders (01_generate_data.py)")
    ap.add_argument("--run", default=None, help="run folder (default runs/lm/heads-<kind>)")
    ap.add_argument("--kind", choices=["paper", "residual", "chain"], default="paper",
                    help="paper: the paper's multi-output layer; residual: Medusa-1's blocks; chain: each head also "
                         "sees the token proposed before it (Hydra-style)")
    ap.add_argument("--num-heads", "--k", dest="num_heads", type=int, default=6,
                    help="heads to train, p1..p_num_heads (p1 is the base model itself; --k: the old name)")
    ap.add_argument("--d-hidden", type=int, default=512)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--top-vocab", type=int, default=4096, help="softmax classes: the most frequent answer tokens "
                    "plus every target of the batch")
    ap.add_argument("--proposal-vocab", type=int, default=0,
                    help="tokens p2..pk are scored over at decoding time: the N most frequent answer tokens (each head "
                         "then reads a smaller slice of the output projection per call); 0 (default): every token the "
                         "base produced")
    ap.add_argument("--minutes", type=float, default=30.0, help="training budget; sets the schedule's length")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (faster on CPUs that have it)")
    ap.add_argument("--init", default=None, help="start from these trained heads (a heads file of the same shape)")
    ap.add_argument("--ship", action="store_true", help="write the heads to the package's assets folder too")
    ap.add_argument("--eval-positions", type=int, default=6000)
    ap.add_argument("--eval-every", type=int, default=0, help="held-out agreement on 1,500 positions every so many "
                    "steps, into the learning curve (0: only at the end)")
    ap.add_argument("--weight-decay", type=float, default=0.0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    run = Path(args.run or f"runs/lm/heads-{args.kind}")
    run.mkdir(parents=True, exist_ok=True)

    shards = [p for folder in args.data for p in sorted(Path(folder).glob("shard_*.safetensors"))]
    if (run / "shards.json").exists():  # a resumed run keeps its data, even if more shards appeared meanwhile
        names = json.loads((run / "shards.json").read_text())
        shards = [Path(n) if "/" in n else Path(args.data[0]) / n for n in names]  # bare names: older runs
    else:
        (run / "shards.json").write_text(json.dumps([str(p) for p in shards]))
    if not shards:
        raise SystemExit(f"no shard_*.safetensors in {', '.join(args.data)}: run recipes/lm/01_generate_data.py")
    data = distill.load_shards(shards)
    train_idx, held_idx = distill.split_index(data, held_out=0.05, seed=0)
    print(f"{len(shards)} shards, {len(data)} positions: {len(train_idx)} train, {len(held_idx)} held out")

    from blockwise.tasks.hf import load_smollm2

    _, hf = load_smollm2()
    embed = hf.get_output_embeddings().weight.detach().clone()  # (V, D), frozen
    token_emb = hf.get_input_embeddings().weight.detach().clone() if args.kind == "chain" else None
    del hf
    V = embed.shape[0]
    vocab = training.restricted_vocab(data.tokens, V)  # every token the base produced: the shipped proposal set
    counts = torch.bincount(data.tokens[train_idx].long(), minlength=V)
    if 0 < args.proposal_vocab < len(vocab):
        vocab = counts.topk(args.proposal_vocab).indices.sort().values
        covered = counts[vocab].sum() / counts.sum()
        print(f"proposals over the {len(vocab)} most frequent answer tokens ({covered:.1%} of training targets)")
    top = counts.topk(min(args.top_vocab, int((counts > 0).sum()))).indices
    print(f"answers use {int((counts > 0).sum())} distinct tokens; softmax over the top {len(top)} + batch targets")

    heads = make_heads(embed.shape[1], HeadsConfig(num_heads=args.num_heads, d_hidden=args.d_hidden, kind=args.kind))
    if token_emb is not None:  # chained heads read the true tokens' input embeddings
        heads.bind(torch.nn.Embedding.from_pretrained(token_emb))
    if args.init and not (run / "checkpoint.pt").exists():
        heads.load_state_dict(heads_io.load_heads(args.init)[0].state_dict())
        print(f"initialised from {args.init}")
    n_params = sum(p.numel() for p in heads.parameters())
    print(f"{args.kind} heads: {n_params / 1e6:.2f}M parameters ({2 * n_params / 2**20:.1f} MiB in float16)")

    def loss_fn(index):
        targets, valid = data.targets(index, args.num_heads)
        classes = torch.unique(torch.cat([top, targets[:, 1:][valid[:, 1:]]]))
        remap = torch.full((V,), 0, dtype=torch.long)
        remap[classes] = torch.arange(len(classes))
        given = targets[:, : args.num_heads - 1]
        losses = training.head_losses(heads, embed[classes], data.hidden[index].float(), remap[targets], valid, given)
        return losses.mean()

    # the schedule's length: measured speed x budget (fixed at the first run, so a resume keeps the same schedule)
    cfg_path = run / "train_config.json"
    if cfg_path.exists():
        steps = json.loads(cfg_path.read_text())["steps"]
    else:
        probe = distill.batches(len(train_idx), args.batch, seed=1)
        t = time.time()
        for _ in range(3):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                loss = loss_fn(train_idx[next(probe)])
            loss.backward()
        heads.zero_grad(set_to_none=True)
        steps = max(50, int(60 * args.minutes / ((time.time() - t) / 3) * 0.9))
        print(f"{(time.time() - t) / 3:.2f} s/step -> {steps} steps")
    cfg = TrainConfig(steps=steps, lr=args.lr, warmup=min(100, steps // 10), weight_decay=args.weight_decay,
                      bf16=args.bf16, save_every=50, eval_every=args.eval_every or 10 ** 9, seed=0)
    source = distill.batches(len(train_idx), args.batch, seed=0)
    batches = (train_idx[b] for b in source)
    g = torch.Generator().manual_seed(0)
    pick = held_idx[torch.randperm(len(held_idx), generator=g)[: args.eval_positions]]

    def evaluate():  # a learning curve of what matters: expected block size on held-out answers
        heads.eval()
        m = training.agreement(heads, embed, data, pick[:1500], proposal_vocab=vocab)
        heads.train()
        return {"held_out_p2": m["top1"]["p2"],
                "held_out_expected_accepted": m["expected_accepted"][f"k{args.num_heads}"]}

    # held-out positions of each data folder (shards load in order, so a folder's positions are one range)
    from safetensors import safe_open

    ends = torch.tensor([0] + [sum(int(safe_open(str(p), "pt").get_tensor("lengths").sum()) for p in shards
                                   if str(p.parent) == str(Path(folder))) for folder in args.data]).cumsum(0)
    per_folder = {folder: pick[(pick >= ends[i]) & (pick < ends[i + 1])] for i, folder in enumerate(args.data)}

    def scores() -> dict:
        heads.eval()
        out = training.agreement(heads, embed, data, pick, proposal_vocab=vocab)
        if len(args.data) > 1:
            out["by_data"] = {folder: training.agreement(heads, embed, data, idx, proposal_vocab=vocab)
                              for folder, idx in per_folder.items() if len(idx)}
        heads.train()
        return out

    before = None
    if args.init:  # what the starting heads score on this run's held-out answers, for comparison with the end
        before = scores()
        print(f"held out, before training: {json.dumps(before)}", flush=True)
    train(heads, loss_fn, batches, cfg, run_dir=run, time_limit=60 * args.minutes * 1.1, evaluate=evaluate)

    metrics = scores()
    heads.eval()
    if before is not None:
        metrics["init_metrics"] = before
    metrics.update({"kind": args.kind, "k": args.num_heads, "d_hidden": args.d_hidden, "parameters": n_params,
                    "train_positions": len(train_idx), "held_out_positions": len(pick), "steps": steps,
                    "proposal_vocab": len(vocab)})
    (run / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print(json.dumps(metrics, indent=1))
    heads_io.save_heads(heads, run / "heads.safetensors", vocab, {"metrics": metrics})
    if args.ship:
        heads_io.save_heads(heads, heads_io.ASSET, vocab, {"metrics": metrics})
        print(f"shipped {heads_io.ASSET} ({heads_io.ASSET.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
