"""What training heads on distilled data needs: the restricted vocabulary, the loss and the agreement metric.

The loss is a cross-entropy over a restricted vocabulary: the tokens the base model actually produces (a few thousand
of the 49,152), because the full 49,152 x 576 projection would dominate the backward pass. At decoding time the heads
are scored by the model's full output projection; a head whose argmax falls outside the set is merely wrong.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ...model.heads import Heads, expected_metrics
from .distill import Distilled


def restricted_vocab(tokens: Tensor, vocab_size: int) -> Tensor:
    """Sorted ids of every token the base model produced (the classes of the restricted softmax)."""
    seen = torch.zeros(vocab_size, dtype=torch.bool)
    seen[tokens.long()] = True
    return seen.nonzero().squeeze(1)


def head_losses(heads: Heads, emb: Tensor, hidden: Tensor, targets: Tensor, valid: Tensor,
                given: Tensor | None = None) -> Tensor:
    """Per-head cross-entropy (k-1,) of p2..pk over a restricted vocabulary.

    ``emb`` (V', D) are the output-projection rows of the restricted classes; ``targets`` are indices into them.
    ``given`` (n, k-1): the true tokens y_{t+1}..y_{t+k-1} (token ids), which chained heads read (teacher forcing;
    heads bound to the base's input embedding) and the others ignore.
    """
    out = heads(hidden, heads.num_heads, given=given)[:, 1:]  # (n, k-1, D): p1 is the frozen identity path
    logits = out @ emb.T  # (n, k-1, V')
    t, v = targets[:, 1:], valid[:, 1:]
    ce = F.cross_entropy(logits.flatten(0, 1).float(), t.flatten(), reduction="none").view_as(t)
    return (ce * v).sum(0) / v.sum(0).clamp(min=1)


@torch.no_grad()
def agreement(heads: Heads, lm_head: Tensor, data: Distilled, index: Tensor, batch: int = 512,
              proposal_vocab: Tensor | None = None) -> dict:
    """Top-1 agreement of p1..pk with the base model's greedy tokens (full vocabulary), and the expected accepted
    block size at each k if proposals were judged independently of position (a cumulative product of matches).

    Chained heads (bound to the base's input embedding) are teacher-forced: their p_i agreement is conditional
    on right tokens before it. The expected block size is the same as with their own proposals (a run of right
    proposals feeds each head exactly the true tokens), so it compares across kinds; per-head agreement does not.
    With ``proposal_vocab`` p2..pk choose among those tokens only, as they do at decoding time."""
    k = heads.num_heads
    outside = None
    if proposal_vocab is not None:
        outside = torch.ones(lm_head.shape[0], dtype=torch.bool)
        outside[proposal_vocab] = False
    hits = torch.zeros(k)
    runs = torch.zeros(k)  # sum over positions of "p2..pi all right" (i = 1..k)
    count = torch.zeros(k)
    for s in range(0, len(index), batch):
        idx = index[s: s + batch]
        targets, valid = data.targets(idx, k)
        logits = heads(data.hidden[idx].float(), k, given=targets[:, : k - 1]) @ lm_head.T  # (n, k, V)
        if outside is not None:
            logits[:, 1:, outside] = float("-inf")
        right = (logits.argmax(-1) == targets) & valid
        hits += right.sum(0).float()
        count += valid.sum(0).float()
        run = right.clone()
        run[:, 0] = True
        runs += (run.long().cumprod(1).bool() & valid[:, :1]).sum(0).float()
    n_pos = count[0].clamp(min=1)
    acc = (hits / count.clamp(min=1)).tolist()
    cum = (runs / n_pos).cumsum(0).tolist()  # E[k̂] at k = 1..k
    return {"top1": {f"p{i + 1}": round(a, 4) for i, a in enumerate(acc)},
            **expected_metrics(cum)}


# -- the whole training run: what recipes/lm/02_train_heads.py and `blockwise train-heads` share ----------------------
@dataclasses.dataclass(frozen=True)
class FitConfig:
    """How ``fit_heads`` trains: the heads' shape, the softmax and proposal vocabularies, the budget."""

    kind: str = "chain"
    num_heads: int = 4
    d_hidden: int = 512
    batch: int = 512
    lr: float = 1e-3
    top_vocab: int = 4096  # softmax classes: the most frequent answer tokens plus every target of the batch
    proposal_vocab: int = 0  # p2..pk scored over the N most frequent answer tokens at decoding time (0: every one seen)
    minutes: float = 30.0  # the budget; sets the schedule's length from the measured speed (unless ``steps``)
    steps: int = 0  # a fixed schedule instead (reproducible bits whatever the machine's speed)
    bf16: bool = False
    weight_decay: float = 0.0
    eval_positions: int = 6000
    eval_every: int = 0  # held-out agreement on 1,500 positions every so many steps into log.jsonl (0: at the end)
    seed: int = 0


def fit_heads(data: Distilled, embed: Tensor, cfg: FitConfig, run: Path, token_embed=None,
              init: Heads | None = None, groups: dict[str, Tensor] | None = None,
              progress: bool = True) -> tuple[Heads, Tensor, dict]:
    """Train proposal heads p2..pk on stored hidden states of a frozen base (self-distillation); resumable in ``run``.

    ``embed`` (V, D): the base's output projection; ``token_embed``: its input embedding, token ids -> (..., D), as
    the model applies it (some scale it), which chained heads read (the true tokens, teacher-forced). ``init``: heads
    of the same shape to start from. ``groups``: name -> a boolean mask over the positions, for held-out agreement per
    group (e.g. per data set). Returns (heads, proposal vocabulary, metrics)."""
    import json
    import time

    from ...config import HeadsConfig
    from ...model.heads import make_heads
    from ...training import TrainConfig, train
    from ...training.loop import agreed, distributed
    from . import distill

    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    rank, world = distributed()  # under torchrun: the training loop splits each batch; process 0 writes
    train_idx, held_idx = distill.split_index(data, held_out=0.05, seed=0)
    say = print if progress and rank == 0 else (lambda *a, **k: None)
    say(f"{len(data)} positions: {len(train_idx)} train, {len(held_idx)} held out")
    if len(train_idx) == 0 or len(held_idx) == 0:
        raise ValueError(f"too little data to train and judge heads ({len(data)} answer positions; 5% of the answers "
                         f"are held out): give more prompts or a longer data budget")
    V = embed.shape[0]
    vocab = restricted_vocab(data.tokens, V)  # every token the base produced
    counts = torch.bincount(data.tokens[train_idx].long(), minlength=V)
    if 0 < cfg.proposal_vocab < len(vocab):
        vocab = counts.topk(cfg.proposal_vocab).indices.sort().values
        say(f"proposals over the {len(vocab)} most frequent answer tokens "
            f"({float(counts[vocab].sum() / counts.sum()):.1%} of training targets)")
    top = counts.topk(min(cfg.top_vocab, int((counts > 0).sum()))).indices
    say(f"answers use {int((counts > 0).sum())} distinct tokens; softmax over the top {len(top)} + batch targets")
    heads = make_heads(embed.shape[1], HeadsConfig(num_heads=cfg.num_heads, d_hidden=cfg.d_hidden, kind=cfg.kind))
    if token_embed is not None:  # chained heads read the true tokens' input embeddings
        heads.bind(token_embed)
    elif heads.reads_proposals:
        raise ValueError(f"{cfg.kind} heads read the proposed tokens: pass the base's input embedding (token_embed)")
    if init is not None and not (run / "checkpoint.pt").exists():
        heads.load_state_dict(init.state_dict())
    n_params = sum(p.numel() for p in heads.parameters())
    say(f"{cfg.kind} heads: {n_params / 1e6:.2f}M parameters ({2 * n_params / 2**20:.1f} MiB in float16)")

    def loss_fn(index):
        targets, valid = data.targets(index, cfg.num_heads)
        classes = torch.unique(torch.cat([top, targets[:, 1:][valid[:, 1:]]]))
        remap = torch.zeros(V, dtype=torch.long)
        remap[classes] = torch.arange(len(classes))
        given = targets[:, : cfg.num_heads - 1]
        return head_losses(heads, embed[classes], data.hidden[index].float(), remap[targets], valid, given).mean()

    # the schedule's length: fixed, or measured speed x budget (fixed at the first run: a resume keeps the schedule)
    steps_path = run / "train_config.json"  # written by the training loop
    if steps_path.exists():
        steps = json.loads(steps_path.read_text())["steps"]
    elif cfg.steps:
        steps = cfg.steps
    else:
        probe = distill.batches(len(train_idx), cfg.batch, seed=1)
        t = time.time()
        for _ in range(3):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                loss = loss_fn(train_idx[next(probe)])
            loss.backward()
        heads.zero_grad(set_to_none=True)
        steps = max(50, int(60 * cfg.minutes / ((time.time() - t) / 3) * 0.9))
        steps = int(agreed(steps, world))  # under torchrun: process 0's measurement for all
        say(f"{(time.time() - t) / 3:.2f} s/step -> {steps} steps")
    tcfg = TrainConfig(steps=steps, lr=cfg.lr, warmup=min(100, steps // 10), weight_decay=cfg.weight_decay,
                       bf16=cfg.bf16, save_every=50, eval_every=cfg.eval_every or 10 ** 9, seed=cfg.seed)
    batches = (train_idx[b] for b in distill.batches(len(train_idx), cfg.batch, seed=cfg.seed))
    g = torch.Generator().manual_seed(0)
    pick = held_idx[torch.randperm(len(held_idx), generator=g)[: cfg.eval_positions]]

    def evaluate():  # a learning curve of what matters: expected block size on held-out answers
        m = agreement(heads, embed, data, pick[:1500], proposal_vocab=vocab)
        return {"held_out_p2": m["top1"].get("p2"),
                "held_out_expected_accepted": m["expected_accepted"][f"k{cfg.num_heads}"]}

    def scores() -> dict:
        heads.eval()
        out = agreement(heads, embed, data, pick, proposal_vocab=vocab)
        if groups:
            out["by_data"] = {name: agreement(heads, embed, data, pick[mask[pick]], proposal_vocab=vocab)
                              for name, mask in groups.items() if bool(mask[pick].any())}
        return out

    before = scores() if init is not None else None
    if before is not None:
        say(f"held out, before training: {json.dumps(before)}")
    minutes = cfg.minutes if not cfg.steps else None
    train(heads, loss_fn, batches, tcfg, run_dir=run, evaluate=evaluate, progress=progress,
          time_limit=None if minutes is None else 60 * minutes * 1.1)
    metrics = scores()
    if before is not None:
        metrics["init_metrics"] = before
    metrics.update({"kind": cfg.kind, "k": cfg.num_heads, "d_hidden": cfg.d_hidden, "parameters": n_params,
                    "train_positions": len(train_idx), "held_out_positions": len(pick), "steps": steps,
                    "proposal_vocab": len(vocab)})
    if rank == 0:
        (run / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return heads.eval(), vocab, metrics
