"""Proposal heads, one class per kind: the paper's layer, Medusa-1's residual block, chained heads, the feature-level
drafter (see base.py)."""

from ...config import HeadsConfig
from .base import Heads, IndependentHeads, expected_from_metrics, expected_metrics
from .chain import ChainHeads
from .drafter import DrafterState, FeatureDrafter
from .paper import PaperHeads
from .residual import ResidualHeads

KINDS: dict[str, type[Heads]] = {cls.kind: cls for cls in (PaperHeads, ResidualHeads, ChainHeads, FeatureDrafter)}


def make_heads(d_model: int, cfg: HeadsConfig) -> Heads:
    """Fresh heads of the kind ``cfg.kind``."""
    return KINDS[cfg.kind](d_model, cfg)


__all__ = ["KINDS", "ChainHeads", "DrafterState", "FeatureDrafter", "Heads", "IndependentHeads", "PaperHeads", "ResidualHeads", "make_heads"]
