"""Tree verification: several candidates per position, checked in one call (after Medusa, SpecInfer and EAGLE-2).

Each iteration builds, per row, a tree of N candidate tokens: the root is ŷ1 (p1's argmax at the last accepted
position, always right), a node at depth d (1..k-1) is one of head p_{d+1}'s top tokens after its parent. The whole
tree is fed in one call, each node at position length + depth and attending to the row's tokens and its own ancestors
only (``KVCache.layout``). p1 at each node verifies its children; the longest root-to-node path whose every node
passes the acceptance rule against p1 at its parent is kept (``Tree.accept``); its cache entries move to contiguous
slots (``Session.compact``) and the next tree grows from the last accepted node's state, in the same call.

Two shapes of tree: ``StaticTree`` (a fixed list of rank paths, as Medusa's "choices", e.g. chosen from the heads'
measured top-i agreement: ``StaticTree.from_agreement``) and ``DynamicTree`` (grown at every step from the heads'
probabilities: expand the most confident nodes, keep the N best by cumulative probability, as EAGLE-2 does). A static
tree with one path (``StaticTree.chain(k)``) is today's block of k tokens. With exact acceptance the output is greedy's.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from .acceptance import EXACT, Acceptance
from .common import DecodeOutput, DecodeStats, Rows, capacity, check_inputs, clip, prefill, propose
from .interface import DecodingModel, Session
from .sampling import Sampling, accept_tree, draw


@dataclass
class Tree:
    """One candidate tree per row, nodes in an order where every parent comes before its children (root = node 0).

    tokens (B, N); parents (B, N), parents[:, 0] = -1; depth (B, N), root 0; visible (B, N, N), True where node i
    sees node j (j is i or one of its ancestors)."""

    tokens: Tensor
    parents: Tensor
    depth: Tensor
    visible: Tensor
    # dynamic trees: the predicted accepted length had the tree kept its n best candidates, n = 1, 2, ... (B, M):
    # 1 + the sum of the n - 1 best cumulative probabilities (what a node budget policy weighs against cost)
    expected: Tensor | None = None

    @classmethod
    def from_parents(cls, tokens: Tensor, parents: Tensor) -> "Tree":
        B, N = tokens.shape
        parent = parents.clamp(min=0)
        # ancestors by doubling: A_1 = "is my parent", A_2m = A_m ∘ A_m; visible = I ∪ A_1 ∪ A_2 ∪ ...
        step = torch.zeros(B, N, N, dtype=torch.bool, device=tokens.device)
        step.scatter_(2, parent[:, :, None], (parents >= 0)[:, :, None])
        visible = step | torch.eye(N, dtype=torch.bool, device=tokens.device)
        reach = visible.float()
        for _ in range(max(N - 1, 1).bit_length()):
            reach = (reach @ reach).clamp(max=1)
        visible = reach.bool()
        return cls(tokens, parents, visible.sum(-1) - 1, visible)

    @property
    def nodes(self) -> int:
        return self.tokens.shape[1]

    def accept(self, scores: Tensor, accept: Acceptance = EXACT) -> tuple[Tensor, Tensor]:
        """Judge every node against p1 at its parent (``scores`` (B, N, V): p1's logits at each fed node).
        Returns k̂ (B,), the length of the longest accepted root path (the first such node on ties), and that path
        as node indices (B, depth + 1): path[b, j] is its node at depth j (j < k̂; positions past k̂ hold j)."""
        B, N = self.tokens.shape
        summary = accept.summary(scores)  # (B, N, m)
        at_parent = summary.gather(1, self.parents.clamp(min=0)[:, :, None].expand(-1, -1, summary.shape[-1]))
        ok = accept.judge(self.tokens, at_parent)
        ok[:, 0] = True  # the root is p1's own argmax
        accepted = ~(self.visible & ~ok[:, None, :]).any(-1)  # (B, N): the node and all its ancestors pass
        length = torch.where(accepted, self.depth + 1, 0)
        best = length.argmax(1)  # (B,) the first of the deepest
        if accept.min_block > 1:
            best = self._extend(best, accept.min_block)
        rows = torch.arange(B, device=best.device)
        k_hat = self.depth[rows, best] + 1
        width = int(self.depth.max()) + 1
        path = torch.arange(width, device=best.device).repeat(B, 1)
        on_path = self.visible[rows, best]  # (B, N): best and its ancestors
        nodes = torch.arange(N, device=best.device).expand(B, N)
        slot = torch.where(on_path, self.depth, width)  # off-path nodes go to a dropped column
        full = torch.cat([path, path[:, :1]], 1).scatter(1, slot, nodes)
        return k_hat, full[:, :width]

    def _extend(self, best: Tensor, min_block: int) -> Tensor:
        """The ℓ rule along a tree: below ℓ accepted tokens, follow first children (each node's most confident child,
        the lowest index) until ℓ tokens or a leaf."""
        N = self.nodes
        rows = torch.arange(best.shape[0], device=best.device)
        index = torch.arange(N, device=best.device).expand_as(self.parents)
        is_child = self.parents[:, None, :] == torch.arange(N, device=best.device)[None, :, None]  # (B, parent, child)
        first = torch.where(is_child, index[:, None, :], N).min(-1).values  # (B, N); N = no child
        for _ in range(min_block - 1):
            short = (self.depth[rows, best] + 1 < min_block) & (first[rows, best] < N)
            best = torch.where(short, first[rows, best].clamp(max=N - 1), best)
        return best


class TreeShape:
    """How a row's tree grows from (p1's logits, hidden state) at the last accepted position: ``build``."""

    nodes: int  # N, tokens fed per call
    depth: int  # deepest node below the root: heads p2..p_{depth+1} are used

    def build(self, session: Session, p1: Tensor, hidden: Tensor, nodes: int | None = None,
              root: Tensor | None = None, draft: int | None = None) -> Tree:
        """The trees (B rows) after p1's logits (B, V) and the hidden states (B, D) of the last accepted positions;
        ``nodes``: this step's node budget, if a policy chooses it (dynamic trees only); ``root`` (B,): the root's
        token if not p1's argmax (a sampler's draw); ``draft``: the budget the draft must predict ``Tree.expected``
        up to (dynamic trees; default ``nodes``)."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class StaticTree(TreeShape):
    """The same shape at every step: ``paths`` lists each non-root node as the ranks of its tokens below the root,
    e.g. (0,) = head p2's best token, (1,) = its second best, (0, 2) = p3's third best after (0,). Every path's prefix
    must be a path too. Chained heads rank a node's candidates given its parent's token."""

    def __init__(self, paths: Sequence[Sequence[int]]) -> None:
        paths = sorted({tuple(int(r) for r in p) for p in paths}, key=lambda p: (len(p), p))
        if any(len(p) == 0 or min(p) < 0 for p in paths):
            raise ValueError("every path of a static tree is a non-empty tuple of ranks >= 0")
        index = {(): 0} | {p: i + 1 for i, p in enumerate(paths)}
        missing = [p for p in paths if p[:-1] not in index]
        if missing:
            raise ValueError(f"static tree path {missing[0]} has no parent path {missing[0][:-1]}")
        self.paths = paths
        self.nodes, self.depth = len(paths) + 1, max((len(p) for p in paths), default=0)
        parents = [-1] + [index[p[:-1]] for p in paths]
        self._template = Tree.from_parents(torch.zeros(1, self.nodes, dtype=torch.long), torch.tensor([parents]))
        # per depth d = 1..depth: (its nodes, the nodes above with children, each of those as an index into the depth
        # above, each node's parent as an index into those, each node's rank)
        self._levels = []
        above = [0]
        for d in range(1, self.depth + 1):
            nodes = [index[p] for p in paths if len(p) == d]
            grown = sorted({parents[i] for i in nodes})
            self._levels.append((nodes, grown, [above.index(g) for g in grown],
                                 torch.tensor([grown.index(parents[i]) for i in nodes]),
                                 torch.tensor([paths[i - 1][-1] for i in nodes])))
            above = nodes

    @classmethod
    def chain(cls, k: int) -> "StaticTree":
        """One path of k tokens: the block of plain blockwise decoding."""
        return cls([(0,) * d for d in range(1, k)])

    @classmethod
    def from_agreement(cls, agreement: Sequence[Sequence[float]], nodes: int) -> "StaticTree":
        """The tree of ``nodes`` tokens with the largest expected accepted length, greedily: ``agreement[d][r]`` is the
        measured chance that head p_{d+2}'s rank-r token is the right one (given its parent is), and a node's chance
        to be accepted is the product along its path; add the most likely node until the budget is spent."""
        heap = [(-agreement[0][r], (r,)) for r in range(len(agreement[0]))] if agreement else []
        heapq.heapify(heap)
        paths: list[tuple[int, ...]] = []
        while heap and len(paths) < nodes - 1:
            neg, path = heapq.heappop(heap)
            paths.append(path)
            d = len(path)
            if d < len(agreement):
                for r in range(len(agreement[d])):
                    heapq.heappush(heap, (neg * agreement[d][r], path + (r,)))
        return cls(paths)

    def build(self, session: Session, p1: Tensor, hidden: Tensor, nodes: int | None = None,
              root: Tensor | None = None, draft: int | None = None) -> Tree:
        if nodes not in (None, self.nodes):
            raise ValueError("a static tree has a fixed number of nodes: choose a node budget with a dynamic tree")
        B = p1.shape[0]
        tokens = torch.zeros(B, self.nodes, dtype=torch.long, device=p1.device)
        tokens[:, 0] = p1.argmax(-1) if root is None else root
        states = hidden[:, None, :]  # (B, F, D): the head states of the depth above, its children are drafted from
        h = hidden[:, None, :]
        for d, (nodes, grown, grown_above, parent, rank) in enumerate(self._levels, start=1):
            if session.reads_proposals:  # each node drafts its own children
                states, logits = session.draft(h, states[:, grown_above], tokens[:, grown], d + 1)  # (B, G, ·)
            else:  # every node of a depth gets the same proposal: draft once
                states, logits = session.draft(h, states[:, :1], tokens[:, :1], d + 1)
                parent = torch.zeros_like(parent)
            top = logits.topk(int(rank.max()) + 1, dim=-1).indices  # (B, G, R)
            tokens[:, nodes] = top[:, parent, rank]
            states = states[:, parent]  # (B, nodes at depth d, D)
        return Tree(tokens, self._template.parents.expand(B, -1), self._template.depth.expand(B, -1),
                    self._template.visible.expand(B, -1, -1))

    def describe(self) -> str:
        return f"static tree, {self.nodes} nodes, depth {self.depth}"


