"""Train the feature-level drafter (issue 18) on SmolLM2's cached states (05_drafter_data.py); the base is never run.

Resumable: checkpoints in --run; a rerun with the same --run continues. Progress bar, a JSON-lines learning curve with
held-out chain agreement (log.jsonl), and at the end metrics.json and the drafter file (heads.safetensors, float16, with
its proposal vocabulary and held-out expected block sizes, which k = auto starts from).

    python recipes/lm/06_train_drafter.py --minutes 30
    blockwise generate --heads runs/lm/drafter/heads.safetensors --compare
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
from blockwise.tasks.lm import drafter as dt
from blockwise.tasks.lm import heads_io
from blockwise.training import TrainConfig, train


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", default=["data/lm/seq_chat2", "data/lm/seq_chat"],
                    help="shard folders (05_drafter_data.py)")
    ap.add_argument("--held-out", default="data/lm/seq_chat", help="the folder whose first shards are held out")
    ap.add_argument("--held-out-shards", type=int, default=8)
    ap.add_argument("--run", default="runs/lm/drafter", help="run folder")
    ap.add_argument("--num-heads", type=int, default=6, help="p1..p_num_heads: the drafter drafts up to num_heads - 1")
    ap.add_argument("--d-hidden", type=int, default=1536, help="the drafter layer's MLP width (SmolLM2's own: 1536)")
    ap.add_argument("--tokens-per-batch", type=int, default=4096)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--reg-weight", type=float, default=1.0, help="weight of the state regression beside the token "
                    "cross-entropy")
    ap.add_argument("--depth", type=int, default=2, help="training-time test: also learn draft depths 2..depth+1 "
                    "from the drafter's own states (each depth costs about one more pass)")
    ap.add_argument("--noise", type=float, default=0.05, help="uniform noise on the input states (times their RMS)")
    ap.add_argument("--proposal-vocab", type=int, default=4096, help="the N most frequent answer tokens: the softmax "
                    "classes in training and the tokens drafts are scored over when decoding")
    ap.add_argument("--minutes", type=float, default=30.0, help="training budget; sets the schedule's length")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (~1.5x faster on CPUs with native bf16)")
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--eval-rows", type=int, default=64, help="held-out answers judged every --eval-every steps")
    ap.add_argument("--init", default=None, help="start from this drafter file (same shape)")
    ap.add_argument("--compare", default=str(heads_io.ASSET), help="heads judged on the same held-out answers at the "
                    "end, for comparison (default: the shipped chained heads; empty: none)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)

    held_dir = Path(args.held_out)
    held_paths = sorted(held_dir.glob("shard_*.safetensors"))[: args.held_out_shards]
    train_paths = [p for folder in args.data for p in sorted(Path(folder).glob("shard_*.safetensors"))
                   if p not in held_paths]
    if (run / "shards.json").exists():  # a resumed run keeps its data
        train_paths = [Path(p) for p in json.loads((run / "shards.json").read_text())]
    else:
        (run / "shards.json").write_text(json.dumps([str(p) for p in train_paths]))
    if not train_paths or not held_paths:
        raise SystemExit("no shards: run recipes/lm/05_drafter_data.py first")
    train_data, held_data = dt.load_sequences(train_paths), dt.load_sequences(held_paths)
    data = dt.Sequences(train_data.tokens + held_data.tokens, train_data.hidden + held_data.hidden,
                        train_data.prompt + held_data.prompt)
    train_rows, held_rows = list(range(len(train_data))), list(range(len(train_data), len(data)))
    del train_data, held_data
    print(f"{len(train_paths)} training shards ({len(train_rows)} answers, {data.answer_positions(train_rows)} answer "
          f"tokens), {len(held_paths)} held out ({len(held_rows)} answers, {data.answer_positions(held_rows)} tokens)")

    from blockwise.tasks.hf import load_smollm2

    _, hf = load_smollm2()
    weight = hf.get_output_embeddings().weight.detach().clone()  # (V, D), frozen
    embed = torch.nn.Embedding.from_pretrained(hf.get_input_embeddings().weight.detach().clone())
    del hf
    D = weight.shape[1]
    vocab, remap, classes_w, coverage = dt.proposal_classes(weight, data, train_rows, args.proposal_vocab)
    print(f"proposal vocabulary: the {len(vocab)} most frequent answer tokens ({coverage:.1%} of training targets)")
    rms = float(torch.cat([data.hidden[r].float() for r in train_rows[:200]]).pow(2).mean().sqrt())

    drafter = make_heads(D, HeadsConfig(num_heads=args.num_heads, d_hidden=args.d_hidden, kind="feature"))
    drafter.bind(embed, dt.restricted_projection(weight, vocab))
    if args.init and not (run / "checkpoint.pt").exists():
        drafter.load_state_dict(heads_io.load_heads(args.init)[0].state_dict())
        print(f"initialised from {args.init}")
    n_params = sum(p.numel() for p in drafter.parameters())
    print(f"feature drafter: {n_params / 1e6:.2f}M parameters ({2 * n_params / 2**20:.1f} MiB in float16); "
          f"state RMS {rms:.3f}")
    sizes = [len(t) for t in data.tokens]

    def loss_fn(rows):
        loss, _ = dt.drafter_loss(drafter, classes_w, remap, *data.batch(rows), noise=args.noise * rms,
                                  reg_weight=args.reg_weight, depth=args.depth)
        return loss

    cfg_path = run / "train_config.json"
    if cfg_path.exists():
        steps = json.loads(cfg_path.read_text())["steps"]
    else:  # the schedule's length: measured speed x budget
        probe = dt.row_batches(train_rows, sizes, args.tokens_per_batch, seed=1)
        t = time.time()
        for _ in range(3):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                loss = loss_fn(next(probe))
            loss.backward()
        drafter.zero_grad(set_to_none=True)
        steps = max(50, int(60 * args.minutes / ((time.time() - t) / 3) * 0.9))
        print(f"{(time.time() - t) / 3:.2f} s/step -> {steps} steps")
    cfg = TrainConfig(steps=steps, lr=args.lr, warmup=min(100, steps // 10), weight_decay=0.01, save_every=100,
                      eval_every=args.eval_every, seed=0, bf16=args.bf16, time_schedule=True)
    batches = dt.row_batches(train_rows, sizes, args.tokens_per_batch, seed=0)

    def evaluate():
        m = dt.chain_agreement(drafter, data, held_rows[: args.eval_rows], 5)
        return {"held_out_p2": m["top1"]["p2"], "held_out_expected_accepted_k5": m["expected_accepted"]["k5"]}

    started = time.time()
    train(drafter, loss_fn, batches, cfg, run_dir=run, time_limit=60 * args.minutes * 1.1, evaluate=evaluate)
    minutes = (time.time() - started) / 60
    drafter.eval()
    metrics = dt.chain_agreement(drafter, data, held_rows, args.num_heads)
    metrics.update({"kind": "feature", "k": args.num_heads, "d_hidden": args.d_hidden, "parameters": n_params,
                    "depth": args.depth, "bf16": args.bf16, "noise": args.noise, "reg_weight": args.reg_weight,
                    "lr": args.lr,
                    "train_answers": len(train_rows), "train_answer_tokens": data.answer_positions(train_rows),
                    "held_out_answers": len(held_rows), "steps": steps, "proposal_vocab": len(vocab),
                    "minutes_this_run": round(minutes, 1), "data": args.data, "held_out": str(held_dir)})
    if args.compare:  # the one-state heads on the same held-out answers
        from blockwise.tasks.lm import training

        heads, heads_vocab = heads_io.load_heads(args.compare)
        heads.bind(embed)
        answers = dt.answers_only(data, held_rows)
        metrics["compared"] = {"heads": args.compare, "kind": heads.cfg.kind, **training.agreement(
            heads, weight, answers, torch.arange(len(answers)), proposal_vocab=heads_vocab)}
    (run / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print(json.dumps(metrics, indent=1))
    heads_io.save_heads(drafter, run / "heads.safetensors", vocab, {"metrics": metrics})
    print(f"wrote {run / 'heads.safetensors'}")


if __name__ == "__main__":
    main()
