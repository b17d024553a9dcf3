"""Sampling with the model's exact distribution: plain, and speculative over blocks or trees.

Every sampler here draws from p̃ = warp(p1): temperature, then top-k, then top-p (``Sampling.probs``), applied to
the heads' distributions q alike. Speculative sampling (Leviathan et al. 2023; Chen et al. 2023) keeps p̃ exactly:

* **A block** of k tokens: ŷ1 was drawn from p̃ (or from a residual, below) in the previous call and is kept; proposal
  ŷ_{i+1} is drawn from head p_{i+1}'s warped distribution q̃_{i+1} (given ŷ_i, for heads that read it). One call gives
  p̃ at every fed position; ŷ_{i+1} is accepted with probability min(1, p̃(ŷ_{i+1}) / q̃_{i+1}(ŷ_{i+1})). At the first
  rejection the next token is drawn from the residual norm(max(0, p̃ - q̃)) there; after a fully accepted block, from
  p̃ at its last position (the bonus token). That token is the next block's ŷ1: m tokens still take ~m/k̂ + 1 calls.
* **A tree** (``StaticTree`` / ``DynamicTree``: a node's children are its head's most likely tokens, drafted without
  randomness): walking down from the root, a node's children are tried in order, each as a draft with all its
  mass on one token (SpecInfer's recursive rejection with point-mass drafts): child c is accepted with probability
  r(c) / Σr, where r starts as p̃ at the node and loses each rejected sibling's token; when no child is accepted the
  next token is drawn from what is left of r, at a leaf from p̃ (``accept_tree``; the loop is ``tree.tree_decode``).

Each row draws from its own random stream (``Sampling.seed``), so a row's output depends on its prompt and seed only,
not on the rows beside it — for a batch-invariant model and a fixed k or tree (with k="auto" the block sizes, and so
which random numbers meet which proposals, follow the costs measured on the machine and the batch's acceptance).

``Sampling(typical=ε)`` is Medusa's *typical acceptance* instead: the heads' most likely tokens are proposed and kept
while p̃(token) > min(ε, √ε · exp(-H(p̃))), and the next token is drawn from p̃. It accepts more, but its output is
**not** distributed as p̃'s: a named, lossy option (block decoding only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from .common import DecodeOutput, DecodeStats, Rows, capacity, check_inputs, clip, prefill
from .interface import DecodingModel, Session


@dataclass(frozen=True)
class Sampling:
    """How to sample: p̃ = softmax(logits / temperature), cut to the ``top_k`` most likely tokens (0: all) and then to
    the smallest set of most likely tokens holding ``top_p`` of the mass (1: all). ``seed``: one int (row r of a batch
    gets the stream (seed, r)) or one seed per row. ``typical``: Medusa's lossy typical acceptance threshold ε."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | tuple[int, ...] = 0
    typical: float | None = None

    def __post_init__(self) -> None:
        if not self.temperature > 0 or math.isinf(self.temperature):
            raise ValueError(f"temperature must be > 0 (greedy decoding is temperature 0), got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0: no cut), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.typical is not None and not 0 < self.typical < 1:
            raise ValueError(f"the typical acceptance threshold ε must be in (0, 1), got {self.typical}")
        if not isinstance(self.seed, int):
            object.__setattr__(self, "seed", tuple(int(s) for s in self.seed))

    def probs(self, logits: Tensor) -> Tensor:
        """p̃ (..., V) in float64 from logits (..., V)."""
        x = logits.double() / self.temperature
        if self.top_k and self.top_k < x.shape[-1]:
            kth = x.topk(self.top_k, dim=-1).values[..., -1:]
            x = x.masked_fill(x < kth, float("-inf"))  # ties with the k-th are kept
        p = x.softmax(-1)
        if self.top_p < 1:
            ranked, order = p.sort(dim=-1, descending=True, stable=True)
            drop = (ranked.cumsum(-1) - ranked) >= self.top_p  # the mass before it already reaches top_p
            p = p.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), 0.0)
            p = p / p.sum(-1, keepdim=True)
        return p

    def streams(self, batch_size: int) -> "RowStreams":
        if isinstance(self.seed, int):
            seeds = [self.seed * 1_000_003 + r for r in range(batch_size)]
        elif len(self.seed) != batch_size:
            raise ValueError(f"{len(self.seed)} seeds for {batch_size} rows: give one seed, or one per row")
        else:
            seeds = list(self.seed)
        return RowStreams(seeds)

    def describe(self) -> str:
        parts = [f"temperature {self.temperature:g}"]
        if self.top_k:
            parts.append(f"top-k {self.top_k}")
        if self.top_p < 1:
            parts.append(f"top-p {self.top_p:g}")
        if self.typical is not None:
            parts.append(f"typical acceptance ε={self.typical:g} (lossy)")
        return ", ".join(parts)


