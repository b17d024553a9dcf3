"""What every kind of proposal heads is: a module over the base model's final hidden states.

Heads p1..p_num_heads: head p_i predicts the token i positions ahead, so p1 is the next token. A decoder uses the
first k of them (k <= num_heads). With p1="identity" p1 is the base model's own output (a frozen base decodes as
itself); with p1="learned" p1 passes through the heads too (the paper's footnote 1).

A kind owns its own parameters and refers to the base model's input embedding and output projection, which the
model that carries the heads hands over once (``bind``; references, not submodules, so they stay out of the heads'
state dict). Every kind answers the same three questions:
    ``forward(h, k, given)``   teacher-forced states of p1..pk (training, agreement): (..., D) -> (..., k, D);
    ``p1(h)``                  the state p1 scores (the decoders' greedy distribution);
    ``propose(h, y1, k)``      at decoding time, logits of p2..pk given ŷ1, the token p1 chose at h.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from ...config import HeadsConfig

Embed = Callable[[Tensor], Tensor]  # token ids (...) -> input embeddings (..., D)
Project = Callable[..., Tensor]  # states (..., D) [, invariant=bool] -> logits (..., V)



def expected_metrics(expected: Sequence[float]) -> dict:
    """Held-out expected accepted block sizes E(1..K) as files store them (a heads file's or a checkpoint's
    ``metrics``): {"expected_accepted": {"k1": ..., "kK": ...}}."""
    return {"expected_accepted": {f"k{i + 1}": round(float(e), 3) for i, e in enumerate(expected)}}


def expected_from_metrics(metrics: dict) -> list[float] | None:
    """E(1..K) from a file's ``metrics`` (``expected_metrics``), or None where it records none."""
    expected = metrics.get("expected_accepted", {})
    return [float(expected[f"k{i}"]) for i in range(1, len(expected) + 1)] if expected else None


