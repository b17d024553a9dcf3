"""Held-out top-i agreement of each proposal head: the table a static candidate tree is chosen from.

``agreement[d][r]`` = the fraction of positions where head p_{d+2}'s rank-r token (0 = its best) is the token greedy
decoding produced d + 1 positions after p1's, with the heads fed the true tokens before it (teacher-forced: for chained
heads that is "given that its parent in the tree was right"). ``StaticTree.from_agreement(agreement, nodes)`` then
adds the nodes with the largest product of agreements along their path.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..decoding import greedy


@torch.no_grad()
def top_agreement(model, prefixes: Sequence[Sequence[int]], max_new_tokens: int, k: int | None = None,
                  top: int = 8, sources: Sequence[Sequence[int]] | None = None,
                  eos_id: int | None = None) -> list[list[float]]:
    """Agreement (k - 1 rows: heads p2..pk; ``top`` columns: ranks 0..top-1) on greedy decodes of ``prefixes``
    (a model with ``heads`` bound to its projection: ``BlockwiseModel``, ``NativeLM``)."""
    k = k or model.num_heads
    out = greedy(model, prefixes, max_new_tokens, eos_id=eos_id, sources=sources, return_hidden=True)
    hits = torch.zeros(k - 1, top, dtype=torch.float64)
    seen = torch.zeros(k - 1, dtype=torch.float64)
    for tokens, hidden in zip(out.tokens, out.hidden):
        n = len(tokens) - (k - 1)  # positions with k - 1 true tokens after p1's
        if n <= 0:
            continue
        truth = torch.tensor([tokens[j:j + k] for j in range(n)], device=hidden.device)  # (n, k): ŷ1 .. ŷk
        states = model.heads(hidden[:n], k, given=truth[:, : k - 1])  # (n, k, D) teacher-forced
        logits = model.heads.project(states[:, 1:])  # (n, k - 1, V): p2..pk
        ranks = logits.topk(top, dim=-1).indices  # (n, k - 1, top)
        hits += (ranks == truth[:, 1:, None]).double().sum(0).cpu()
        seen += n
    return (hits / seen.clamp(min=1)[:, None]).tolist()
