"""What every decoder shares: input checks, the prefill call, results with statistics, and row bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..batching import pad
from .interface import DecodingModel, Session


@dataclass
class DecodeStats:
    """Counts of one decoder run over a batch. ``block_sizes[j]`` = how many (row, iteration) pairs accepted k̂ = j;
    with ``k="auto"``, ``k_chosen[k]`` = how many iterations fed blocks of k tokens."""

    iterations: int = 0  # decoding-loop iterations over the batch
    calls: int = 0  # model invocations (the prefill call included)
    tokens: int = 0  # tokens produced, summed over rows
    block_sizes: list[int] = field(default_factory=list)
    k_chosen: list[int] = field(default_factory=list)

    @property
    def blocks(self) -> int:
        return sum(self.block_sizes)

    @property
    def mean_accepted(self) -> float:
        """Mean accepted block size: tokens produced per (row, iteration)."""
        return self.tokens / self.blocks if self.blocks else 0.0

    def count_blocks(self, k_hat: Sequence[int]) -> None:
        for j in k_hat:
            _grow(self.block_sizes, j + 1)
            self.block_sizes[j] += 1
            self.tokens += j

    def count_k(self, k: int) -> None:
        _grow(self.k_chosen, k + 1)
        self.k_chosen[k] += 1

    def merge(self, other: DecodeStats) -> None:
        """Add another run's counts to these (a corpus decoded batch by batch gets one total)."""
        self.iterations += other.iterations
        self.calls += other.calls
        self.tokens += other.tokens
        for mine, theirs in ((self.block_sizes, other.block_sizes), (self.k_chosen, other.k_chosen)):
            _grow(mine, len(theirs))
            for j, c in enumerate(theirs):
                mine[j] += c

    def as_dict(self) -> dict:
        return {"iterations": self.iterations, "calls": self.calls, "tokens": self.tokens,
                "block_sizes": list(self.block_sizes), "mean_accepted": self.mean_accepted,
                "k_chosen": list(self.k_chosen)}


def _grow(counts: list[int], n: int) -> None:
    if n > len(counts):
        counts.extend([0] * (n - len(counts)))


@dataclass
class DecodeOutput:
    tokens: list[list[int]]  # new tokens per row (end-of-sequence included when produced)
    stats: DecodeStats
    hidden: list[Tensor] | None = None  # greedy(return_hidden=True): per row (len(tokens[row]), D), see greedy


def check_inputs(model: DecodingModel, prefixes: Sequence[Sequence[int]], max_new_tokens: int,
                 sources: Sequence[Sequence[int]] | None, k: int = 1) -> None:
    if len(prefixes) == 0:
        raise ValueError("the batch is empty: give at least one prefix")
    if any(len(p) == 0 for p in prefixes):
        raise ValueError("every prefix needs at least one token (a prompt, or the start-of-sequence token)")
    if sources is not None and len(sources) != len(prefixes):
        raise ValueError(f"{len(sources)} sources for {len(prefixes)} prefixes")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k > model.num_heads:
        raise ValueError(f"k={k} is larger than the {model.num_heads} heads this model has (p1..p{model.num_heads})")
    need = capacity(prefixes, max_new_tokens, k)
    if need > model.max_positions:
        extra = f" + k-1={k - 1} verified positions past the end" if k > 1 else ""
        raise ValueError(f"a prefix of {max(len(p) for p in prefixes)} tokens + max_new_tokens={max_new_tokens}{extra} "
                         f"needs {need} positions, beyond the model's {model.max_positions}")


def capacity(prefixes: Sequence[Sequence[int]], max_new_tokens: int, k: int = 1) -> int:
    """Cache positions a decode may write: the longest prefix, the new tokens, and a block fed past a row's end."""
    return max(len(p) for p in prefixes) + max_new_tokens + k - 1


