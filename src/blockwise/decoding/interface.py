"""The small protocol every decoder is written against.

A ``DecodingModel`` opens a ``Session`` for one batch. A session owns the model's cache: ``feed`` appends tokens after
each row's cached length and returns hidden states at every fed position; ``scores`` turns hidden states into p1's
logits and ``proposals`` into the logits of p2..pk. Our own models (``blockwise.model.CachedSession``), the Hugging
Face adapter and the scripted test models all satisfy it, so one decoding loop serves them all.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from torch import Tensor


class Session(Protocol):
    lengths: Tensor  # (B,) tokens held per row

    def feed(self, tokens: Tensor, tree=None) -> Tensor:
        """Append tokens (B, T) after each row's length; lengths advance by T. Returns hidden states (B, T, D).
        With ``tree`` (a ``decoding.tree.Tree``) the tokens are its nodes: node i sits at position length + depth[i]
        and attends to the row's tokens and its own ancestors only."""

    def scores(self, hidden: Tensor) -> Tensor:
        """Logits of p1 (..., V) at hidden states (..., D): the distribution greedy decoding follows."""

    def proposals(self, hidden: Tensor, given: Tensor, k: int) -> Tensor:
        """Logits of p2..pk (..., k - 1, V) at hidden states (..., D), k >= 2.

        ``given`` (...,) is ŷ1, p1's argmax at ``hidden`` (the decoder has it from ``scores``), which chained heads
        build on (other heads ignore it)."""

    def truncate(self, lengths: Tensor) -> None:
        """Roll each row back to an absolute length (B,)."""

    # Optional: ``proposal_vocab`` (V',) token ids, where p2..pk score only those tokens (every other logit -inf);
    # samplers and tree builders then work over those columns only. Absent or None: the whole vocabulary.

    # Candidate trees (decoding/tree.py) also need:
    reads_proposals: bool  # whether p_i's proposal depends on the token proposed before it

    def draft(self, hidden: Tensor, state: Tensor, token: Tensor, i: int) -> tuple[Tensor, Tensor]:
        """Head p_i's state and logits (..., V) at a tree node whose token is ``token`` (...) and whose parent's head
        state is ``state`` (..., D) (``hidden`` for p2, whose token is ŷ1); ``hidden`` broadcasts like ``state``."""

    def compact(self, start: Tensor, path: Tensor, lengths: Tensor) -> None:
        """After feeding a tree at lengths ``start`` (B,): keep the nodes path[b, :] (B, d) as if fed as a block (their
        cache entries move to start .. start + d - 1), then cut each row to the absolute ``lengths``."""

    def select(self, rows: Tensor) -> None:
        """Keep only these rows, in this order (drop finished rows, reorder beams)."""


class DecodingModel(Protocol):
    num_heads: int  # heads available, p1..p_num_heads: a decoder uses k <= num_heads
    max_positions: int

    def start(self, batch_size: int, capacity: int, sources: Sequence[Sequence[int]] | None = None) -> Session:
        """Open a session for ``batch_size`` rows of at most ``capacity`` tokens (encoding the sources, if any)."""
