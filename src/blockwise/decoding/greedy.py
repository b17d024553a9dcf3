"""Greedy decoding with p1: the reference every exact blockwise result must equal token for token."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from .common import DecodeOutput, DecodeStats, Rows, capacity, check_inputs, prefill
from .interface import DecodingModel


@torch.no_grad()
def greedy(model: DecodingModel, prefixes: Sequence[Sequence[int]], max_new_tokens: int, eos_id: int | None = None,
           sources: Sequence[Sequence[int]] | None = None,
           stream: Callable[[int, list[int]], None] | None = None, return_hidden: bool = False) -> DecodeOutput:
    """Append p1's argmax one token per call until end-of-sequence or ``max_new_tokens``; rows finish independently.

    ``stream(row, tokens)``, if given, sees each row's tokens as they are produced (e.g. to print them).
    ``return_hidden`` also returns, per row, the final hidden state each new token was chosen from (``hidden[row][j]``
    gave ``tokens[row][j]``): the inputs of proposal heads trained on the model's own answers."""
    check_inputs(model, prefixes, max_new_tokens, sources)
    session, hidden = prefill(model, prefixes, capacity(prefixes, max_new_tokens), sources)
    stats, rows = DecodeStats(calls=1), Rows(len(prefixes), stream)
    states: list[tuple[list[int], Tensor]] = []  # per iteration: (caller's rows, their hidden states (B, D))
    produced = 0
    while True:
        token = session.scores(hidden).argmax(-1)  # (B,)
        if return_hidden:
            states.append((list(rows.ids), hidden.clone()))  # a copy: a session may reuse its output buffer
        for row, t in enumerate(token.tolist()):
            rows.append(row, [t])
        stats.iterations += 1
        stats.count_blocks([1] * token.shape[0])
        produced += 1
        done = token == eos_id if eos_id is not None else torch.zeros_like(token, dtype=torch.bool)
        if produced == max_new_tokens or bool(done.all()):
            break
        if bool(done.any()):
            kept = rows.keep(~done, session)
            token = token[kept]
        hidden = session.feed(token[:, None])[:, 0]  # (B, D)
        stats.calls += 1
    return DecodeOutput(rows.tokens, stats, _by_row(states, len(prefixes)) if return_hidden else None)


def _by_row(states: Sequence[tuple[list[int], Tensor]], batch_size: int) -> list[Tensor]:
    """Per caller's row, its hidden states (n, D) in the order of ``states`` (iterations, rows dropping out)."""
    flat = torch.cat([h for _, h in states])  # (sum of rows over iterations, D)
    owner = torch.tensor([row for ids, _ in states for row in ids], device=flat.device)
    return [flat[owner == row] for row in range(batch_size)]
