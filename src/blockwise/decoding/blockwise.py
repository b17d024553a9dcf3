"""Blockwise parallel decoding with combined scoring and proposal (Stern et al. 2018, §3-4).

Each iteration is one model call: the k proposed tokens are fed at once; p1 at every fed position verifies them
(predict / verify / accept), and the heads at the last accepted position propose the next block: p1 from the scores
just computed, p2..pk from the heads. m tokens take about m/k̂ + 1 calls. Rows of a batch accept different k̂; the
cache rolls each row back to its own length. With ``k="auto"`` a ``Policy`` (policy.py) chooses the block size of
every iteration from measured costs and the acceptance seen so far; k = 1 is a greedy step.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .acceptance import EXACT, Acceptance
from .common import DecodeOutput, DecodeStats, Rows, capacity, check_inputs, clip, prefill, propose
from .interface import DecodingModel
from .policy import Policy, default_policy, default_tree_policy
from .sampling import Sampling, sample_blocks
from .lookup import Lookup
from .tree import ChainShape, TreeShape, tree_decode


@torch.no_grad()
def blockwise(model: DecodingModel, prefixes: Sequence[Sequence[int]], max_new_tokens: int,
              k: int | str | None = None, eos_id: int | None = None, accept: Acceptance = EXACT,
              sources: Sequence[Sequence[int]] | None = None,
              stream: Callable[[int, list[int]], None] | None = None, policy: Policy | None = None,
              k_max: int | None = None, progress: bool = False, tree: TreeShape | None = None,
              sampling: Sampling | None = None, lookup: Lookup | None = None) -> DecodeOutput:
    """Decode with blocks of up to k tokens. With exact acceptance the output equals ``greedy`` token for token.

    ``k``: a fixed block size (default: every head), or "auto": a ``policy`` chooses each iteration's k in 1..k_max
    (default: ``default_policy``, whose first use on a machine measures the model's costs, with a progress line if
    ``progress``). ``stream(row, tokens)``, if given, sees each row's accepted block as soon as it is verified.
    ``tree``: verify a candidate tree per call instead of a block (decoding/tree.py: ``StaticTree``, ``DynamicTree``);
    k is then the tree's, and "auto" (with a dynamic tree) chooses every step's node budget (``policy``: a
    ``TreePolicy``, by default ``default_tree_policy``).
    ``sampling``: sample from p1 (temperature, top-k, top-p, seed) with speculative sampling instead of following its
    argmax: the output is distributed exactly as plain sampling's (``sampling.sample``); ``accept`` does not apply.
    ``lookup``: every call also verifies a chain copied from the row's own text (decoding/lookup.py), grafted onto the
    tree (a fixed k: onto the block, as a tree of two branches)."""
    if sampling is not None and accept != EXACT:
        raise ValueError("sampling has its own acceptance rule (speculative sampling, or Sampling(typical=...)): "
                         f"leave accept at exact, not {accept.describe()}")
    if tree is not None:
        if k not in (None, "auto", tree.depth + 1):
            raise ValueError(f"a tree sets its own depth ({tree.describe()}): leave k unset, or 'auto' to choose its "
                             "node budget at every step")
        if k == "auto" and policy is None:
            policy = default_tree_policy(model, prefixes, sources, tree, max_new_tokens, progress, sampling)
        return tree_decode(model, prefixes, max_new_tokens, tree, eos_id, accept, sources, stream, policy, sampling,
                           lookup)
    auto = k == "auto" or policy is not None
    if isinstance(k, str) and not auto:
        raise ValueError(f"k must be a number of heads or 'auto', got {k!r}")
    k = policy.k_max if policy is not None else (k_max or model.num_heads) if auto or k is None else k
    check_inputs(model, prefixes, max_new_tokens, sources, k)
    if auto and policy is None:
        policy = default_policy(model, prefixes, sources, k, max_new_tokens, progress, sampling)
    if lookup is not None:  # a block is a one-path tree, which the copied chains are grafted onto
        return tree_decode(model, prefixes, max_new_tokens, ChainShape(k), eos_id, accept, sources, stream,
                           policy if auto else None, sampling, lookup)
    if sampling is not None:
        return sample_blocks(model, prefixes, max_new_tokens, sampling, k, eos_id, sources, stream,
                             policy if auto else None)
    session, hidden = prefill(model, prefixes, capacity(prefixes, max_new_tokens, k), sources)
    stats, rows = DecodeStats(calls=1), Rows(len(prefixes), stream)
    remaining = torch.full((len(prefixes),), max_new_tokens, device=hidden.device)
    p1, h = session.scores(hidden), hidden  # p1's logits and the hidden state at each row's last accepted position
    if auto:
        policy.start()
    while True:
        first = p1.argmax(-1)  # (B,) ŷ_{j+1}: p1's argmax, accepted whatever the next call says
        kept = rows.end_early(first, remaining, eos_id, stats, session)  # rows it ends leave now, without a call
        if kept is not None:
            if len(kept) == 0:
                break
            first, h, remaining = first[kept], h[kept], remaining[kept]
        size = policy.choose(len(first)) if auto else k  # this iteration's block size
        n = size if size == 1 else min(size, int(remaining.max()))  # near the end, feed no more than rows accept
        if auto:
            policy.fed(n)
        block = propose(session, first, h, n)  # (B, n): ŷ_{j+1..j+n}, p2..pn from the heads
        start = session.lengths.clone() if n > 1 else None
        hidden = session.feed(block)  # (B, n, D): verify this block and propose the next, in one call
        stats.calls += 1
        stats.iterations += 1
        scores = session.scores(hidden)  # (B, n, V): p1 at every fed position
        if n > 1:
            k_hat = accept(block, scores)  # (B,) in 1..n
            if auto:
                policy.observe(k_hat.tolist(), n)
            k_hat, finished = clip(k_hat, block, remaining, eos_id)
            session.truncate(start + k_hat)
        else:  # a one-token block is a greedy step: accepted whole, nothing to verify or roll back
            if auto:
                policy.observe((), 1)
            k_hat = torch.ones_like(remaining)
            finished = None  # the rows it ends ended before the call
        if auto:
            stats.count_k(n)
        rows.take(block, k_hat, stats)
        remaining = remaining - k_hat
        if n == 1:
            p1, h = scores[:, 0], hidden[:, 0]
        else:
            last = torch.arange(hidden.shape[0]), k_hat - 1  # the last accepted token of each row
            p1, h = scores[last], hidden[last]
        if finished is not None and bool(finished.any()):
            if bool(finished.all()):
                break
            kept = rows.keep(~finished, session)
            p1, h, remaining = p1[kept], h[kept], remaining[kept]
    return DecodeOutput(rows.tokens, stats)