class Heads(nn.Module):
    """Base class of the head kinds (``PaperHeads``, ``ResidualHeads``, ``ChainHeads``)."""

    kind: str
    reads_proposals = False  # whether head p_i's logits depend on the token proposed before it (chained heads)
    reads_sequence = False  # whether it drafts from the whole sequence through a session's state (FeatureDrafter)

    def __init__(self, d_model: int, cfg: HeadsConfig) -> None:
        super().__init__()
        if cfg.kind != self.kind:
            raise ValueError(f"{type(self).__name__} is kind {self.kind!r}, the config says {cfg.kind!r}")
        self.cfg, self.d_model = cfg, d_model
        # heads that have parameters here: p2..pk with p1 the identity path, p1..pk with a learned p1
        self.n_layer_heads = max(cfg.num_heads - 1 if cfg.p1 == "identity" else cfg.num_heads, 0)
        self._base: tuple[Embed, Project | None] | None = None
        # held-out expected accepted block size E(k) at k = 1..num_heads, where the heads file records it: the prior of
        # the block-size policy (decoding/policy.py)
        self.expected_accepted: list[float] | None = None
        # the base model a heads file says they were trained for (name, fingerprint, architecture, vocab_size, d_model),
        # where it says so: ``blockwise.lm.check_heads`` refuses them for another model
        self.trained_for: dict | None = None

    @property
    def num_heads(self) -> int:
        """Heads available: p1..p_num_heads."""
        return self.cfg.num_heads

    # -- the base model's embedding and projection ----------------------------------------------------------------
    def bind(self, embed: Embed, project: Project | None = None) -> "Heads":
        """Refer to the base model's input embedding and output projection (``project(states, invariant=False)``).
        The model that carries the heads calls this once; heads serve one model at a time (``for_model``). Training
        on stored hidden states needs only the embedding (chained heads read the true tokens)."""
        self._base = (embed, project)
        return self

    def for_model(self) -> "Heads":
        """These heads if no model holds them yet, else a copy of them for another model (``copy``)."""
        return self if self._base is None else self.copy()

    def copy(self) -> "Heads":
        """A copy of these heads: the same weights, dtype, device, mode and metadata, bound to no model."""
        copy = type(self)(self.d_model, self.cfg)
        copy.load_state_dict(self.state_dict())
        copy.expected_accepted, copy.trained_for = self.expected_accepted, self.trained_for
        p = next(self.parameters(), None)
        return copy if p is None else copy.to(dtype=p.dtype, device=p.device).train(self.training)

    def quantized(self, bits: int) -> "Heads":
        """These heads for a base with int8/int4 weights (``bits``): a kind whose steps cost a good part of a call
        quantizes a copy of itself (the feature drafter); the others, a few small products, stay as they are."""
        return self

    def embed(self, tokens: Tensor) -> Tensor:
        return self._bound()[0](tokens)

    def project(self, states: Tensor, invariant: bool = False) -> Tensor:
        project = self._bound()[1]
        if project is None:
            raise RuntimeError("these heads were bound to an embedding only: no output projection to score with")
        return project(states, invariant=invariant)

    def _bound(self) -> tuple[Embed, Project | None]:
        if self._base is None:
            raise RuntimeError("these heads are not attached to a base model: call heads.bind(embed, project)")
        return self._base

    # -- what every kind answers ------------------------------------------------------------------------------------
    def check(self, k: int) -> None:
        if not 1 <= k <= self.num_heads:
            raise ValueError(f"asked for {k} heads but there are {self.num_heads} (p1..p{self.num_heads})")

    def forward(self, h: Tensor, k: int | None = None, given: Tensor | None = None) -> Tensor:
        """Teacher-forced states of p1..pk: (..., D) -> (..., k, D). ``given`` (..., k-1): the true tokens 1..k-1
        positions ahead (what p1..p_{k-1} should propose); kinds that do not read proposals ignore it."""
        raise NotImplementedError

    def p1(self, h: Tensor) -> Tensor:
        """The state (..., D) whose projection is p1's logits."""
        raise NotImplementedError

    def propose(self, h: Tensor, y1: Tensor, k: int, invariant: bool = False) -> Tensor:
        """Logits (..., k-1, V) of p2..pk (k >= 2) at states h (..., D), given ŷ1 (...,), p1's argmax at h."""
        raise NotImplementedError

    def draft(self, h: Tensor, state: Tensor, token: Tensor, i: int,
              invariant: bool = False) -> tuple[Tensor, Tensor]:
        """One depth of a candidate tree (decoding/tree.py): head p_i's state (..., D) and logits (..., V) at a node
        whose token is ``token`` (...) and whose parent's head state is ``state`` (..., D): h itself for p2, whose
        ``token`` is ŷ1. ``h`` (..., D) is the accepted position's hidden state, broadcast like ``state``. Kinds that
        do not read proposals (``reads_proposals`` False) give every node of a depth the same answer."""
        raise NotImplementedError

    def states(self, h: Tensor, heads: tuple[int, ...], given: Tensor | None = None) -> Tensor:
        """Teacher-forced states (..., len(heads), D) of the heads p_i, i in ``heads`` (1-based): for the losses."""
        k = max(heads)
        return self(h, k, given)[..., [i - 1 for i in heads], :]


class IndependentHeads(Heads):
    """Heads that see only h (paper, residual): p2..pk are computed at once, whatever ŷ1 is."""

    def layer(self, h: Tensor, n: int) -> Tensor:
        """States (..., n, D) of the first n heads that have parameters here, residual included."""
        raise NotImplementedError

    def forward(self, h: Tensor, k: int | None = None, given: Tensor | None = None) -> Tensor:
        k = self.num_heads if k is None else k
        self.check(k)
        if self.cfg.p1 == "identity":
            start = h.unsqueeze(-2)
            return start if k == 1 else torch.cat([start, self.layer(h, k - 1)], dim=-2)
        return self.layer(h, k)

    def p1(self, h: Tensor) -> Tensor:
        return h if self.cfg.p1 == "identity" else self.layer(h, 1)[..., 0, :]

    def propose(self, h: Tensor, y1: Tensor, k: int, invariant: bool = False) -> Tensor:
        self.check(k)
        out = self.layer(h, k - 1) if self.cfg.p1 == "identity" else self.layer(h, k)[..., 1:, :]
        return self.project(out, invariant=invariant)

    def draft(self, h: Tensor, state: Tensor, token: Tensor, i: int,
              invariant: bool = False) -> tuple[Tensor, Tensor]:
        self.check(i)
        s = self.layer(h, i - 1)[..., i - 2, :] if self.cfg.p1 == "identity" else self.layer(h, i)[..., i - 1, :]
        return s, self.project(s, invariant=invariant)
