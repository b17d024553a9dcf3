"""The one decoding session over our own models (the in-house Transformer and the native Llama) and their KVCache.

It implements the protocol ``blockwise.decoding.interface.Session``. The model it serves provides
``decode(tokens, cache)`` (hidden states at every fed position, appended after each row's cached length),
``scores(hidden, invariant)`` (p1's logits) and ``heads`` (which propose p2..pk). Whether the session is
batch-invariant was decided when its cache was made (``KVCache.invariant``) and is passed to every call.
Heads that read the whole sequence (the feature-level drafter) keep a ``DrafterState`` here, beside the cache: every call's
states are written into it, and it rolls back and drops rows with the session.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .cache import KVCache


class CachedSession:
    def __init__(self, model, cache: KVCache) -> None:
        self.model, self.cache = model, cache
        heads = model.heads
        self.drafter = heads.open(cache.batch_size, cache.capacity, cache.lengths.device) \
            if heads.reads_sequence else None

    @property
    def lengths(self) -> Tensor:
        return self.cache.lengths

    @property
    def proposal_vocab(self) -> Tensor | None:
        """The token ids p2..pk are scored over (every other one gets -inf), or None: the whole vocabulary."""
        return getattr(self.model, "proposal_vocab", None)

    @torch.no_grad()
    def feed(self, tokens: Tensor, tree=None) -> Tensor:
        if self.drafter is None:
            return self.model.decode(tokens, self.cache, tree)
        start = self.cache.lengths
        hidden = self.model.decode(tokens, self.cache, tree)
        self.drafter.write(start, tokens, hidden)  # a tree's nodes by slot, until ``compact`` keeps one path
        return hidden

    @torch.no_grad()
    def scores(self, hidden: Tensor) -> Tensor:
        return self.model.scores(hidden, invariant=self.cache.invariant)

    @torch.no_grad()
    def proposals(self, hidden: Tensor, given: Tensor, k: int) -> Tensor:
        if self.drafter is not None:
            return self.drafter.propose(self.cache.lengths, given, k, invariant=self.cache.invariant)
        return self.model.heads.propose(hidden, given, k, invariant=self.cache.invariant)

    @property
    def reads_proposals(self) -> bool:
        return self.model.heads.reads_proposals

    @torch.no_grad()
    def draft(self, hidden: Tensor, state: Tensor, token: Tensor, i: int) -> tuple[Tensor, Tensor]:
        if self.drafter is not None:  # p2 reads the new entries; each later depth drafts one entry per node
            inv = self.cache.invariant
            if token.dim() == 1:  # a chain (speculative sampling's block)
                state = self.drafter.begin(self.cache.lengths, token, inv) if i == 2 else \
                    self.drafter.extend(state, token, inv)
                return state, self.model.heads.project(state, invariant=inv)
            if i == 2:  # a tree's root: the state carries the id of the entry it came from (-1: a true one)
                f = self.drafter.begin(self.cache.lengths, token[:, 0], inv)[:, None]
                state = torch.cat([f, f.new_full(f.shape[:-1] + (1,), -1.0)], -1)
            else:
                state = self.drafter.grow(state, token, i, inv)
            return state, self.model.heads.project(state[..., :-1], invariant=inv)
        return self.model.heads.draft(hidden, state, token, i, invariant=self.cache.invariant)

    def truncate(self, lengths: Tensor) -> None:
        self.cache.truncate(lengths)

    def compact(self, start: Tensor, path: Tensor, lengths: Tensor) -> None:
        self.cache.compact(start, path, lengths)
        if self.drafter is not None:
            self.drafter.compact(start, path)

    def select(self, rows: Tensor) -> None:
        self.cache.select(rows)
        if self.drafter is not None:
            self.drafter.select(rows)
