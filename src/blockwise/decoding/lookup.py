"""Candidates copied from the row's own text, grafted onto the heads' tree (prompt lookup decoding, Saxena 2023; the
n-gram drafting of vLLM and Hugging Face's ``prompt_lookup_num_tokens``).

Answers repeat their prompt and themselves: names, code identifiers, list formats, SQL columns. After the row's last
n tokens (the root ŷ1 included; n = ``ngram`` down to ``min_ngram``, the longest found first), the ``tokens`` that
followed their latest earlier occurrence in the prompt or in the answer so far are a guess that costs no model call.
``tree.graft`` hangs that chain below the root of the heads' tree: where its first tokens are nodes already (the heads
proposed them too) it follows them, the rest become new nodes, one below the other. The call verifies every node as
it verifies the heads' ones, so the output stays exactly greedy's; a row without a match adds nothing, or padding
nodes in a batch whose other rows found one (every row feeds the same number of nodes).

Where a policy chooses the block size or node budget from measured costs (k = "auto"), a chain must pay for its
nodes: ``LookupRun`` keeps, per matched n-gram length, a running mean of the tokens the copied chains added beyond the
heads' own accepted path, and grafts a step's chains only when that gain, relative to the tokens the heads are
expected to accept, beats the relative cost of the larger call (c(N) / c(n) - 1, from the same measured costs).
Without a policy every chain found is grafted.

On the 16 benchmark prompts (SmolLM2, bf16, greedy answers of 128 tokens) 14% of the steps find a continuation of
which at least one token is right (``recipes/lm/probes/lookup_gain.py``), mostly in code, lists and SQL; k = 3
accepted 1.60 tokens per call alone and 2.12 with a chain of 6 (every output greedy's).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .tree import Tree, graft


class Lookup:
    """``propose(text)``: the ``tokens`` that followed the latest earlier occurrence of ``text``'s last n tokens, for
    the largest n in ``ngram``..``min_ngram`` that occurs earlier (searching the last ``window`` tokens); [] if none."""

    def __init__(self, tokens: int = 6, ngram: int = 3, min_ngram: int = 1, window: int = 2048) -> None:
        if tokens < 1 or not 1 <= min_ngram <= ngram or window < 2:
            raise ValueError(f"lookup needs tokens >= 1, 1 <= min_ngram <= ngram and window >= 2 (got tokens={tokens}, "
                             f"ngram={ngram}, min_ngram={min_ngram}, window={window})")
        self.tokens, self.ngram, self.min_ngram, self.window = tokens, ngram, min_ngram, window

    def propose(self, text: Sequence[int]) -> list[int]:
        return self.match(text)[1]

    def match(self, text: Sequence[int]) -> tuple[int, list[int]]:
        """(n, the chain): the length of the n-gram matched (0: none) and the tokens that followed it."""
        text = list(text[-self.window:])
        for n in range(min(self.ngram, len(text) - 1), self.min_ngram - 1, -1):
            tail = text[-n:]
            last = tail[-1]
            for end in range(len(text) - 2, n - 2, -1):  # the n-gram text[end - n + 1 .. end], latest first
                if text[end] == last and text[end - n + 1:end + 1] == tail:
                    return n, text[end + 1:end + 1 + self.tokens]
        return 0, []

    def describe(self) -> str:
        return f"lookup of {self.tokens} tokens after {self.min_ngram}..{self.ngram}-grams"


def cost(ms: dict[int, float], n: int) -> float:
    """The cost of a call feeding n nodes from measured ones (size -> ms): the smallest measured size at or above n;
    past the largest, extended along the slope of the two largest (never falling). A policy measures block sizes up
    to its k_max, and a block with a copied chain grafted on may be longer."""
    sizes = sorted(ms)
    above = [m for m in sizes if m >= n]
    if above:
        return ms[above[0]]
    last = sizes[-1]
    slope = (ms[last] - ms[sizes[-2]]) / (last - sizes[-2]) if len(sizes) > 1 else ms[last] / last
    return ms[last] + max(slope, 0.0) * (n - last)


class LookupRun:
    """One decode's lookup drafts: ``find`` looks up the rows' chains, ``budget`` trims the heads' block beside them
    where that is faster, ``extend`` grafts them onto the step's tree (when they pay, given costs), ``observe`` learns
    what they added and returns the k̂ of the heads' nodes alone (what a policy learns from).

    The gain of a chain matched on an n-gram is a running mean of the tokens its path accepted beyond the heads' best
    path (0 when the heads' path was as long), decayed by half every ``half_life`` grafted steps, starting from
    ``prior`` worth ``weight`` observations: optimistic, so that chains are tried, and dropped once they do not pay."""

    def __init__(self, lookup: Lookup, prior: float = 1.0, weight: float = 2.0, half_life: float = 8.0) -> None:
        self.lookup = lookup
        self.decay = 0.5 ** (1.0 / half_life)
        self.sums = {n: [prior * weight, weight] for n in range(1, lookup.ngram + 1)}  # n -> [gain sum, weight]
        self.chains: list[list[int]] = []  # this step's rows' chains (``find``)
        self.matched: list[int] = []  # this step's rows: the n-gram their grafted chain matched (0: none)
        self.heads = 0  # this step's tree's own nodes (the first ones of the grafted tree)

    def gain(self, n: int) -> float:
        total, weight = self.sums[n]
        return total / weight

    def step_gain(self) -> float:
        """The tokens per row this step's chains are expected to add (rows without one add none)."""
        return sum(self.gain(n) for n in self.matched if n) / len(self.matched)

    def find(self, texts: Sequence[Sequence[int]], left: Sequence[int]) -> None:
        """This step's chains: each row's after its text, at most ``left`` - 1 tokens (a row's tokens still to
        produce, the root included: a node never sits past the row's last position, so a chain is never deeper than
        the model's positions allow)."""
        matches = [self.lookup.match(text) for text in texts]
        self.chains = [chain[:max(limit - 1, 0)] for (_, chain), limit in zip(matches, left)]
        self.matched = [n if chain else 0 for (n, _), chain in zip(matches, self.chains)]

    def budget(self, n: int, ms: dict[int, float], expected) -> int:
        """The heads' block size or node budget to feed beside this step's chains: ``n`` (a policy's choice without
        them), or a smaller measured one where the copies' expected gain makes that faster (a long copy needs no
        long block beside it). ``expected(k)``: the tokens per row the heads are expected to accept at k."""
        if not any(self.matched):
            return n
        gain = self.step_gain()
        extra = max(map(len, self.chains))
        rates = {k: (expected(k) + gain) / cost(ms, k + extra) for k in ms if k <= n}
        best = max(rates, key=lambda k: (rates[k], -k))
        return best if rates[best] > expected(n) / cost(ms, n) else n

    def extend(self, tree: Tree, ms: dict[int, float] | None = None, expected: float = 1.0) -> Tree:
        """``tree`` (B rows) with this step's chains (``find``) grafted on. ``ms``: measured cost per node count at
        this batch size (a policy's), and ``expected``: the tokens per row the heads' tree is expected to accept; then
        the chains are grafted only if their expected gain pays for the larger call (``cost``). Without ``ms`` every
        chain is grafted."""
        self.heads = tree.nodes
        grafted = graft(tree, self.chains)
        if grafted is tree:
            self.matched = [0] * len(self.chains)
            return tree
        if ms is not None:
            if self.step_gain() / expected < cost(ms, grafted.nodes) / cost(ms, tree.nodes) - 1:
                self.matched = [0] * len(self.chains)
                return tree
        return grafted

    def observe(self, tree: Tree, scores: Tensor, accept, k_hat: Tensor) -> Tensor:
        """After a step that fed ``tree`` (from ``extend``) and accepted k̂ (B,): the k̂ the heads' nodes alone would
        have accepted, and each grafted row's gain noted under its n-gram."""
        if tree.nodes == self.heads:
            return k_hat
        h = self.heads
        heads = Tree(tree.tokens[:, :h], tree.parents[:, :h], tree.depth[:, :h], tree.visible[:, :h, :h])
        own = heads.accept(scores[:, :h], accept)[0] if h > 1 else torch.ones_like(k_hat)
        for n, extra in zip(self.matched, (k_hat - own).tolist()):
            if n:
                total, weight = self.sums[n]
                self.sums[n] = [total * self.decay + extra, weight * self.decay + 1.0]
        return own