class ChainShape(TreeShape):
    """A block of k tokens as a one-path tree: ŷ1 and the heads' proposals p2..pk, as plain blockwise decoding feeds
    it (``common.propose``), k chosen per step where a policy gives ``nodes``. What lookup drafts graft onto when
    decoding with blocks (``blockwise(..., lookup=...)``)."""

    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.nodes, self.depth = k, k - 1
        self._templates: dict[int, Tree] = {}

    def build(self, session: Session, p1: Tensor, hidden: Tensor, nodes: int | None = None,
              root: Tensor | None = None, draft: int | None = None) -> Tree:
        k = self.nodes if nodes is None else nodes
        tokens = propose(session, p1.argmax(-1) if root is None else root, hidden, k)  # (B, k)
        if k not in self._templates:
            self._templates[k] = StaticTree.chain(k)._template
        one, B = self._templates[k], tokens.shape[0]
        return Tree(tokens, one.parents.expand(B, -1), one.depth.expand(B, -1), one.visible.expand(B, -1, -1))

    def describe(self) -> str:
        return f"chain of {self.nodes}"


class DynamicTree(TreeShape):
    """Grown at every step from the heads' probabilities (EAGLE-2): from the root, expand the ``top`` nodes of each
    depth with the highest cumulative probability (product of the heads' probabilities along the path) by their
    ``top`` most likely tokens each, down to ``depth``; then keep the ``nodes`` - 1 best of all the candidates by
    cumulative probability (a child never beats its parent, so every kept node's parent is kept). Rows differ.
    With ``spine`` (default) the chain of best tokens (each depth's best child of the one above, what a block of
    plain blockwise decoding would feed) is always expanded and kept first, so a tree of at least depth + 1 nodes
    accepts at least what that block would: approximate rules (ε, top-k) accept far more than the heads' exact-token
    probabilities predict, and deep."""

    def __init__(self, nodes: int, depth: int, top: int = 4, spine: bool = True) -> None:
        if nodes < 1 or depth < 0 or top < 1:
            raise ValueError(f"a dynamic tree needs nodes >= 1, depth >= 0, top >= 1 (got {nodes}, {depth}, {top})")
        self.nodes, self.depth, self.top, self.spine = nodes, depth, top, spine

    def build(self, session: Session, p1: Tensor, hidden: Tensor, nodes: int | None = None,
              root: Tensor | None = None, draft: int | None = None) -> Tree:
        B, dev = p1.shape[0], p1.device
        nodes = self.nodes if nodes is None else nodes
        root = p1.argmax(-1, keepdim=True) if root is None else root[:, None]
        if nodes == 1:  # a greedy step: nothing to draft
            return Tree(root, torch.full((B, 1), -1, device=dev), torch.zeros_like(root),
                        torch.ones(B, 1, 1, dtype=torch.bool, device=dev))
        rows = torch.arange(B, device=dev)[:, None]
        tokens, parents, scores = [root], [torch.full((B, 1), -1, device=dev)], [torch.zeros(B, 1, device=dev)]
        frontier = torch.zeros(B, 1, dtype=torch.long, device=dev)  # candidate ids of the nodes to expand
        states, count = hidden[:, None, :], 1
        toks, cum = root, scores[0]  # (B, F): the frontier's tokens and cumulative log-probabilities
        spine = [torch.zeros(B, dtype=torch.long, device=dev)]  # candidate ids of the chain of best tokens
        # heads that score part of the vocabulary (-inf elsewhere): rank over those columns only
        vocab = getattr(session, "proposal_vocab", None)
        vocab = vocab if vocab is not None and len(vocab) >= self.top else None
        # a tree of n nodes is at most n - 1 deep: a small budget drafts only that deep (unless ``draft`` says more)
        for d in range(1, min(self.depth, max(nodes, draft or 0) - 1) + 1):
            F_ = frontier.shape[1]
            state, logits = session.draft(hidden[:, None, :], states, toks, d + 1)  # (B, F or 1, D), (B, F or 1, V)
            state, logits = state.expand(B, F_, -1), logits.expand(B, F_, -1)  # heads that ignore the parent: 1
            top = (logits if vocab is None else logits[..., vocab]).float().log_softmax(-1).topk(self.top, dim=-1)
            tokens.append((top.indices if vocab is None else vocab[top.indices]).reshape(B, -1))  # (B, F * t)
            scores.append((cum[:, :, None] + top.values).reshape(B, -1))
            parents.append(frontier.repeat_interleave(self.top, dim=1))
            child_state = state.repeat_interleave(self.top, dim=1)  # (B, F*t, D): a child drafts from its parent's
            ranking = scores[-1].clone()
            if self.spine:  # the best child of the spine node (its position among the frontier: spine_at)
                spine_child = (frontier == spine[-1][:, None]).float().argmax(1) * self.top  # (B,)
                spine.append(count + spine_child)
                ranking[rows[:, 0], spine_child] = float("inf")
            best = ranking.topk(min(self.top, F_ * self.top), dim=1).indices  # (B, width) among the new children
            frontier, states = count + best, child_state[rows, best]
            toks, cum = tokens[-1].gather(1, best), scores[-1].gather(1, best)
            count += F_ * self.top
        tokens, parents, scores = torch.cat(tokens, 1), torch.cat(parents, 1), torch.cat(scores, 1)
        n = min(nodes, tokens.shape[1])
        ranking = scores.clone()
        if self.spine:
            ranking.scatter_(1, torch.stack(spine, 1), 0.0)  # kept right after the root, parents first
        ranked = torch.sort(-ranking, dim=1, stable=True)  # the root (score 0) first; parents before children
        order = ranked.indices[:, :n]
        keep = order.sort(dim=1).values  # candidate order: parents before children
        renumber = torch.full_like(parents, -1)
        renumber.scatter_(1, keep, torch.arange(n, device=dev).expand(B, -1))
        kept_parents = parents.gather(1, keep)
        new_parents = torch.where(kept_parents >= 0, renumber.gather(1, kept_parents.clamp(min=0)), -1)
        tree = Tree.from_parents(tokens.gather(1, keep), new_parents)
        # (B, M): 1 + Σ of the n - 1 kept first; M = the candidates drafted, fewer for a smaller budget (shallower)
        tree.expected = scores.gather(1, ranked.indices).exp().cumsum(1)
        return tree

    @property
    def candidates(self) -> int:
        """Nodes a step drafts before keeping the best ``nodes``: the largest useful budget."""
        depth = min(self.depth, self.nodes - 1)
        return 1 + sum(self.top * min(self.top, self.top ** (d - 1)) for d in range(1, depth + 1))

    def describe(self) -> str:
        return f"dynamic tree, {self.nodes} nodes, depth {self.depth}, top {self.top}" + (", spine" if self.spine else "")


