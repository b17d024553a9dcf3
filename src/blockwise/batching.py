"""Ragged token lists to padded tensors."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def pad(rows: Sequence[Sequence[int]], pad_id: int = 0, device: torch.device | str = "cpu") -> Tensor:
    """Right-pad token lists into a (B, T_max) tensor."""
    if len(rows) == 0:
        raise ValueError("the batch is empty")
    if any(len(r) == 0 for r in rows):
        raise ValueError("empty sequence in the batch: every row needs at least one token")
    width = max(len(r) for r in rows)
    flat = [list(r) + [pad_id] * (width - len(r)) for r in rows]  # one conversion, not one per row
    return torch.tensor(flat, dtype=torch.long, device=device)


def lengths_mask(rows: Sequence[Sequence[int]], width: int, device: torch.device | str = "cpu") -> Tensor:
    """(B, width) True where a row has a token."""
    lengths = torch.tensor([len(r) for r in rows], device=device)
    return torch.arange(width, device=device)[None, :] < lengths[:, None]
