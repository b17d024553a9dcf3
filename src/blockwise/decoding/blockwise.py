"""Blockwise parallel decoding with combined scoring and proposal (Stern et al. 2018, §3-4).

Each iteration is one model call: the k proposed tokens are fed at once; p1 at every fed position verifies them
(predict / verify / accept), and the heads at the last accepted position propose the next block: p1 from the scores
just computed, p2..pk from the heads. m tokens take about m/k̂ + 1 calls. Rows of a batch accept different k̂; the
cache rolls each row back to its own length.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .acceptance import EXACT, Acceptance
from .common import DecodeOutput, DecodeStats, Rows, capacity, check_inputs, prefill
from .interface import DecodingModel


@torch.no_grad()
def blockwise(model: DecodingModel, prefixes: Sequence[Sequence[int]], max_new_tokens: int, k: int | None = None,
              eos_id: int | None = None, accept: Acceptance = EXACT,
              sources: Sequence[Sequence[int]] | None = None,
              stream: Callable[[int, list[int]], None] | None = None) -> DecodeOutput:
    """Decode with blocks of up to k tokens. With exact acceptance the output equals ``greedy`` token for token.

    ``stream(row, tokens)``, if given, sees each row's accepted block as soon as it is verified."""
    k = model.num_heads if k is None else k
    check_inputs(model, prefixes, max_new_tokens, sources, k)
    session, hidden = prefill(model, prefixes, capacity(prefixes, max_new_tokens, k), sources)
    stats, rows = DecodeStats(calls=1), Rows(len(prefixes), stream)
    remaining = torch.full((len(prefixes),), max_new_tokens, device=hidden.device)
    block = propose(session, session.scores(hidden), hidden, k)  # (B, k): ŷ_{j+1..j+k}; ŷ_{j+1} is p1's argmax
    while True:
        n = min(k, int(remaining.max()))  # near the end, feed no more than any row may still accept
        block = block[:, :n]
        start = session.lengths.clone()
        hidden = session.feed(block)  # (B, n, D): verify this block and propose the next, in one call
        stats.calls += 1
        stats.iterations += 1
        scores = session.scores(hidden)  # (B, n, V): p1 at every fed position
        k_hat = accept(block, scores)  # (B,) in 1..n
        k_hat, finished = clip(k_hat, block, remaining, eos_id)
        session.truncate(start + k_hat)
        for row, (tokens, j) in enumerate(zip(block.tolist(), k_hat.tolist())):
            rows.append(row, tokens[:j])
        stats.count_blocks(k_hat.tolist())
        remaining = remaining - k_hat
        if bool(finished.all()):
            break
        if bool(finished.any()):
            kept = rows.keep(~finished, session)
            hidden, scores, k_hat, remaining = hidden[kept], scores[kept], k_hat[kept], remaining[kept]
        last = torch.arange(hidden.shape[0]), k_hat - 1  # the last accepted token of each row
        block = propose(session, scores[last], hidden[last], k)  # (B, k)
    return DecodeOutput(rows.tokens, stats)


def propose(session, p1_logits: torch.Tensor, hidden: torch.Tensor, k: int) -> torch.Tensor:
    """The next block ŷ_{j+1..j+k} (B, k): p1's argmax from the scores already computed, p2..pk from the heads."""
    first = p1_logits.argmax(-1, keepdim=True)  # (B, 1)
    if k == 1:
        return first
    return torch.cat([first, session.proposals(hidden, first[:, 0], k).argmax(-1)], dim=1)


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
