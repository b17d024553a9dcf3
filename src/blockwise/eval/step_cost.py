"""What one decoding call costs as it feeds more tokens: the bound on blockwise decoding's wall-clock gain.

A greedy step feeds 1 token and scores it with p1; a blockwise verification call feeds T tokens and scores all of them.
If the T-token call costs ``ratio`` times the 1-token call, blockwise decoding that accepts k̂ tokens per call gains at
most about k̂ / ratio. Measured through the session protocol (``feed``, ``scores``, ``truncate``), so it applies to
every ``DecodingModel``: the in-house Transformer, the Hugging Face adapter, the native Llama.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..decoding.interface import Session


@dataclass(frozen=True)
class StepCost:
    ms: dict[int, float]  # T -> median milliseconds of one call feeding T tokens and scoring them (T = 1 included)

    @property
    def ratio(self) -> dict[int, float]:
        """T -> cost relative to the 1-token call."""
        return {t: v / self.ms[1] for t, v in self.ms.items()}


def step_cost(session: Session, tokens: Tensor, ts: Sequence[int], repeats: int = 9, warmup: int = 2,
              then: Callable[[Tensor, Tensor], object] | None = None,
              tree: Callable[[int], object] | None = None) -> StepCost:
    """Median wall-clock time of one call feeding T tokens after the session's current state and taking p1's argmax at
    all of them (``scores(feed(tokens[:, :T])).argmax(-1)``), for T = 1 and every T in ``ts``.

    ``tokens`` (B, >= max T): what is fed (its content does not matter for the cost). Each call is rolled back
    (``truncate``, outside the timed part), so the session ends as it started; its capacity must hold max T more tokens.
    ``warmup`` untimed calls precede the ``repeats`` timed ones of each T. ``then(hidden, best)``, if given, runs inside
    the timed part of every call with T > 1, with the hidden states (B, T, D) and p1's argmax (B, T) (e.g. to time the
    next proposal of a blockwise iteration too); the 1-token call, a greedy step, never runs it. ``tree(T)``, if
    given, makes the candidate tree (decoding/tree.py) the T tokens are fed as, with its attention mask.
    """
    held = session.lengths.clone()
    ms = {}
    with torch.no_grad():
        for t in sorted({1, *ts}):
            if t > tokens.shape[1]:
                raise ValueError(f"T = {t} but only {tokens.shape[1]} tokens given")
            block = tokens[:, :t]
            shape = tree(t) if tree is not None and t > 1 else None
            times = []
            for i in range(warmup + repeats):
                start = time.perf_counter()
                hidden = session.feed(block) if shape is None else session.feed(block, shape)
                best = session.scores(hidden).argmax(-1)
                if then is not None and t > 1:
                    then(hidden, best)
                if hidden.is_cuda:
                    torch.cuda.synchronize(hidden.device)
                elapsed = time.perf_counter() - start
                session.truncate(held)
                if i >= warmup:
                    times.append(elapsed)
            ms[t] = 1e3 * statistics.median(times)
    return StepCost(ms)