class RowStreams:
    """One random stream per row (a CPU ``torch.Generator``: the same numbers on any device), dropped with its row.
    Numbers are drawn ``chunk`` at a time per row and handed out in order: a row sees its stream's numbers in the
    same order whatever its neighbours, and a batch of thousands of rows does not call every generator per step."""

    def __init__(self, seeds: Sequence[int], chunk: int = 64) -> None:
        self.generators = [torch.Generator().manual_seed(s % 2 ** 63) for s in seeds]
        self.chunk = chunk
        self.buffer = torch.empty(len(seeds), 0, dtype=torch.float64)

    def uniform(self, n: int, device: torch.device | str = "cpu") -> Tensor:
        """(B, n) float64 uniforms in [0, 1): the next n numbers of every row's stream."""
        if self.buffer.shape[1] < n:
            more = max(self.chunk, n)
            fresh = torch.stack([torch.rand(more, generator=g, dtype=torch.float64) for g in self.generators])
            self.buffer = torch.cat([self.buffer, fresh], 1)
        out, self.buffer = self.buffer[:, :n], self.buffer[:, n:]
        return out.to(device)

    def keep(self, rows: Tensor) -> None:
        self.generators = [self.generators[i] for i in rows.tolist()]
        self.buffer = self.buffer[rows.cpu()]


def draw(probs: Tensor, u: Tensor) -> Tensor:
    """Tokens (B,) drawn from unnormalised probabilities (B, V) >= 0 with uniforms u (B,) (inverse CDF)."""
    cdf = probs.cumsum(-1)
    token = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0]
    token = token.clamp(max=probs.shape[-1] - 1)
    hit = probs.gather(1, token[:, None])[:, 0] > 0
    if bool(hit.all()):  # (the rest is three passes over the vocabulary: only when needed)
        return token
    # rounding can land past the last token with mass: take that token
    last = probs.shape[-1] - 1 - (probs > 0).flip(-1).float().argmax(-1)
    return torch.where(hit, token, last)


# The rules that make speculative sampling exact. Module-level so the tests can swap in broken ones and see their
# distribution tests fail.
def accept_draft(p: Tensor, q: Tensor, u: Tensor) -> Tensor:
    """Accept a token drawn from q with probability min(1, p/q) (p, q: its probabilities; u uniform)."""
    return u * q < p


def residual(p: Tensor, q: Tensor) -> Tensor:
    """Where the next token is drawn after a rejection: max(0, p - q) (unnormalised; p itself if that is empty)."""
    r = (p - q).clamp(min=0)
    return torch.where(r.sum(-1, keepdim=True) > 0, r, p)


def without(p: Tensor, tokens: Tensor, rejected: Tensor) -> Tensor:
    """A tree's residual after rejected siblings: p (B, V) with tokens (B, W) zeroed where ``rejected`` (B, W)."""
    hit = torch.zeros_like(p).scatter_add(1, tokens, rejected.to(p.dtype))  # (scatter_add: slots may repeat)
    return p.masked_fill(hit > 0, 0.0)


