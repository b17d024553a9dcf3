"""Losses of the proposal heads: head p_i at position t predicts the target i-1 positions after p1's target.

Given hidden states ``hidden[:, t]`` whose p1 target is ``targets[:, t]``, head p_i's target is ``targets[:, t + i - 1]``
(the targets shifted left by i - 1). Two ways to combine the k cross-entropies:
    "mean":   the mean of all k losses;
    "random": the paper's choice when memory is short: one head drawn uniformly per minibatch (an unbiased estimate
              of the mean, at the cost of one head's vocabulary projection).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

LossMode = Literal["mean", "random"]


def head_loss(model, hidden: Tensor, targets: Tensor, i: int, pad_id: int) -> Tensor:
    """Cross-entropy of head p_i (1-based) over the positions whose shifted target exists and is not padding."""
    T = targets.shape[1]
    if i > T:  # no target this far ahead in this batch: a zero that still reaches the head (backward needs a graph)
        return model.head_logits(hidden[:, :1], i).sum() * 0.0
    logits = model.head_logits(hidden[:, : T - (i - 1)], i)  # (B, T-i+1, V)
    shifted = targets[:, i - 1:]  # (B, T-i+1)
    return F.cross_entropy(logits.flatten(0, 1).float(), shifted.flatten(), ignore_index=pad_id)


def proposal_loss(model, hidden: Tensor, targets: Tensor, k: int, mode: LossMode = "mean", pad_id: int = 0,
                  generator: torch.Generator | None = None, heads: tuple[int, ...] | None = None) -> Tensor:
    """Loss of heads p1..pk (or of ``heads`` only, e.g. (2, ..., k) when p1 is frozen as the identity path)."""
    heads = tuple(range(1, k + 1)) if heads is None else heads
    if mode == "random":
        pick = int(torch.randint(len(heads), (1,), generator=generator))
        return head_loss(model, hidden, targets, heads[pick], pad_id)
    if mode != "mean":
        raise ValueError(f"unknown loss mode {mode!r}: use 'mean' or 'random'")
    return torch.stack([head_loss(model, hidden, targets, i, pad_id) for i in heads]).mean()