def graft(tree: Tree, chains: Sequence[Sequence[int]]) -> Tree:
    """``tree`` with each row's chain (tokens after the root) hung below its root: down the nodes whose tokens the
    chain repeats, then as new nodes, each the child of the one before. Every row gets as many new nodes as the row
    that needs most; the others' extra nodes are copies of their root's token as children of the root (fed and
    verified like any node: they change nothing but the cost). Returns ``tree`` itself when no row adds a node."""
    B = tree.tokens.shape[0]
    tokens, parents = tree.tokens.tolist(), tree.parents.tolist()
    added: list[list[tuple[int, int]]] = []  # per row: (token, parent) of its new nodes
    for b in range(B):
        children: dict[tuple[int, int], int] = {}  # (parent, token) -> node
        for i in range(1, len(tokens[b])):
            children.setdefault((parents[b][i], tokens[b][i]), i)
        node, new, count = 0, [], len(tokens[b])
        for token in chains[b]:
            child = children.get((node, token)) if not new else None
            if child is None:
                new.append((token, node))
                node = count
                count += 1
            else:
                node = child
        added.append(new)
    width = max(len(new) for new in added)
    if width == 0:
        return tree
    for b, new in enumerate(added):
        new += [(tokens[b][0], 0)] * (width - len(new))
        tokens[b] += [t for t, _ in new]
        parents[b] += [p for _, p in new]
    device = tree.tokens.device
    grafted = Tree.from_parents(torch.tensor(tokens, device=device), torch.tensor(parents, device=device))
    grafted.expected = tree.expected
    return grafted