def typical_threshold(p: Tensor, eps: float) -> Tensor:
    """Medusa's typical acceptance: a token passes if p̃(token) > min(ε, √ε · exp(-H(p̃))); p (..., V) -> (...)."""
    entropy = -(p * p.clamp(min=1e-300).log()).sum(-1)
    return torch.minimum(torch.full_like(entropy, eps), math.sqrt(eps) * (-entropy).exp())


@torch.no_grad()
def sample(model: DecodingModel, prefixes: Sequence[Sequence[int]], max_new_tokens: int, sampling: Sampling,
           eos_id: int | None = None, sources: Sequence[Sequence[int]] | None = None,
           stream: Callable[[int, list[int]], None] | None = None) -> DecodeOutput:
    """Plain sampling, one token per call from p̃: the distribution every speculative sampler must reproduce."""
    check_inputs(model, prefixes, max_new_tokens, sources)
    session, hidden = prefill(model, prefixes, capacity(prefixes, max_new_tokens), sources)
    stats, rows, rng = DecodeStats(calls=1), Rows(len(prefixes), stream), sampling.streams(len(prefixes))
    for produced in range(1, max_new_tokens + 1):
        token = draw(sampling.probs(session.scores(hidden)), rng.uniform(1, hidden.device)[:, 0])  # (B,)
        for row, t in enumerate(token.tolist()):
            rows.append(row, [t])
        stats.iterations += 1
        stats.count_blocks([1] * token.shape[0])
        done = token == eos_id if eos_id is not None else torch.zeros_like(token, dtype=torch.bool)
        if produced == max_new_tokens or bool(done.all()):
            break
        if bool(done.any()):
            kept = rows.keep(~done, session)
            rng.keep(kept)
            token = token[kept]
        hidden = session.feed(token[:, None])[:, 0]  # (B, D)
        stats.calls += 1
    return DecodeOutput(rows.tokens, stats)


def draft_block(session: Session, sampling: Sampling, hidden: Tensor, first: Tensor, n: int,
                u: Tensor) -> tuple[Tensor, "Drafts | None"]:
    """The block (B, n): ``first`` (B,), then proposals 2..n drawn from the heads' q̃ with uniforms u (B, n - 1)
    (their most likely tokens for typical acceptance); and the q̃ they were drawn from (``Drafts``)."""
    if n == 1:
        return first[:, None], None
    # the tokens the heads score (the session's ``proposal_vocab``; every other one has q̃ = 0): q̃ over those only,
    # ~10x cheaper to warp and draw from than over SmolLM2's 49k tokens
    vocab = getattr(session, "proposal_vocab", None)
    tokens, qs, columns = [first], [], []

    def pick(logits: Tensor) -> None:
        q = sampling.probs(logits if vocab is None else logits[..., vocab])
        column = q.argmax(-1) if sampling.typical is not None else draw(q, u[:, len(qs)])
        tokens.append(column if vocab is None else vocab[column])
        qs.append(q)
        columns.append(column)

    if session.reads_proposals:  # each head drafts from the token drawn before it
        state = hidden
        for i in range(2, n + 1):
            state, logits = session.draft(hidden, state, tokens[-1], i)
            pick(logits)
    else:  # heads that see only the hidden state: all at once
        logits = session.proposals(hidden, first, n)  # (B, n - 1, V)
        for i in range(n - 1):
            pick(logits[:, i])
    return torch.stack(tokens, 1), Drafts(torch.stack(qs, 1), torch.stack(columns, 1), vocab)


@dataclass
class Drafts:
    """The distributions a block's proposals were drawn from: q̃ (B, n - 1, V') over ``vocab`` (V' token ids; None:
    the whole vocabulary), and each proposal's column in it (B, n - 1)."""

    q: Tensor
    columns: Tensor
    vocab: Tensor | None

    def drawn(self) -> Tensor:
        """q̃ at each proposal (B, n - 1)."""
        return self.q.gather(-1, self.columns[..., None])[..., 0]

    def full(self, q: Tensor, size: int) -> Tensor:
        """Rows of q̃ (B, V') over the whole vocabulary of ``size`` tokens (B, size)."""
        return q if self.vocab is None else q.new_zeros(q.shape[0], size).index_copy_(1, self.vocab, q)


