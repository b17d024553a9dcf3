"""Chained heads (after Hydra, Ankner et al. 2024): each head also sees the token proposed before it.

Head p_i's state is s_i = s_{i-1} + W_i ReLU(U_i [s_{i-1}; LN(e(ŷ_{i-1}))]) with s_1 = h, where e is the base
model's input embedding and ŷ_{i-1} the token p_{i-1} proposed (p1's own argmax for p2, which is always right). So p2
predicts the token after next knowing the next one, instead of guessing both. Proposing is sequential in i
(``propose``); training is teacher-forced (``forward`` with the true tokens as ``given``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...config import HeadsConfig
from .base import Heads


class ChainHeads(Heads):
    kind = "chain"
    reads_proposals = True

    def __init__(self, d_model: int, cfg: HeadsConfig) -> None:
        super().__init__(d_model, cfg)
        n = self.n_layer_heads
        self.emb_norm = nn.LayerNorm(d_model)
        self.up = nn.Parameter(torch.randn(n, cfg.d_hidden, 2 * d_model) * (2 * d_model) ** -0.5)
        self.up_bias = nn.Parameter(torch.zeros(n, cfg.d_hidden))
        self.down = nn.Parameter(torch.zeros(n, cfg.d_hidden, d_model))  # zero: s_i starts as a copy of s_{i-1}
        self.down_bias = nn.Parameter(torch.zeros(n, d_model))

    def step(self, state: Tensor, previous: Tensor, i: int) -> Tensor:
        """State s_i (..., D) of head p_i (2..k) from s_{i-1} and the input embedding of ŷ_{i-1} (..., D)."""
        j = i - 2  # p1 is the identity path, so p_i is the layer's (i-1)-th head
        x = torch.cat([state, self.emb_norm(previous)], dim=-1)
        hidden = F.relu(F.linear(x, self.up[j], self.up_bias[j]))
        return state + hidden @ self.down[j] + self.down_bias[j]

    def forward(self, h: Tensor, k: int | None = None, given: Tensor | None = None) -> Tensor:
        k = self.num_heads if k is None else k
        self.check(k)
        if k > 1 and (given is None or given.shape[-1] < k - 1):
            raise ValueError(f"chained heads p2..p{k} need the {k - 1} tokens before them (given=(..., k-1) ids)")
        states = [h]
        if k > 1:
            previous = self.embed(given[..., : k - 1])  # (..., k-1, D)
            for i in range(2, k + 1):
                states.append(self.step(states[-1], previous[..., i - 2, :], i))
        return torch.stack(states, dim=-2)

    def p1(self, h: Tensor) -> Tensor:
        return h  # HeadsConfig enforces p1="identity" for chained heads

    def propose(self, h: Tensor, y1: Tensor, k: int, invariant: bool = False) -> Tensor:
        self.check(k)
        state, given, logits = h, y1, []
        for i in range(2, k + 1):
            state = self.step(state, self.embed(given), i)
            logits.append(self.project(state, invariant=invariant))
            given = logits[-1].argmax(-1)
        return torch.stack(logits, dim=-2)

    def draft(self, h: Tensor, state: Tensor, token: Tensor, i: int,
              invariant: bool = False) -> tuple[Tensor, Tensor]:
        self.check(i)
        state = self.step(state, self.embed(token), i)
        return state, self.project(state, invariant=invariant)
