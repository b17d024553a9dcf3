"""Proposal heads: the paper's multi-output layer (§6, Fig. 3) and a per-head residual variant.

Heads map decoder hidden states h (..., D) to one hidden state per head (..., n, D); the base model's own vocabulary
projection turns each into logits. Head i (1-based) predicts the token i positions ahead, so p1 is the next token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import HeadsConfig


class ProposalHeads(nn.Module):
    def __init__(self, d_model: int, cfg: HeadsConfig) -> None:
        super().__init__()
        self.cfg, self.d_model = cfg, d_model
        # With p1="identity" the layer only makes p2..pk; p1 is the base model's output itself.
        self.n_layer_heads = cfg.k - 1 if cfg.p1 == "identity" else cfg.k
        n = max(self.n_layer_heads, 0)
        if cfg.kind == "paper":
            # One feed-forward layer: hidden n·d_hidden (ReLU), output n·d_model. Each head owns its slice of the hidden
            # layer and its own output matrix (block-diagonal output): the literal dense (n·d_hidden × n·d_model) output
            # grows with k² (105M parameters for transformer_base at k=10) and costs more than it accepts.
            self.up = nn.Linear(d_model, n * cfg.d_hidden) if n else None
            self.down = nn.Parameter(torch.zeros(n, cfg.d_hidden, d_model))  # zero: heads start as copies of h
            self.down_bias = nn.Parameter(torch.zeros(n, d_model))
        else:
            # Medusa-1's head: h + SiLU(W h + b), one distinct module per head (Medusa repeated ONE module object and
            # shared its weights by accident).
            self.blocks = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(n))
            for block in self.blocks:
                nn.init.zeros_(block.weight), nn.init.zeros_(block.bias)

    @property
    def k(self) -> int:
        return self.cfg.k

    def _layer(self, h: Tensor, n: int) -> Tensor:
        """Outputs of the first n heads that go through the layer: (..., n, D), residual included."""
        if self.cfg.kind == "paper":
            hidden = F.relu(F.linear(h, self.up.weight[: n * self.cfg.d_hidden], self.up.bias[: n * self.cfg.d_hidden]))
            hidden = hidden.unflatten(-1, (n, self.cfg.d_hidden))  # (..., n, d_hidden)
            out = torch.einsum("...nh,nhd->...nd", hidden, self.down[:n]) + self.down_bias[:n]
        else:
            out = torch.stack([F.silu(self.blocks[i](h)) for i in range(n)], dim=-2)
        return h.unsqueeze(-2) + out

    def forward(self, h: Tensor, n: int | None = None, first: int = 1) -> Tensor:
        """Hidden states of heads p_first..p_n at every position: (..., D) -> (..., n - first + 1, D)."""
        n = self.k if n is None else n
        if not 1 <= n <= self.k:
            raise ValueError(f"asked for {n} heads but the model has k={self.k} (p1..p{self.k})")
        if not 1 <= first <= n:
            raise ValueError(f"asked for heads p{first}..p{n}: first must be in 1..{n}")
        if self.cfg.p1 == "identity":
            if first > 1:
                return self._layer(h, n - 1)[..., first - 2:, :]
            start = h.unsqueeze(-2)
            return start if n == 1 else torch.cat([start, self._layer(h, n - 1)], dim=-2)
        return self._layer(h, n)[..., first - 1:, :]

    def head(self, h: Tensor, i: int) -> Tensor:
        """Hidden state of head p_i alone (1-based): (..., D). Used by the random single-head loss."""
        if not 1 <= i <= self.k:
            raise ValueError(f"head p{i} does not exist (k={self.k})")
        if self.cfg.p1 == "identity":
            if i == 1:
                return h
            i_layer = i - 1
        else:
            i_layer = i
        if self.cfg.kind == "paper":
            rows = slice((i_layer - 1) * self.cfg.d_hidden, i_layer * self.cfg.d_hidden)
            hidden = F.relu(F.linear(h, self.up.weight[rows], self.up.bias[rows]))
            return h + hidden @ self.down[i_layer - 1] + self.down_bias[i_layer - 1]
        return h + F.silu(self.blocks[i_layer - 1](h))