def accept_block(block: Tensor, p: Tensor, drafts: Drafts | None, u: Tensor, u_next: Tensor,
                 sampling: Sampling) -> tuple[Tensor, Tensor]:
    """Speculative sampling's verdict on a block (B, n): p̃ (B, n, V) at every fed position, the ``Drafts`` the
    proposals were drawn from, uniforms u (B, >= n - 1) for the tests. Returns k̂ (B,) and the next token (B,), drawn
    with u_next (B,)."""
    B, n = block.shape
    rows = torch.arange(B, device=block.device)
    if n == 1:
        return torch.ones(B, dtype=torch.long, device=block.device), draw(p[:, 0], u_next)
    p_tok = p[:, :-1].gather(-1, block[:, 1:, None])[..., 0]  # p̃ before each proposal, at the proposal
    if sampling.typical is not None:
        ok = p_tok > typical_threshold(p[:, :-1], sampling.typical)
    else:
        ok = accept_draft(p_tok, drafts.drawn(), u[:, :n - 1])
    k_hat = 1 + ok.long().cumprod(1).sum(1)
    at = p[rows, k_hat - 1]  # (B, V): p̃ after the last accepted token
    if sampling.typical is None:
        rejected = k_hat < n
        if bool(rejected.any()):
            q_at = drafts.full(drafts.q[rows, (k_hat - 1).clamp(max=n - 2)], at.shape[-1])
            at = torch.where(rejected[:, None], residual(at, q_at), at)
    return k_hat, draw(at, u_next)


@torch.no_grad()
def sample_blocks(model: DecodingModel, prefixes: Sequence[Sequence[int]], max_new_tokens: int, sampling: Sampling,
                  k: int, eos_id: int | None = None, sources: Sequence[Sequence[int]] | None = None,
                  stream: Callable[[int, list[int]], None] | None = None, policy=None) -> DecodeOutput:
    """Speculative sampling with blocks of up to k tokens (``policy``: a ``policy.Policy`` choosing k per iteration).
    Call through ``blockwise(..., sampling=...)``."""
    check_inputs(model, prefixes, max_new_tokens, sources, k)
    session, hidden = prefill(model, prefixes, capacity(prefixes, max_new_tokens, k), sources)
    stats, rows, rng = DecodeStats(calls=1), Rows(len(prefixes), stream), sampling.streams(len(prefixes))
    remaining = torch.full((len(prefixes),), max_new_tokens, device=hidden.device)
    first = draw(sampling.probs(session.scores(hidden)), rng.uniform(1, hidden.device)[:, 0])  # ŷ1 ~ p̃
    if policy is not None:
        policy.start()
    while True:
        kept = rows.end_early(first, remaining, eos_id, stats, session)  # rows ŷ1 ends leave now, without a call
        if kept is not None:
            if len(kept) == 0:
                break
            rng.keep(kept)
            hidden, first, remaining = hidden[kept], first[kept], remaining[kept]
        size = policy.choose(hidden.shape[0]) if policy is not None else k
        n = min(size, int(remaining.max()))
        if policy is not None:
            policy.fed(n)
        # size - 1 proposals, size - 1 acceptance tests, the next token: as many numbers whatever n is, so that a
        # row's draws do not depend on how long its neighbours still run
        u = rng.uniform(2 * size - 1, hidden.device)
        block, drafts = draft_block(session, sampling, hidden, first, n, u[:, :size - 1])  # (B, n)
        start = session.lengths.clone()
        fed = session.feed(block)  # (B, n, D): verify this block and propose the next, in one call
        stats.calls += 1
        stats.iterations += 1
        k_hat, first = accept_block(block, sampling.probs(session.scores(fed)), drafts, u[:, size - 1:-1], u[:, -1],
                                    sampling)
        if policy is not None:
            policy.observe(k_hat.tolist() if n > 1 else (), n)
            stats.count_k(n)
        k_hat, finished = clip(k_hat, block, remaining, eos_id)
        session.truncate(start + k_hat)
        rows.take(block, k_hat, stats)
        remaining = remaining - k_hat
        if bool(finished.all()):
            break
        hidden = fed[torch.arange(fed.shape[0]), k_hat - 1]  # the last accepted position: the next block's heads
        if bool(finished.any()):
            kept = rows.keep(~finished, session)
            rng.keep(kept)
            hidden, first, remaining = hidden[kept], first[kept], remaining[kept]
    return DecodeOutput(rows.tokens, stats)


