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

    @torch.no_grad()
    def feed(self, tokens: Tensor, tree=None) -> Tensor:
        if self.drafter is None:
            return self.model.decode(tokens, self.cache, tree)
        if tree is not None:
            raise ValueError("the feature-level drafter does not draft candidate trees yet: decode with chains")
        start = self.cache.lengths
        hidden = self.model.decode(tokens, self.cache)
        self.drafter.write(start, tokens, hidden)
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
        if self.drafter is not None:  # chains only: p2 reads the new entries, each later head one drafted entry
            if token.dim() != 1:
                raise ValueError("the feature-level drafter drafts chains, not candidate trees (yet)")
            state = self.drafter.begin(self.cache.lengths, token, self.cache.invariant) if i == 2 else \
                self.drafter.extend(state, token, self.cache.invariant)
            return state, self.model.heads.project(state, invariant=self.cache.invariant)
        return self.model.heads.draft(hidden, state, token, i, invariant=self.cache.invariant)

    def truncate(self, lengths: Tensor) -> None:
        self.cache.truncate(lengths)

    def compact(self, start: Tensor, path: Tensor, lengths: Tensor) -> None:
        self.cache.compact(start, path, lengths)

    def select(self, rows: Tensor) -> None:
        self.cache.select(rows)
        if self.drafter is not None:
            self.drafter.select(rows)
