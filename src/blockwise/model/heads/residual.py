"""Medusa-1's heads (Cai et al. 2024): h + SiLU(W h + b) per head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...config import HeadsConfig
from .base import IndependentHeads


class ResidualHeads(IndependentHeads):
    """One distinct d_model × d_model block per head (Medusa repeated ONE module object and shared its weights by
    accident)."""

    kind = "residual"

    def __init__(self, d_model: int, cfg: HeadsConfig) -> None:
        super().__init__(d_model, cfg)
        self.blocks = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(self.n_layer_heads))
        for block in self.blocks:
            nn.init.zeros_(block.weight), nn.init.zeros_(block.bias)  # heads start as copies of h

    def layer(self, h: Tensor, n: int) -> Tensor:
        return h.unsqueeze(-2) + torch.stack([F.silu(self.blocks[i](h)) for i in range(n)], dim=-2)
