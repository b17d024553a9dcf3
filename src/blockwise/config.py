"""One source of truth for configuration: frozen dataclasses and named presets.

Glossary, used everywhere in this package:
    num_heads  heads a model has (available): p1 ... p_num_heads
    k       number of heads a decoder uses (p1 ... pk), k <= num_heads
    k̂       accepted block size of one iteration (1 <= k̂ <= k)
    p1..pk  the scoring head (p1) and the proposal heads; p_i predicts the token i positions ahead
    ε       distance tolerance of the ordinal acceptance rule (|proposal - argmax| <= ε)
    ℓ       minimum block size: at least ℓ tokens are accepted per iteration
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a Transformer. ``n_encoder_layers == 0`` means decoder-only."""

    vocab_size: int
    d_model: int = 256
    n_heads: int = 4
    d_ff: int = 1024
    n_layers: int = 3  # decoder layers
    n_encoder_layers: int = 0
    max_positions: int = 256
    dropout: float = 0.0
    pad_id: int = 0

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        for name in ("vocab_size", "d_model", "n_heads", "d_ff", "n_layers", "max_positions"):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")

    @property
    def encoder_decoder(self) -> bool:
        return self.n_encoder_layers > 0


HeadKind = Literal["paper", "residual", "chain", "feature"]
P1Mode = Literal["identity", "learned"]


@dataclass(frozen=True)
class HeadsConfig:
    """The proposal heads: ``num_heads`` heads available, p1..p_num_heads (a decoder uses the first k of them).

    kind="paper": the paper's multi-output layer (§6): one feed-forward layer, hidden size n·d_hidden (ReLU),
    output size n·d_model, a residual connection from the decoder output to each output, then the model's vocabulary
    projection; block-diagonal output (``model.heads.PaperHeads``).
    kind="residual": Medusa-1's head, h + SiLU(W h + b) with W of size d_model × d_model, one per head.
    kind="chain": each head also sees the token proposed before it (``model.heads.ChainHeads``); hidden d_hidden.
    kind="feature": a one-layer drafter that reads the whole sequence of the base's states and drafts state by state
    (after EAGLE; ``model.heads.FeatureDrafter``); its MLP's hidden size is d_hidden; it drafts up to num_heads - 1 tokens.
    p1="identity": p1 is the untouched base output, so a frozen base decodes exactly as the original model.
    p1="learned": p1 passes through the layer too (the paper's footnote 1).
    """

    num_heads: int = 4
    d_hidden: int = 256
    kind: HeadKind = "paper"
    p1: P1Mode = "identity"

    def __post_init__(self) -> None:
        if self.num_heads < 1:
            raise ValueError(f"HeadsConfig.num_heads must be >= 1, got {self.num_heads}")
        if self.d_hidden < 1:
            raise ValueError(f"HeadsConfig.d_hidden must be >= 1, got {self.d_hidden}")
        if self.kind not in ("paper", "residual", "chain", "feature"):
            raise ValueError(f"HeadsConfig.kind must be 'paper', 'residual', 'chain' or 'feature', got {self.kind!r}")
        if self.kind in ("chain", "feature") and self.p1 != "identity":
            raise ValueError(f"{self.kind} heads start from the base model's own p1: use p1='identity'")
        if self.p1 not in ("identity", "learned"):
            raise ValueError(f"HeadsConfig.p1 must be 'identity' or 'learned', got {self.p1!r}")

    @classmethod
    def from_dict(cls, fields: dict) -> "HeadsConfig":
        """From a checkpoint's metadata; files written before 2026-12 call ``num_heads`` "k"."""
        fields = dict(fields)
        if "k" in fields:
            fields["num_heads"] = fields.pop("k")
        return cls(**fields)


# Named model shapes. ``vocab_size`` is a placeholder: pass the real one with ``preset(name, vocab_size=...)``.
PRESETS: dict[str, ModelConfig] = {
    # tests: a few thousand parameters
    "tiny": ModelConfig(vocab_size=64, d_model=32, n_heads=4, d_ff=64, n_layers=2, n_encoder_layers=0, max_positions=128),
    "tiny-encdec": ModelConfig(vocab_size=64, d_model=32, n_heads=4, d_ff=64, n_layers=2, n_encoder_layers=2,
                               max_positions=128),
    # the end-to-end demo: trains in about a minute on 2 CPU cores
    "small": ModelConfig(vocab_size=256, d_model=128, n_heads=4, d_ff=512, n_layers=3, n_encoder_layers=0,
                         max_positions=512),
    # translation on this machine
    "mt-small": ModelConfig(vocab_size=8000, d_model=256, n_heads=4, d_ff=1024, n_layers=3, n_encoder_layers=3,
                            max_positions=256),
    # the paper's transformer_base shape
    "base": ModelConfig(vocab_size=32000, d_model=512, n_heads=8, d_ff=2048, n_layers=6, n_encoder_layers=6,
                        max_positions=512),
}


def preset(name: str, **overrides) -> ModelConfig:
    """A named preset with some fields replaced, e.g. ``preset("base", vocab_size=8000)``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)
