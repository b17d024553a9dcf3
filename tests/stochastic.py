"""A tiny stochastic model for the sampling tests: p1's distribution after a prefix is a row of a random table chosen
by a hash of the whole prefix, so the exact distribution of every continuation can be enumerated.

The session keeps the fed tokens in a buffer addressed by position (``scripted.BufferSession``: rolled back by
``truncate``, moved by ``compact``, as a KV cache is) and recomputes each position's hash from what the buffer holds: a rollback or compaction bug changes
the distributions that follow, and the tests see it. The hidden state of a position is its prefix's hash.

Proposal heads are close to p but not equal (p's logits plus noise, and some tokens they never propose), so drafts
are accepted sometimes, rejected sometimes, and the residual max(0, p - q) matters. ``chained`` heads read the token
before them (their state is the hash of the prefix with the proposals appended); the others see only the hidden state.
"""

from __future__ import annotations

from typing import Sequence

import torch
from scripted import BufferSession
from torch import Tensor

MOD, MUL, ROWS = 1_000_003, 7919, 97


def step_hash(h: Tensor, token: Tensor) -> Tensor:
    return (h * MUL + token + 1) % MOD


class StochasticModel:
    def __init__(self, vocab_size: int = 4, num_heads: int = 4, chained: bool = True, seed: int = 0,
                 noise: float = 1.0, max_positions: int = 64, proposal_vocab: Sequence[int] | None = None) -> None:
        g = torch.Generator().manual_seed(seed)
        self.vocab_size, self.num_heads, self.max_positions, self.chained = vocab_size, num_heads, max_positions, chained
        self.p_table = torch.randn(ROWS, vocab_size, generator=g, dtype=torch.float64) * 1.5
        q = self.p_table + noise * torch.randn(ROWS, vocab_size, generator=g, dtype=torch.float64)
        never = torch.rand(ROWS, vocab_size, generator=g) < 0.2  # tokens a head never proposes
        # ``proposal_vocab``: the heads score only these tokens (the session says so, as NativeLM's does)
        self.proposal_vocab = None if proposal_vocab is None else torch.tensor(proposal_vocab)
        if self.proposal_vocab is not None:
            never |= ~torch.isin(torch.arange(vocab_size), self.proposal_vocab)
        first = int(self.proposal_vocab[0]) if self.proposal_vocab is not None else 0
        never[:, first] &= ~(never.sum(1) == vocab_size)  # every row proposes something
        self.q_table = q.masked_fill(never, float("-inf"))

    def logits_after(self, tokens: Sequence[int]) -> Tensor:
        """p1's logits after a whole token sequence: what the enumeration of exact probabilities uses."""
        h = torch.tensor(0)
        for t in tokens:
            h = step_hash(h, torch.tensor(t))
        return self.p_table[int(h) % ROWS]

    def start(self, batch_size: int, capacity: int, sources=None) -> "StochasticSession":
        return StochasticSession(self, batch_size, capacity)


class StochasticSession(BufferSession):
    def __init__(self, model: StochasticModel, batch_size: int, capacity: int) -> None:
        self.model = model
        self.proposal_vocab = model.proposal_vocab
        self.buffer = torch.zeros(batch_size, capacity, dtype=torch.long)
        self.lengths = torch.zeros(batch_size, dtype=torch.long)

    @property
    def reads_proposals(self) -> bool:
        return self.model.chained

    def _hashes(self) -> Tensor:
        """(B, capacity): the hash of each row's buffer through every position (meaningful up to its length)."""
        h = torch.zeros(self.buffer.shape[0], dtype=torch.long)
        out = []
        for j in range(self.buffer.shape[1]):
            h = step_hash(h, self.buffer[:, j])
            out.append(h)
        return torch.stack(out, 1)

    def feed(self, tokens: Tensor, tree=None) -> Tensor:
        B, T = tokens.shape
        pos = self.lengths[:, None] + torch.arange(T)
        self.buffer.scatter_(1, pos, tokens)
        start, self.lengths = self.lengths, self.lengths + T
        if tree is None:
            return self._hashes().gather(1, pos).double()[..., None]  # (B, T, 1)
        before = torch.where(start > 0, self._hashes().gather(1, (start - 1).clamp(min=0)[:, None])[:, 0], 0)
        fed = self.buffer.gather(1, pos)  # read back: a wrong slot shows
        h = []
        for i in range(T):  # parents come before their children
            parent = tree.parents[:, i]
            above = torch.stack(h, 1).gather(1, parent.clamp(min=0)[:, None])[:, 0] if h else before
            h.append(step_hash(torch.where(parent >= 0, above, before), fed[:, i]))
        return torch.stack(h, 1).double()[..., None]

    def scores(self, hidden: Tensor) -> Tensor:
        return self.model.p_table[hidden[..., 0].long() % ROWS]

    def _q(self, state: Tensor) -> Tensor:
        return self.model.q_table[state.long() % ROWS]

    def proposals(self, hidden: Tensor, given: Tensor, k: int) -> Tensor:
        if self.model.chained:  # (not used by the samplers, which draft token by token; here for completeness)
            raise NotImplementedError
        h = hidden[..., 0].long()
        return torch.stack([self._q(h * 31 + i) for i in range(2, k + 1)], -2)  # (..., k - 1, V)

    def draft(self, hidden: Tensor, state: Tensor, token: Tensor, i: int) -> tuple[Tensor, Tensor]:
        if not self.model.chained:
            q = self._q(hidden[..., 0].long() * 31 + i)
            return state, q.expand(*state.shape[:-1], -1)
        node = step_hash(state[..., 0].long(), token)
        return node.double()[..., None], self._q(node * 13 + i)