def prefill(model: DecodingModel, prefixes: Sequence[Sequence[int]], capacity: int,
            sources: Sequence[Sequence[int]] | None) -> tuple[Session, Tensor]:
    """Open a session and feed the right-padded prefixes in one call. Returns hidden states at each row's last token.

    Padding is written past the short rows' ends, then rolled back: later tokens overwrite it before anyone sees it.
    """
    session = model.start(len(prefixes), capacity, sources)
    tokens = pad(prefixes, 0, session.lengths.device)
    hidden = session.feed(tokens)  # (B, T, D)
    lengths = torch.tensor([len(p) for p in prefixes], device=tokens.device)
    session.truncate(lengths)
    return session, hidden[torch.arange(len(prefixes)), lengths - 1]  # (B, D)


class Rows:
    """Maps the session's current rows to the caller's batch rows while finished rows drop out."""

    def __init__(self, batch_size: int, stream: Callable[[int, list[int]], None] | None = None) -> None:
        self.ids = list(range(batch_size))
        self.tokens: list[list[int]] = [[] for _ in range(batch_size)]
        self.stream = stream  # called with (caller's row, accepted tokens) as soon as tokens are accepted

    def append(self, row: int, new: Sequence[int]) -> None:
        self.tokens[self.ids[row]].extend(new)
        if self.stream is not None and len(new):
            self.stream(self.ids[row], list(new))

    def take(self, block: Tensor, k_hat: Tensor, stats: DecodeStats) -> None:
        """Each row's first k̂ tokens of ``block`` (B, n) as accepted (streamed too), counted in ``stats``."""
        accepted = k_hat.tolist()
        for row, (tokens, j) in enumerate(zip(block.tolist(), accepted)):
            self.append(row, tokens[:j])
        stats.count_blocks(accepted)

    def end_early(self, first: Tensor, remaining: Tensor, eos_id: int | None, stats: DecodeStats,
                  session: Session) -> Tensor | None:
        """Rows whose next token ``first`` (B,) is their last (end-of-sequence, or the length limit) take it now and
        drop out, without another call: the first token of a block (p1's argmax, or the token drawn from p1) is
        accepted whatever the call says, so feeding it would only cost a call that greedy does not make. Returns the
        kept rows' indices (empty when every row ended), or None when no row ended."""
        # Python lists: this runs before every call, and three tiny tensor operations cost a small model ~0.3% a step
        tokens = first.tolist()
        ending = [left == 1 or token == eos_id for left, token in zip(remaining.tolist(), tokens)]
        if not any(ending):
            return None
        done = [row for row, end in enumerate(ending) if end]
        for row in done:
            self.append(row, [tokens[row]])
        stats.count_blocks([1] * len(done))
        if len(done) == len(tokens):
            return torch.zeros(0, dtype=torch.long, device=first.device)  # no row left: the session stays as it is
        return self.keep(torch.tensor([not end for end in ending], device=first.device), session)

    def keep(self, keep: Tensor, session: Session) -> Tensor:
        """Drop the rows where ``keep`` is False from the session; returns the kept row indices."""
        rows = keep.nonzero().squeeze(1)
        session.select(rows)
        self.ids = [self.ids[i] for i in rows.tolist()]
        return rows


def clip(k_hat: torch.Tensor, block: torch.Tensor, remaining: torch.Tensor,
         eos_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Never accept past end-of-sequence or past the length limit. Returns (k̂, row finished)."""
    k_hat = torch.minimum(k_hat, remaining)
    finished = k_hat == remaining
    if eos_id is not None:
        is_eos = block == eos_id  # (B, n)
        has_eos = is_eos.any(1)
        first_eos = torch.where(has_eos, is_eos.float().argmax(1), block.shape[1])  # (B,)
        eos_accepted = has_eos & (first_eos < k_hat)
        k_hat = torch.where(eos_accepted, first_eos + 1, k_hat)
        finished = finished | eos_accepted
    return k_hat, finished


def propose(session: Session, first: Tensor, hidden: Tensor, k: int) -> Tensor:
    """The next block ŷ_{j+1..j+k} (B, k): ``first`` = ŷ_{j+1} (B,), p1's argmax, then p2..pk from the heads."""
    if k == 1:
        return first[:, None]
    return torch.cat([first[:, None], session.proposals(hidden, first, k).argmax(-1)], dim=1)
