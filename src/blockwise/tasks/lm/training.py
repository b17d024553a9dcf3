"""What training heads on distilled data needs: the restricted vocabulary, the loss and the agreement metric.

The loss is a cross-entropy over a restricted vocabulary: the tokens the base model actually produces (a few thousand
of the 49,152), because the full 49,152 x 576 projection would dominate the backward pass. At decoding time the heads
are scored by the model's full output projection; a head whose argmax falls outside the set is merely wrong.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...model.heads import Heads
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
            "expected_accepted": {f"k{i + 1}": round(c, 3) for i, c in enumerate(cum)}}
