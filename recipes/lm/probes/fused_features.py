"""Does the drafter gain from base features of more than one depth (EAGLE-3's fused low/mid/high features)? A CPU A/B
at equal steps from the shipped drafter's weights (issue 18, "optionally features from more than one base layer").

Both arms continue training the shipped drafter (run 4) on the same answers, the same batches in the same order, with
the same loss (``tasks.lm.drafter.drafter_loss``, training-time test over 4 draft depths):
- A ("top"): as shipped, the entry reads [f_j; e(x_{j+1})] (f: the base's final normed state);
- B ("fused"): the entry also reads the base's residual stream after two earlier layers (``--layers``), each divided by
  its own RMS (SmolLM2's residual stream has channels 10-100x the rest), through new fuse columns that start at zero,
  so B starts as exactly A. A drafted entry has no base features: its extra inputs are zeros, as they would be when
  decoding (training-time test sees that too).
A's gain over the shipped drafter is what more training on these answers buys; B's gain over A is what the earlier
layers add. Judged on the 384 held-out answers (templates no training prompt uses) by the teacher-forced agreement at
each draft depth (``drafter_loss``'s top1_d: draft d right given the chain before it right) and the E[k̂] at k = 5 it
implies.

    python recipes/lm/probes/fused_features.py prepare --rows 2400 --threads 2      # states (~5 min)
    python recipes/lm/probes/fused_features.py train --arm top --steps 500 --threads 2     # ~15 min
    python recipes/lm/probes/fused_features.py train --arm fused --steps 500 --threads 2   # ~20 min
    python recipes/lm/probes/fused_features.py judge --threads 2   # -> results/lm/drafter/fused_features.json

A training process holds ~12 GB here: on a 24 GB machine run the arms one after the other (two at once, one core
each, had one killed for memory).

The same steps answer a second question, whether more training on chat-like answers raises the drafter's acceptance
on chat prompts it never saw (the benchmark prompts: 1.87 tokens per call at k = 5 where held-out documentation
prompts take 2.57): ``--templates`` keeps only training answers of those prompt templates, ``--layers none`` leaves
the earlier features out, ``--run`` keeps the data apart, and ``decode`` measures tokens per call at k = 5 (exact,
bf16, 96 new tokens) of the shipped drafter and each trained arm on the 16 benchmark prompts and on 16 held-out
documentation prompts:

    python recipes/lm/probes/fused_features.py prepare --run runs/lm/chat --templates chat1_,chat2_,text_ \
        --layers none --rows 4000 --threads 2
    python recipes/lm/probes/fused_features.py train --run runs/lm/chat --arm top --steps 400 --lr 1e-4 --threads 2
    python recipes/lm/probes/fused_features.py decode --run runs/lm/chat --threads 1 \
        --out results/lm/drafter/chat_finetune.json

Data: the GPU run 4's answers (runs/lm/drafter_gpu2/answers.npz) to its prompts (data/lm/drafter_v3/prompts.npz).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import blockwise  # noqa: F401  before torch: importing blockwise sets OMP_WAIT_POLICY

import numpy as np
import torch
from torch import nn

from blockwise.tasks.lm import drafter as dt
from blockwise.tasks.lm import heads_io

RUN = Path("runs/lm/fused")


class Fuse(nn.Module):
    """The drafter's ``fuse`` with extra inputs: W [state; e] + b, plus V · extras on the first call of a pass (the
    true entries, depth 0); later calls (drafted entries) see zeros there."""

    def __init__(self, fuse: nn.Linear, extra: int) -> None:
        super().__init__()
        self.base = fuse
        self.extra = nn.Linear(extra, fuse.out_features, bias=False)
        nn.init.zeros_(self.extra.weight)
        self.extras: torch.Tensor | None = None  # (B, T-1, extra), set before each pass
        self.calls = 0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.base(z)
        if self.calls == 0 and self.extras is not None:
            out = out + self.extra(self.extras.to(out.dtype))
        self.calls += 1
        return out


def prepare(args) -> None:
    from blockwise.tasks.hf import load_smollm2

    torch.set_num_threads(args.threads)
    p = np.load("data/lm/drafter_v3/prompts.npz")
    a = np.load("runs/lm/drafter_gpu2/answers.npz")
    prompts = dt.split_rows(p["ids"], p["lengths"])
    answers = dict(zip(a["rows"].tolist(), dt.split_rows(a["ids"], a["lengths"])))
    held = [r for r in sorted(answers) if p["held_out"][r]][:384]
    train = [r for r in sorted(answers) if not p["held_out"][r]]
    if args.templates:  # only the answers to prompts of these templates (name prefixes)
        names, prefixes = p["templates"], tuple(args.templates.split(","))
        train = [r for r in train if str(names[p["template"][r]]).startswith(prefixes)]
    g = torch.Generator().manual_seed(0)
    train = [train[i] for i in torch.randperm(len(train), generator=g)[: args.rows].tolist()]
    _, hf = load_smollm2()
    hf = hf.to(torch.bfloat16).eval()
    layers = [] if args.layers == "none" else [int(x) for x in args.layers.split(",")]
    out = {"layers": layers, "rows": train + held, "held": len(held), "tokens": [], "prompt": [], "top": [],
           "extra": []}
    seqs = [prompts[r] + answers[r] for r in train + held]
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    results: dict[int, tuple] = {}
    t0, done = time.time(), 0
    with torch.no_grad():
        i = 0
        while i < len(order):
            n = len(seqs[order[i]])
            batch = order[i: i + max(1, 8192 // n)]
            T = max(len(seqs[j]) for j in batch)
            ids = torch.zeros(len(batch), T, dtype=torch.long)
            for b, j in enumerate(batch):
                ids[b, : len(seqs[j])] = torch.tensor(seqs[j])  # right padding: causal, the pads come after
            hs = hf.model(input_ids=ids, output_hidden_states=True).hidden_states
            for b, j in enumerate(batch):
                L = len(seqs[j]) - 1
                ex = [hs[layer][b, :L].float() for layer in layers]
                ex = torch.cat([x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt() for x in ex], -1) if ex else \
                    torch.zeros(L, 0)
                results[j] = (hs[-1][b, :L].to(torch.float16), ex.to(torch.float16))
            i += len(batch)
            done += sum(len(seqs[j]) for j in batch)
            print(f"\r{i}/{len(order)} sequences, {done / (time.time() - t0):.0f} positions/s", end="", flush=True)
    print()
    rows = train + held
    out["tokens"] = [torch.tensor(s) for s in seqs]
    out["prompt"] = [len(prompts[r]) for r in rows]
    out["top"] = [results[j][0] for j in range(len(seqs))]
    out["extra"] = [results[j][1] for j in range(len(seqs))]
    RUN.mkdir(parents=True, exist_ok=True)
    torch.save(out, RUN / "data.pt")
    print(f"{len(train)} training + {len(held)} held-out sequences, {sum(len(s) for s in seqs)} positions, "
          f"{time.time() - t0:.0f} s -> {RUN / 'data.pt'}")


def setup(arm: str):
    from blockwise.tasks.hf import load_smollm2

    data = torch.load(RUN / "data.pt", weights_only=False)
    _, hf = load_smollm2()
    weight = hf.get_output_embeddings().weight.detach().clone().float()
    embed = nn.Embedding.from_pretrained(hf.get_input_embeddings().weight.detach().clone().float())
    del hf
    drafter, vocab = heads_io.load_heads(heads_io.DRAFTER_ASSET)
    drafter = drafter.float()
    drafter.bind(embed, dt.restricted_projection(weight, vocab))
    if arm == "fused":
        drafter.fuse = Fuse(drafter.fuse, data["extra"][0].shape[-1])
    V = weight.shape[0]
    remap = torch.full((V,), -1, dtype=torch.long)
    remap[vocab] = torch.arange(len(vocab))
    seqs = dt.Sequences(data["tokens"], data["top"], data["prompt"])
    return data, drafter, weight[vocab].contiguous(), remap, seqs


def batch_extras(data, rows, T):
    ex = torch.zeros(len(rows), T - 1, data["extra"][0].shape[-1])
    for i, r in enumerate(rows):
        ex[i, : data["extra"][r].shape[0]] = data["extra"][r].float()
    return ex


def loss(drafter, data, seqs, classes_w, remap, rows, noise, depth=3):
    states, tokens, lengths, prompt = seqs.batch(rows)
    if isinstance(drafter.fuse, Fuse):
        drafter.fuse.extras, drafter.fuse.calls = batch_extras(data, rows, tokens.shape[1]), 0
    return dt.drafter_loss(drafter, classes_w, remap, states, tokens, lengths, prompt, noise=noise, depth=depth)


def train(args) -> None:
    """One arm, with the project's training loop (``training.train``: warm-up then cosine, clipping, bf16 autocast,
    a checkpoint in runs/lm/fused/ARM: a rerun resumes; the loss every 10 steps in its log.jsonl)."""
    from blockwise.training import TrainConfig, train as run

    torch.set_num_threads(args.threads)
    data, drafter, classes_w, remap, seqs = setup(args.arm)
    n_train = len(data["rows"]) - data["held"]
    sizes = [len(t) for t in data["tokens"]]
    rms = float(torch.cat([data["top"][r].float() for r in range(200)]).pow(2).mean().sqrt())
    batches = dt.row_batches(list(range(n_train)), sizes, args.tokens_per_batch, seed=0)
    cfg = TrainConfig(steps=args.steps, lr=args.lr, warmup=20, weight_decay=0.01, clip=1.0, bf16=True,
                      save_every=100, eval_every=10 ** 9, seed=0)
    run(drafter, lambda rows: loss(drafter, data, seqs, classes_w, remap, rows, args.noise * rms)[0], batches, cfg,
        run_dir=RUN / args.arm)
    torch.save(drafter.state_dict(), RUN / args.arm / "drafter.pt")


@torch.no_grad()
def judge_one(arm: str, weights: Path | None) -> dict:
    data, drafter, classes_w, remap, seqs = setup(arm)
    if weights is not None:
        drafter.load_state_dict(torch.load(weights))
    drafter.eval()
    held = list(range(len(data["rows"]) - data["held"], len(data["rows"])))
    right, count = torch.zeros(4), torch.zeros(4)
    for s in range(0, len(held), 32):
        rows = held[s: s + 32]
        _, m = loss(drafter, data, seqs, classes_w, remap, rows, 0.0)
        n = seqs.answer_positions(rows)
        for d in range(4):
            right[d] += m[f"top1_{d + 1}"] * n
            count[d] += n
    top1 = (right / count).tolist()
    expected = 1 + sum(math.prod(top1[: d + 1]) for d in range(4))
    return {"top1_by_depth": [round(x, 4) for x in top1], "expected_accepted_k5": round(expected, 3)}


def judge(args) -> None:
    torch.set_num_threads(args.threads)
    result = {"shipped (run 4)": judge_one("top", None)}
    for arm in ("top", "fused"):
        if (RUN / arm / "drafter.pt").exists():
            result[arm] = judge_one(arm, RUN / arm / "drafter.pt")
            log = [json.loads(x) for x in open(RUN / arm / "log.jsonl")]
            result[arm]["steps"], result[arm]["minutes"] = log[-1]["step"], round(log[-1]["elapsed_s"] / 60, 1)
            result[arm]["training_loss_last_100_steps"] = round(
                statistics.mean(x["loss"] for x in log if x["step"] > log[-1]["step"] - 100), 4)
    data = torch.load(RUN / "data.pt", weights_only=False)
    result["data"] = {"train_sequences": len(data["rows"]) - data["held"], "held_out": data["held"],
                      "layers": data["layers"]}
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


@torch.no_grad()
def decode(args) -> None:
    """Tokens per call at k = 5 (exact, bf16) of the shipped drafter and each trained arm, on the benchmark prompts and
    on held-out documentation prompts (the first 16 of each)."""
    from blockwise import blockwise
    from blockwise.tasks.hf import load_smollm2
    from blockwise.tasks.llama import Llama, NativeLM
    from blockwise.tasks.lm.prompts import chat_ids

    torch.set_num_threads(args.threads)
    tokenizer, hf = load_smollm2()
    base = Llama.from_hf(hf).cast(torch.bfloat16)
    p = np.load("data/lm/drafter_v3/prompts.npz")
    prompts = dt.split_rows(p["ids"], p["lengths"])
    texts = json.loads(Path("recipes/lm/prompts.json").read_text())
    sets = {"benchmark chat prompts": [chat_ids(tokenizer, t["text"]) for t in texts[:16]],
            "held-out documentation prompts": [list(map(int, prompts[r])) for r in np.nonzero(p["held_out"])[0][:16]]}
    arms = {"shipped (run 4)": None, **{arm: RUN / arm / "drafter.pt" for arm in ("top", "fused")
                                        if (RUN / arm / "drafter.pt").exists()}}
    result = {}
    for name, weights in arms.items():
        drafter, vocab = heads_io.load_heads(heads_io.DRAFTER_ASSET)
        if weights is not None:
            drafter.load_state_dict(torch.load(weights))
        lm = NativeLM(base, drafter.to(torch.bfloat16), proposal_vocab=vocab)
        result[name] = {}
        for label, ids in sets.items():
            tokens = calls = 0
            for prompt in ids:
                out = blockwise(lm, [prompt], 96, k=5)
                tokens, calls = tokens + len(out.tokens[0]), calls + out.stats.calls - 1  # without the prompt's call
            result[name][label] = round(tokens / calls, 3)
        print(name, result[name], flush=True)
    Path(args.out).write_text(json.dumps({"tokens_per_call_k5": result, "run": str(RUN)}, indent=1) + "\n")


def main(argv=None) -> None:
    global RUN
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["prepare", "train", "judge", "decode"])
    ap.add_argument("--run", default=str(RUN), help="folder of the states and the trained arms")
    ap.add_argument("--templates", default="", help="prepare: only training answers to prompts of these templates "
                    "(comma-separated name prefixes, e.g. chat1_,chat2_,text_); default all")
    ap.add_argument("--rows", type=int, default=2400, help="training answers (a seeded sample of run 4's)")
    ap.add_argument("--layers", default="4,16", help="hidden_states indices of the earlier features (HF: i = after "
                    "layer i), or none")
    ap.add_argument("--arm", choices=["top", "fused"], default="top")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--tokens-per-batch", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="results/lm/drafter/fused_features.json")
    args = ap.parse_args(argv)
    RUN = Path(args.run)
    {"prepare": prepare, "train": train, "judge": judge, "decode": decode}[args.what](args)


if __name__ == "__main__":
    main()
