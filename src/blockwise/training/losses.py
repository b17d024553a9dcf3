"""Losses of the proposal heads: head p_i at position t predicts the target i-1 positions after p1's target.

Given hidden states ``hidden[:, t]`` whose p1 target is ``targets[:, t]``, head p_i's target is
``targets[:, t + i - 1]`` (the targets shifted left by i - 1). Two ways to combine the k cross-entropies:
    "mean":   the mean of all k losses;
    "random": the paper's choice when memory is short: one head drawn uniformly per minibatch (an unbiased estimate
              of the mean, at the cost of one head's vocabulary projection).
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

LossMode = Literal["mean", "random"]
# per-position losses (N,) of float logits (N, V) against target ids (N,), 0 where the target is pad_id
Criterion = Callable[[Tensor, Tensor, int], Tensor]


def cross_entropy(logits: Tensor, targets: Tensor, pad_id: int) -> Tensor:
    """The default criterion: per-position cross-entropy, 0 at padding."""
    return F.cross_entropy(logits, targets, ignore_index=pad_id, reduction="none")


def _mean(losses: Tensor, targets: Tensor, pad_id: int) -> Tensor:
    return losses.sum() / (targets != pad_id).sum().clamp(min=1)  # a head with no target this far ahead: 0


def proposal_loss(model, hidden: Tensor, targets: Tensor, k: int, mode: LossMode = "mean", pad_id: int = 0,
                  generator: torch.Generator | None = None, heads: tuple[int, ...] | None = None,
                  criterion: Criterion = cross_entropy, p1_weight: float | None = None) -> Tensor:
    """Loss of heads p1..pk (or of ``heads`` only, e.g. (2, ..., k) when p1 is frozen as the identity path).
    ``criterion``: per-position loss against the target ids (default cross-entropy; the super-resolution task smooths
    the targets over neighbouring intensities). ``p1_weight`` w (fine tuning, p1 among ``heads``): p1's loss weighs w
    and the other heads' loss (by ``mode``) 1 - w, instead of p1 counting as one head in k — which let fine tuning
    pull the base away from its own predictions."""
    heads = tuple(range(1, k + 1)) if heads is None else heads
    if mode not in ("mean", "random"):
        raise ValueError(f"unknown loss mode {mode!r}: use 'mean' or 'random'")
    if p1_weight is not None and heads[0] == 1 and len(heads) > 1:
        def part(chosen: tuple[int, ...], how: LossMode) -> Tensor:
            return proposal_loss(model, hidden, targets, k, how, pad_id, generator, chosen, criterion)

        return p1_weight * part((1,), "mean") + (1 - p1_weight) * part(heads[1:], mode)
    if mode == "random":
        heads = (heads[int(torch.randint(len(heads), (1,), generator=generator))],)
    return heads_loss(model, hidden, targets, heads, pad_id, criterion)


def heads_loss(model, hidden: Tensor, targets: Tensor, heads: tuple[int, ...], pad_id: int,
               criterion: Criterion = cross_entropy) -> Tensor:
    """Mean loss of ``heads``, teacher-forced: head p_i at position t predicts targets[t + i - 1], over the positions
    where that target exists and is not padding. Heads that read the tokens proposed before them (chained) are given
    the true tokens targets[t..t+i-2] (what p1..p_{i-1} should have proposed); the others ignore them."""
    n = max(heads)
    B, T = targets.shape
    ahead = F.pad(targets, (0, n), value=pad_id)  # (B, T + n): targets, then padding past the end
    given = torch.stack([ahead[:, j: j + T] for j in range(n - 1)], dim=-1) if n > 1 else None  # (B, T, n-1)
    if given is not None:
        given = given.clamp(min=0)  # an ignore-index of -100 is no token id; its loss is masked anyway
    states = model.heads.states(hidden, heads, given)  # (B, T, len(heads), D)
    losses = []
    for j, i in enumerate(heads):
        if i > T:  # no target this far ahead in this batch: a zero that still reaches the head (backward needs a graph)
            losses.append(model.heads.project(states[:, :1, j]).sum() * 0.0)
            continue
        logits = model.heads.project(states[:, : T - (i - 1), j])  # (B, T-i+1, V)
        shifted = targets[:, i - 1:]  # (B, T-i+1)
        losses.append(_mean(criterion(logits.flatten(0, 1).float(), shifted.flatten(), pad_id), shifted, pad_id))
    return torch.stack(losses).mean()
