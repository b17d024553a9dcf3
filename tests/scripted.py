"""A scripted model whose greedy continuation and head accuracy are a table, so every accepted length is forced.

Greedy's next token is a function of the prefix's (sum, length): g(s, L). The session keeps the fed tokens in a
buffer addressed by position and rolls it back with ``truncate``, exactly like a KV cache, so a rollback bug changes
the sums and the output. The hidden state of a position is (sum of the prefix through it, its length).
Proposal head p_i is right when i <= ``correct(L)`` (p1 always), wrong (the right token + 1) otherwise; p1's logits put
the right token first and the right token + 1 second, so top-2 and ε = 1 accept every wrong proposal.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor


class ScriptedModel:
    def __init__(self, k: int, correct: Callable[[int], int], vocab_size: int = 50, eos_id: int | None = None,
                 eos_at: int | None = None, max_positions: int = 4096,
                 rank: Callable[[int, int], int] | None = None) -> None:
        self.num_heads, self.max_positions = k, max_positions
        self.vocab_size, self.correct, self.eos_id, self.eos_at = vocab_size, correct, eos_id, eos_at
        # trees: at a node of length L drafted by head p_i, the right token has rank rank(L, i) among the head's
        # candidates (right + 1, right + 2, ... fill the other ranks). Default: the chain's script, rank 0 when
        # p_i is right (i <= correct(length at the accepted position)), else rank 1 behind right + 1.
        self.rank = rank or (lambda length, i: 0 if i <= max(1, correct(length - i + 1)) else 1)

    def next_token(self, s: int, length: int) -> int:
        """Greedy's next token after a prefix of sum s and length L (end-of-sequence once L reaches eos_at)."""
        if self.eos_at is not None and length >= self.eos_at:
            return self.eos_id
        t = (s * 31 + length * 7) % (self.vocab_size - 2) + 2  # never 0 (padding) or 1 (the eos of the tests)
        return t

    def start(self, batch_size: int, capacity: int, sources: Sequence[Sequence[int]] | None = None) -> "ScriptedSession":
        return ScriptedSession(self, batch_size, capacity)


class BufferSession:
    """A test session's cache: fed tokens in ``buffer`` by position, rolled back, moved and selected like a KV cache."""

    buffer: Tensor
    lengths: Tensor

    def compact(self, start: Tensor, path: Tensor, lengths: Tensor) -> None:
        d = path.shape[1]
        moved = self.buffer.gather(1, start[:, None] + path)
        self.buffer.scatter_(1, start[:, None] + torch.arange(d), moved)
        self.lengths = lengths.clone()

    def truncate(self, lengths: Tensor) -> None:
        self.lengths = lengths.clone()

    def select(self, rows: Tensor) -> None:
        self.buffer, self.lengths = self.buffer[rows], self.lengths[rows]


class ScriptedSession(BufferSession):
    def __init__(self, model: ScriptedModel, batch_size: int, capacity: int) -> None:
        self.model = model
        self.buffer = torch.full((batch_size, capacity), -1, dtype=torch.long)
        self.lengths = torch.zeros(batch_size, dtype=torch.long)

    reads_proposals = True

    def feed(self, tokens: Tensor, tree=None) -> Tensor:
        B, T = tokens.shape
        pos = self.lengths[:, None] + torch.arange(T)
        self.buffer.scatter_(1, pos, tokens)
        start, self.lengths = self.lengths, self.lengths + T
        if tree is not None:  # a node's state: the row's tokens before the tree plus its ancestors' and its own
            before = torch.stack([self.buffer[b, : int(start[b])].sum() for b in range(B)])
            fed = self.buffer.gather(1, pos).double()  # read back: a wrong slot shows
            sums = before[:, None].double() + (tree.visible.double() @ fed[..., None])[..., 0]
            return torch.stack([sums, (start[:, None] + tree.depth + 1).double()], dim=-1)
        # hidden state at each fed position: (sum of the buffer through it, length through it)
        sums = torch.stack([self.buffer[b, : int(self.lengths[b])].cumsum(0)[pos[b]] for b in range(B)])
        return torch.stack([sums, pos + 1], dim=-1).double()  # (B, T, 2)

    def _logits(self, token: int, width: int) -> Tensor:
        row = torch.full((width,), -10.0, dtype=torch.float64)
        row[(token + 1) % width] = 5.0  # the runner-up: right token + 1
        row[token] = 10.0
        return row

    def scores(self, hidden: Tensor) -> Tensor:
        return self._proposals(hidden, 1)[..., 0, :]

    def proposals(self, hidden: Tensor, given: Tensor, k: int) -> Tensor:
        return self._proposals(hidden, k)[..., 1:, :]

    def _proposals(self, hidden: Tensor, k: int) -> Tensor:
        flat = hidden.reshape(-1, 2)
        out = torch.empty(flat.shape[0], k, self.model.vocab_size, dtype=torch.float64)
        for r, (s, length) in enumerate(flat.long().tolist()):
            n_right = self.model.correct(length)
            for i in range(k):
                t = self.model.next_token(s, length)
                guess = t if i < max(1, n_right) else (t + 1) % self.model.vocab_size
                out[r, i] = self._logits(guess, self.model.vocab_size)
                s, length = s + guess, length + 1  # later heads continue from the proposed tokens
        return out.reshape(*hidden.shape[:-1], k, self.model.vocab_size)

    def draft(self, hidden: Tensor, state: Tensor, token: Tensor, i: int) -> tuple[Tensor, Tensor]:
        """Head p_i at a tree node whose token is ``token`` and whose parent's state is ``state`` (sum, length)."""
        node = torch.stack([state[..., 0] + token, state[..., 1] + 1], dim=-1)  # (..., 2)
        flat = node.reshape(-1, 2).long().tolist()
        V = self.model.vocab_size
        out = torch.full((len(flat), V), -10.0, dtype=torch.float64)
        for r, (s, length) in enumerate(flat):
            right = self.model.next_token(s, length)
            rank = self.model.rank(length, i)
            wrong = [(right + 1 + j) % V for j in range(V - 1)]
            order = wrong[:rank] + [right] + wrong[rank:]
            out[r, order[:8]] = 10.0 - torch.arange(8, dtype=torch.float64)
        return node, out.reshape(*node.shape[:-1], V)
