"""Acceptance rules as small pure functions: (block of proposals, p1 logits) -> accepted block size k̂ per row.

``block[:, i]`` is the i-th proposed token fed to the model (0-based); ``logits[:, i]`` are p1's logits at that fed
position, i.e. p1's prediction for the token after it. ``block[:, 0]`` was p1's own argmax in the previous call and is
always accepted; ``block[:, i]`` for i >= 1 is judged against ``logits[:, i - 1]``. The accepted length is one plus the
length of the unbroken run of matches (a cumulative product along the block).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor


def exact_matches(block: Tensor, logits: Tensor) -> Tensor:
    """(B, n-1) bool: proposal i+1 equals p1's argmax after proposal i."""
    return block[:, 1:] == logits[:, :-1].argmax(-1)


def top_k_matches(block: Tensor, logits: Tensor, top_k: int) -> Tensor:
    """(B, n-1) bool: proposal i+1 is among p1's top_k tokens after proposal i."""
    return Acceptance("top_k", top_k=top_k).matches(block, logits)


def distance_matches(block: Tensor, logits: Tensor, eps: float) -> Tensor:
    """(B, n-1) bool: |proposal i+1 - p1's argmax| <= ε, for ordinal tokens such as pixel intensities."""
    return (block[:, 1:] - logits[:, :-1].argmax(-1)).abs() <= eps


def accepted_length(matches: Tensor) -> Tensor:
    """k̂ (B,) = 1 + the number of leading True values of each row of ``matches`` (B, n-1)."""
    return 1 + matches.long().cumprod(dim=1).sum(dim=1)


def with_min_block(k_hat: Tensor, min_block: int, n: int) -> Tensor:
    """Accept at least ℓ = min_block tokens (never more than the n fed)."""
    return k_hat.clamp(min=min(min_block, n))


Rule = Literal["exact", "top_k", "distance"]


@dataclass(frozen=True)
class Acceptance:
    """Which rule verifies proposals. ``Acceptance()`` is exact: output identical to greedy decoding with p1."""

    rule: Rule = "exact"
    top_k: int = 1  # for rule="top_k"
    eps: float = 0.0  # ε, for rule="distance"
    min_block: int = 1  # ℓ

    def __post_init__(self) -> None:
        if self.rule not in ("exact", "top_k", "distance"):
            raise ValueError(f"unknown acceptance rule {self.rule!r}: use exact, top_k or distance")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.eps < 0:
            raise ValueError(f"ε must be >= 0, got {self.eps}")
        if self.min_block < 1:
            raise ValueError(f"the minimum block size ℓ must be >= 1, got {self.min_block}")

    def matches(self, block: Tensor, logits: Tensor) -> Tensor:
        """(B, n-1) bool: whether proposal i+1 of a block passes the rule against p1's logits after proposal i."""
        return self.judge(block[:, 1:], self.summary(logits[:, :-1]))

    def summary(self, logits: Tensor) -> Tensor:
        """What the rule needs of p1's logits (..., V): (..., m) token ids, m = top_k for the top-k rule and 1 (the argmax)
        otherwise. Trees judge each node against its parent's summary, gathered without copying whole logits."""
        if self.rule == "top_k":
            return logits.topk(min(self.top_k, logits.shape[-1]), dim=-1).indices
        return logits.argmax(-1, keepdim=True)

    def judge(self, tokens: Tensor, summary: Tensor) -> Tensor:
        """(...) bool: whether ``tokens`` (...) pass the rule given ``summary`` (..., m) of p1's logits before them."""
        if self.rule == "distance":
            return (tokens - summary[..., 0]).abs() <= self.eps
        return (summary == tokens[..., None]).any(-1)

    def __call__(self, block: Tensor, logits: Tensor) -> Tensor:
        k_hat = accepted_length(self.matches(block, logits))
        return with_min_block(k_hat, self.min_block, block.shape[1])

    def describe(self) -> str:
        name = {"exact": "exact", "top_k": f"top-{self.top_k}", "distance": f"ε={self.eps:g}"}[self.rule]
        return name + (f", ℓ={self.min_block}" if self.min_block > 1 else "")


EXACT = Acceptance()
