"""The paper's multi-output layer (Stern et al. 2018, §6, Fig. 3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...config import HeadsConfig
from .base import IndependentHeads


class PaperHeads(IndependentHeads):
    """One feed-forward layer: hidden n·d_hidden (ReLU), output n·d_model, a residual from h to every output.

    Each head owns its slice of the hidden layer and its own output matrix (block-diagonal output): the literal dense
    (n·d_hidden × n·d_model) output grows with k² (105M parameters for transformer_base at k=10) and costs more than
    it accepts."""

    kind = "paper"

    def __init__(self, d_model: int, cfg: HeadsConfig) -> None:
        super().__init__(d_model, cfg)
        n = self.n_layer_heads
        self.up = nn.Linear(d_model, n * cfg.d_hidden) if n else None
        self.down = nn.Parameter(torch.zeros(n, cfg.d_hidden, d_model))  # zero: heads start as copies of h
        self.down_bias = nn.Parameter(torch.zeros(n, d_model))

    def layer(self, h: Tensor, n: int) -> Tensor:
        rows = n * self.cfg.d_hidden
        hidden = F.relu(F.linear(h, self.up.weight[:rows], self.up.bias[:rows]))
        hidden = hidden.unflatten(-1, (n, self.cfg.d_hidden))  # (..., n, d_hidden)
        out = torch.einsum("...nh,nhd->...nd", hidden, self.down[:n]) + self.down_bias[:n]
        return h.unsqueeze(-2) + out