@torch.no_grad()
def tree_decode(model: DecodingModel, prefixes: Sequence[Sequence[int]], max_new_tokens: int, tree: TreeShape,
                eos_id: int | None = None, accept: Acceptance = EXACT,
                sources: Sequence[Sequence[int]] | None = None,
                stream: Callable[[int, list[int]], None] | None = None, policy=None,
                sampling: Sampling | None = None, lookup=None) -> DecodeOutput:
    """Blockwise decoding with a candidate tree per row and call. With exact acceptance the output equals ``greedy``
    token for token; ``StaticTree.chain(k)`` makes the same calls as ``blockwise(k=k)``. ``policy`` chooses every
    step's node budget, 1 (a greedy step) to ``tree.nodes``: a ``policy.TreePolicy`` for a dynamic tree, a
    ``policy.Policy`` (block sizes) for a ``ChainShape``.
    ``sampling``: speculative sampling instead, the root drawn from p̃ and the tree judged
    by recursive rejection (``sampling.accept_tree``); ``accept`` does not apply.
    ``lookup`` (``decoding.lookup.Lookup``): each row's tree also gets a chain copied from its own text (``graft``;
    with a policy, only where it pays: ``lookup.LookupRun``); the policy learns from the heads' own nodes."""
    if sampling is not None and sampling.typical is not None:
        raise ValueError("typical acceptance is for blocks: leave out the tree, or typical")
    if sampling is not None and lookup is not None:
        raise ValueError("lookup drafts are for greedy decoding (and its approximate rules), not for sampling")
    check_inputs(model, prefixes, max_new_tokens, sources, tree.depth + 1)
    fed = tree.nodes + (lookup.tokens if lookup is not None else 0)  # the most nodes a call feeds
    session, hidden = prefill(model, prefixes, capacity(prefixes, max_new_tokens, fed), sources)
    copies = None
    if lookup is not None:
        from .lookup import LookupRun
        copies = LookupRun(lookup)
    stats, rows = DecodeStats(calls=1), Rows(len(prefixes), stream)
    remaining = torch.full((len(prefixes),), max_new_tokens, device=hidden.device)
    p1 = session.scores(hidden)
    rng = root = None  # sampling: each row's random stream, and the root drawn for the next tree
    if sampling is not None:
        rng = sampling.streams(len(prefixes))
        root = draw(sampling.probs(p1), rng.uniform(1, hidden.device)[:, 0])  # ŷ1 ~ p̃
    if policy is not None:
        policy.start()
    while True:
        if sampling is None:
            root = p1.argmax(-1)  # (B,) the root ŷ_{j+1}: p1's argmax (drawn from p̃ when sampling), always accepted
        kept = rows.end_early(root, remaining, eos_id, stats, session)  # rows it ends leave now, without a call
        if kept is not None:
            if len(kept) == 0:
                break
            p1, hidden, remaining, root = p1[kept], hidden[kept], remaining[kept], root[kept]
            if rng is not None:
                rng.keep(kept)
        n = policy.choose(hidden.shape[0]) if policy is not None else None
        ms = policy.costs.at(hidden.shape[0]) if policy is not None and copies is not None else None
        if copies is not None:  # the chains that followed the rows' last tokens earlier in their own texts
            copies.find([[*prefixes[i], *rows.tokens[i], r] for i, r in zip(rows.ids, root.tolist())],
                        remaining.tolist())
            n = copies.budget(n, ms, policy.expected_at) if ms is not None else n  # a smaller block beside a copy
        if n == 1 and copies is None and sampling is None:  # a greedy step: no tree to build
            t, tokens = None, root[:, None]
        else:
            draft = policy.draft_budget(n) if policy is not None else None  # now and then the whole draft
            t = tree.build(session, p1, hidden, n, root=root, draft=draft)  # (B, N) nodes, the root first
            if copies is not None:
                t = copies.extend(t, ms, policy.expected_at(t.nodes) if ms is not None else 1.0)
            tokens = t.tokens
        greedy_step = tokens.shape[1] == 1  # the root alone: nothing to verify, mask or move
        if policy is not None:
            policy.fed(tokens.shape[1])  # timed as the option chosen only where it is what is fed (no lookup drafts)
        start = None if greedy_step else session.lengths.clone()
        hidden = session.feed(tokens, None if greedy_step else t)  # (B, N, D): verify all, draft the next tree
        stats.calls += 1
        stats.iterations += 1
        scores = session.scores(hidden)  # (B, N, V): p1 at every node
        if greedy_step and sampling is None:  # a plain greedy step, as light as greedy decoding's own: no row ends
            # in it (a root that ends its row left with ``end_early``), nothing to judge, move or clip
            if policy is not None:
                policy.observe_tree(None, [1] * len(remaining), 1)  # nothing observed: estimates fade to their baseline
                stats.count_k(1)
            rows.take(tokens, torch.ones_like(remaining), stats)
            remaining = remaining - 1
            p1, hidden = scores[:, 0], hidden[:, 0]
            continue
        if sampling is not None:
            k_hat, path, root = accept_tree(t, scores, sampling, rng, tree.depth)
        else:
            k_hat, path = t.accept(scores, accept)  # (B,), (B, depth + 1) node ids
        own = copies.observe(t, scores, accept, k_hat) if copies is not None else k_hat  # the heads' nodes alone
        if policy is not None:
            heads = copies.heads if copies is not None else t.nodes
            policy.observe_tree(None if t.expected is None else t.expected.tolist(), own.tolist(), heads)
            stats.count_k(heads)
        block = t.tokens.gather(1, path)  # the accepted path's tokens, as a block
        k_hat, finished = clip(k_hat, block, remaining, eos_id)
        if not greedy_step:
            session.compact(start, path, start + k_hat)
        rows.take(block, k_hat, stats)
        remaining = remaining - k_hat
        if bool(finished.all()):
            break
        last = path.gather(1, (k_hat - 1)[:, None])[:, 0]  # each row's last accepted node
        index = torch.arange(len(last), device=last.device)
        p1, hidden = scores[index, last], hidden[index, last]
        if bool(finished.any()):
            kept = rows.keep(~finished, session)
            p1, hidden, remaining = p1[kept], hidden[kept], remaining[kept]
            if rng is not None:
                rng.keep(kept)
                root = root[kept]
    return DecodeOutput(rows.tokens, stats)
