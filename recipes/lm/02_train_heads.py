"""Train proposal heads p2..pk on SmolLM2's stored hidden states (frozen base, self-distillation).

Resumable: checkpoints in --run every 50 steps; a rerun with the same --run continues. Data parallel unchanged under
`torchrun --nproc_per_node N recipes/lm/02_train_heads.py ...` (training/loop.py). Progress bar, a
JSON-lines learning curve (log.jsonl) and held-out top-1 agreement per head (metrics.json) in --run.

    python recipes/lm/02_train_heads.py --kind paper --minutes 30 --ship
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import blockwise  # noqa: F401  before torch: importing blockwise sets OMP_WAIT_POLICY

import torch
from safetensors import safe_open

from blockwise.tasks.hf import load_smollm2
from blockwise.tasks.lm import distill, heads_io, training
from blockwise.training.loop import distributed


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
    print(f"{len(shards)} shards")
    # held-out agreement per data folder (shards load in order, so a folder's positions are one range)
    sizes = [int(safe_open(str(p), "pt").get_tensor("lengths").sum()) for p in shards]
    folders = [str(Path(folder)) for folder in args.data]
    owner = torch.repeat_interleave(torch.tensor([folders.index(str(p.parent)) if str(p.parent) in folders else -1
                                                  for p in shards]), torch.tensor(sizes))
    groups = {folder: owner == i for i, folder in enumerate(args.data)} if len(args.data) > 1 else None

    _, hf = load_smollm2()
    embed = hf.get_output_embeddings().weight.detach().clone()  # (V, D), frozen
    token_embed = torch.nn.Embedding.from_pretrained(hf.get_input_embeddings().weight.detach().clone())
    del hf
    cfg = training.FitConfig(kind=args.kind, num_heads=args.num_heads, d_hidden=args.d_hidden, batch=args.batch,
                             lr=args.lr, top_vocab=args.top_vocab, proposal_vocab=args.proposal_vocab,
                             minutes=args.minutes, bf16=args.bf16, weight_decay=args.weight_decay,
                             eval_positions=args.eval_positions, eval_every=args.eval_every)
    init = heads_io.load_heads(args.init)[0] if args.init else None
    if init is not None and not (run / "checkpoint.pt").exists():
        print(f"initialised from {args.init}")
    heads, vocab, metrics = training.fit_heads(data, embed, cfg, run, token_embed=token_embed, init=init, groups=groups)
    if distributed()[0] != 0:  # under torchrun: process 0 writes
        return
    print(json.dumps(metrics, indent=1))
    heads_io.save_heads(heads, run / "heads.safetensors", vocab, {"metrics": metrics})
    if args.ship:
        heads_io.save_heads(heads, heads_io.ASSET, vocab, {"metrics": metrics})
        print(f"shipped {heads_io.ASSET} ({heads_io.ASSET.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