def children(parents: Tensor) -> Tensor:
    """(B, N, W): each node's children in index order (most likely first), N where a node has fewer than W."""
    B, N = parents.shape
    index = torch.arange(N, device=parents.device)
    is_child = parents[:, None, :] == index[None, :, None]  # (B, parent, child)
    width = max(int(is_child.sum(-1).max()), 1)
    return torch.where(is_child, index, N).sort(-1).values[..., :width]


def accept_tree(tree, scores: Tensor, sampling: Sampling, rng: RowStreams,
                depth: int) -> tuple[Tensor, Tensor, Tensor]:
    """Recursive rejection down a tree (``tree.Tree``) with p1's logits at every node (B, N, V). Returns k̂ (B,), the
    accepted path (B, depth + 1) as node ids (``Tree.accept``'s layout) and the next token (B,). ``depth``: the tree
    shape's deepest level; each row takes (depth + 1) · (N - 1) + 1 numbers whatever its tree (or its neighbours')
    looks like, so that its draws do not depend on the rows beside it."""
    B, N = tree.tokens.shape
    rows = torch.arange(B, device=scores.device)
    kids = children(tree.parents)  # (B, N, W)
    W, width = kids.shape[-1], int(tree.depth.max()) + 1
    stride = max(N - 1, 1)  # a node has at most N - 1 children
    u = rng.uniform((depth + 1) * stride + 1, scores.device)
    cur = torch.zeros(B, dtype=torch.long, device=scores.device)
    active = torch.ones(B, dtype=torch.bool, device=scores.device)
    path, following = [cur], torch.zeros(B, dtype=torch.long, device=scores.device)
    for d in range(width):
        p = sampling.probs(scores[rows, cur])  # (B, V): p̃ at each row's current node
        mine = kids[rows, cur]  # (B, W)
        toks = tree.tokens.gather(1, mine.clamp(max=N - 1))  # (B, W)
        mass = p.gather(1, toks)  # (B, W)
        left = torch.ones(B, dtype=p.dtype, device=p.device)  # p̃'s mass not yet rejected
        chosen = torch.full_like(cur, -1)
        rejected = torch.zeros(B, W, dtype=torch.bool, device=p.device)
        for j in range(W):
            trying = active & (mine[:, j] < N) & (chosen < 0)
            ok = trying & accept_draft(mass[:, j], left, u[:, d * stride + j])  # r(c) / Σr, with Σr = left
            chosen = torch.where(ok, mine[:, j], chosen)
            rejected[:, j] = trying & ~ok
            left = torch.where(rejected[:, j], left - mass[:, j], left)
        stop = active & (chosen < 0)
        if bool(stop.any()):  # no child kept: the next token from p̃ without the rejected siblings
            following = torch.where(stop, draw(without(p, toks, rejected), u[:, -1]), following)
        active = active & (chosen >= 0)
        cur = torch.where(active, chosen, cur)
        path.append(cur)
        if not bool(active.any()):
            break
    path = torch.stack(path[:width] + [cur] * (width - len(path[:width])), 1)  # past k̂: any node (cut anyway)
    k_hat = 1 + (path[:, 1:] != path[:, :-1]).long().sum(1)
    return k_hat, path, following
