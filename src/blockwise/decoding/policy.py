"""Choosing k at every step from measured costs, so that blockwise decoding is never slower than greedy.

One iteration at block size k feeds k tokens to each of B rows, verifies them, rolls back, and proposes the next
block; its time c(B, k) is measured once per machine inside a real decode, bookkeeping included (k = 1 is a greedy
step). A row then accepts on average

    E(k) = 1 + Σ_{j=2..k} Π_{i=2..j} a_i

tokens, where a_i is the probability that proposal i is accepted once proposals 2..i-1 were. The policy picks the k
that maximises B · E(k) / c(B, k): tokens per second. k = 1, plain greedy, wins whenever nothing beats it by 5%
(``margin``: measured costs and running estimates are noisy). Any k gives the same output under exact acceptance, so
the choice only moves time.

The a_i start from a prior (the heads' held-out agreement where the heads file stores it, else a cautious default,
each depth's prior scaled by how the depth before it does against its own) and follow what is accepted while
decoding: counts of "reached depth i" and "accepted at depth i" decay by half every
``half_life`` iterations, so a prompt that turns predictable (a list, code, copying) raises k within a few steps,
and the estimate of a depth no longer observed (because k fell below it) drifts back to a baseline: what this decode
accepted over a longer span (counts halved every 32 blocks fed) with the prior worth 8 observations (drifting back
to the prior itself, where the heads do worse on this text than held out, fed a block every few greedy steps:
SmolLM2 int8 at batch 8, 8 blocks in 59 steps, 0.95x greedy). At k = 1 nothing is observed at all, so after a run of
greedy steps one iteration tries k = 2: a prompt that turned predictable is noticed, at a bounded cost (k = 3 where a
3-token call costs clearly less than a 2-token one: such a block is never fed, ``Policy.sizes``). The run is
``probe_every`` steps (32), longer where a probe is dear: a probe that accepts
nothing wastes c(2) - c(1), so the run is at least (c(2) / c(1) - 1) / ``probe_budget`` steps and probing costs at
most ``probe_budget`` (1%) of greedy's time (translation on an AVX2 CPU, a 2-token call 1.7 greedy steps: every 70
steps; SmolLM2 there at batch 1, 1.09: every 32).

Costs are cached on disk (``diskcache.cache_dir()``: $BLOCKWISE_CACHE, else ~/.cache/blockwise) under a key naming
everything they depend on: the model, its dtype, the batch size, the thread count, torch's version and CPU capability,
the device, whether the decoder samples (``sampling_key``), and the context the calls attend over (measured halfway
through the decode; keyed rounded up to 64, 256, 1024, ...). While decoding, the default policies time every
iteration and let what they see replace a measured cost that this machine no longer bears out (``Costs.observe``): a
measurement taken in a burst of load would otherwise mislead every later run.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import replace
from typing import Sequence

import torch

from .. import diskcache
from .interface import DecodingModel

DEFAULT_PRIOR = 0.5  # a_i when the heads say nothing: k = 2 is tried where a 2-token call costs < 1.5 greedy steps


def prior_from_expected(expected: Sequence[float]) -> list[float]:
    """a_2..a_K from held-out expected accepted block sizes E(1..K) (E(1) = 1): a_k = ΔE(k) / ΔE(k-1)."""
    steps = [b - a for a, b in zip([0.0, *expected], expected)]  # ΔE(1) = 1, ΔE(k) = Π a_2..a_k
    return [min(max(steps[i] / steps[i - 1], 0.0), 1.0) if steps[i - 1] > 0 else 0.0 for i in range(1, len(steps))]


def expected_from_block_sizes(block_sizes: Sequence[int], k: int) -> list[float]:
    """E(1..k) from a histogram of accepted block sizes of an exact decode at block size k (``DecodeStats.
    block_sizes``): a row that accepted k̂ at k would have accepted min(k̂, j) at block size j."""
    total = sum(block_sizes)
    if total == 0:
        raise ValueError("no blocks were accepted: decode something first")
    return [sum(n * min(size, j) for size, n in enumerate(block_sizes)) / total for j in range(1, k + 1)]


class AcceptanceEstimate:
    """Running estimates of a_2..a_K: decayed counts plus a baseline worth ``weight`` observations. The baseline is
    what this decode has accepted over a longer span (counts halved every ``long_half_life`` blocks) plus the prior
    worth ``prior_weight`` observations: greedy steps let the short-run counts fade towards it, so an estimate drifts
    back to what the heads have done on this text, not to a held-out prior that this text may not bear out. Plain
    Python floats: this runs at every iteration, where a dozen tiny tensor operations would cost more than a small
    model's step."""

    def __init__(self, prior: Sequence[float], weight: float = 2.0, half_life: float = 4.0,
                 prior_weight: float = 8.0, long_half_life: float = 32.0) -> None:
        self.prior = [float(p) for p in prior]  # a_2..a_K
        self.weight, self.decay = weight, 0.5 ** (1.0 / half_life)
        self.prior_weight, self.long_decay = prior_weight, 0.5 ** (1.0 / long_half_life)
        self.reached = [0.0] * len(self.prior)
        self.accepted = [0.0] * len(self.prior)
        self.long_reached = [0.0] * len(self.prior)  # the same counts over the longer span
        self.long_accepted = [0.0] * len(self.prior)

    @property
    def baseline(self) -> list[float]:
        """a_2..a_K over the longer span, the prior counting ``prior_weight`` observations."""
        return [(accepted + self.prior_weight * prior) / (reached + self.prior_weight)
                for prior, reached, accepted in zip(self.prior, self.long_reached, self.long_accepted)]

    @property
    def a(self) -> list[float]:
        """Current a_2..a_K. A depth's baseline moves with the depth before it (heads that beat it at depth i-1 are
        credited at depth i too), so depths not fed yet are tried once shallower ones do well, and not while they do
        badly."""
        a, scale = [], 1.0
        for base, reached, accepted in zip(self.baseline, self.reached, self.accepted):
            mean = min(base * scale, 1.0)
            a.append((accepted + self.weight * mean) / (reached + self.weight))
            scale = a[-1] / base if base > 0 else 1.0
        return a

    def expected(self) -> list[float]:
        """E(1..K): expected tokens accepted per row and iteration at each k."""
        out, run = [1.0], 1.0
        for a in self.a:
            run *= a
            out.append(out[-1] + run)
        return out

    def observe(self, k_hat: Sequence[int], fed: int) -> None:
        """One iteration: each row was fed ``fed`` tokens and its rule accepted k̂ of them (before clipping at the
        end of a row). Proposal i (2..fed) was reached where k̂ >= i - 1 and accepted where k̂ >= i. A greedy step
        (``fed`` 1) observes nothing: the short-run counts fade, the longer span's stay."""
        self.reached = [r * self.decay for r in self.reached]
        self.accepted = [a * self.decay for a in self.accepted]
        if fed < 2 or not k_hat:
            return
        self.long_reached = [r * self.long_decay for r in self.long_reached]
        self.long_accepted = [a * self.long_decay for a in self.long_accepted]
        for j in k_hat:
            for i in range(2, fed + 1):
                if j < i - 1:
                    break
                self.reached[i - 2] += 1.0
                self.accepted[i - 2] += j >= i
                self.long_reached[i - 2] += 1.0
                self.long_accepted[i - 2] += j >= i


class Costs:
    """Milliseconds of one iteration per batch size and k, measured on demand and cached on disk, and corrected by
    what iterations take while decoding (``observe``).

    A measurement is a few seconds once per machine, and a burst of load on a shared host during it stays in the cache
    for good: translation at batch 1 (float32, AVX-512 EPYC) once cached 1.63 / 1.64 / 1.76 ms for k = 1 / 2 / 3,
    where the iterations take ~1.2 / 2.0 / 2.3, and k = auto then fed 2- and 3-token blocks at every step, 0.84x
    greedy, in every later run. So a policy given a clock (``Policy``, ``TreePolicy``: the default policies are)
    reports every iteration's wall time, from one choice to the next, and once an option has ``LIVE_MIN`` of them
    the lower quartile of its last ``LIVE_KEEP`` replaces its measured cost; where that differs from the cached cost
    by more than ``HEAL`` after ``LIVE_KEEP`` iterations, the cache on disk takes it too, so the next run starts
    right."""

    LIVE_MIN, LIVE_KEEP, HEAL = 4, 16, 0.2

    def __init__(self, table: dict[int, dict[int, float]] | None = None, key: str | None = None,
                 measure=None) -> None:
        self.table = {int(b): {int(k): float(v) for k, v in row.items()} for b, row in (table or {}).items()}
        self.key, self.measure = key, measure  # measure(batch) -> {k: ms}; None: only the table
        self.measure_seconds = 0.0  # time spent measuring (callers timing a decode subtract it)
        self.seen: dict[tuple[int, int], list[float]] = {}  # (bucket, option) -> ms of its latest iterations
        self.live: dict[int, dict[int, float]] = {}  # bucket -> the table's row with what was observed in it
        self.healed: set[tuple[int, int]] = set()  # (bucket, option) written back to the disk cache

    def at(self, batch: int) -> dict[int, float]:
        """k -> ms at this batch size: measured at the power of two at or above it (cost grows with the batch, so
        this errs towards the slower estimate), with what was observed there (``observe``)."""
        bucket = self._bucket(batch)
        return self.live.get(bucket, self.table[bucket])

    def _bucket(self, batch: int) -> int:
        """The row of the table that serves ``batch`` rows, measured first if it is missing."""
        bucket = 1 << max(batch - 1, 0).bit_length()
        if bucket not in self.table:
            known = [b for b in self.table if b >= batch]
            if self.measure is None:
                if not self.table:
                    raise ValueError("no measured costs and nothing to measure them with")
                bucket = min(known) if known else max(self.table)
            else:
                start = time.perf_counter()
                self.table[bucket] = self.measure(bucket)
                self.measure_seconds += time.perf_counter() - start
                self._save()
        return bucket

    def observed(self, batch: int, option: int) -> int:
        """How many iterations of ``option`` at ``batch`` rows were observed (at most ``LIVE_KEEP`` are kept)."""
        return len(self.seen.get((self._bucket(batch), option), ()))

    def observe(self, batch: int, option: int, ms: float) -> None:
        """One decoding iteration of ``option`` (a block size, a node budget) over ``batch`` rows took ``ms``."""
        bucket = self._bucket(batch)
        row = self.table[bucket]
        if option not in row:
            return
        seen = self.seen.setdefault((bucket, option), [])
        seen.append(ms)
        del seen[:-self.LIVE_KEEP]
        if len(seen) < self.LIVE_MIN:
            return
        estimate = sorted(seen)[len(seen) // 4]  # the lower quartile: a busy host only ever adds time
        live = self.live.get(bucket, row)
        if abs(estimate / live[option] - 1) > 0.03:  # a new row only on a real change: ``Policy.sizes`` reads it anew
            self.live[bucket] = {**live, option: estimate}
        if len(seen) == self.LIVE_KEEP and (bucket, option) not in self.healed and \
                abs(estimate / row[option] - 1) > self.HEAL:
            self.healed.add((bucket, option))
            row[option] = estimate
            try:
                self._save()
            except OSError:  # a cache folder that cannot be written: this run still decodes on what it saw
                pass

    def prepare(self, batch: int) -> None:
        """Measure now (once per machine) every batch size a decode of ``batch`` rows shrinks through, so that no
        measurement falls inside a timed decode."""
        for b in range(1, batch + 1):
            self.at(b)

    def _save(self) -> None:
        if self.key is not None:
            diskcache.write("costs.json", self.key, self.table)

    @staticmethod
    def cached(key: str) -> dict[int, dict[int, float]]:
        return diskcache.read("costs.json", key, {})


class Stopwatch:
    """Times a policy's iterations for ``Costs.observe``: from one ``choose`` to the next, the option chosen, unless
    the decoder fed something else (``fed``: a block cut short at the end of a row, lookup drafts grafted on), a
    new decode began (``start``) or rows finished (the batch changed: dropping rows moves their caches, whatever k
    was, and at the tail of a translation batch that made greedy steps look 1.8x dearer than measured) in between.
    Without a clock it does nothing.

    A greedy step's cost is seen only if greedy steps are taken: where the table makes it look dearer than it is,
    blocks win every step and it would never be corrected. So until ``Costs.LIVE_MIN`` greedy steps were timed at a
    batch size, every ``every``-th block in a row is replaced by a greedy step (``greedy_now``): at most a few
    dozen steps, a greedy step instead of a block in each eighth."""

    def __init__(self, costs: Costs, clock=None, every: int = 8) -> None:
        self.costs, self.clock, self.every = costs, clock, every
        self.pending: tuple[int, int, float] | None = None  # (batch, option, when it was chosen)
        self.blocks = 0  # blocks chosen in a row while greedy's cost is not yet observed

    def greedy_now(self, batch: int, option: int) -> bool:
        """Whether to take a greedy step instead of ``option`` (> 1) to time greedy's cost (above)."""
        if self.clock is None or option == 1 or self.costs.observed(batch, 1) >= Costs.LIVE_MIN:
            self.blocks = 0
            return False
        self.blocks += 1
        if self.blocks < self.every:
            return False
        self.blocks = 0
        return True

    def start(self) -> None:
        self.pending = None

    def lap(self, batch: int) -> None:
        """At the start of ``choose`` for ``batch`` rows: the iteration chosen last is over."""
        if self.pending is not None:
            rows, option, since = self.pending
            if rows == batch:
                self.costs.observe(batch, option, 1e3 * (self.clock() - since))
            self.pending = None

    def chosen(self, batch: int, option: int) -> None:
        if self.clock is not None:
            self.pending = (batch, option, self.clock())

    def fed(self, n: int) -> None:
        if self.pending is not None and self.pending[1] != n:
            self.pending = None


def probe_interval(ms: dict[int, float], probe: int, probe_every: int, budget: float) -> int:
    """Greedy steps in a row before a probe at ``probe`` (a block size or node budget; ``ms``: option -> cost):
    ``probe_every``, or more where a probe that accepts nothing, wasting c(probe) - c(1), would cost more than
    ``budget`` of that many greedy steps."""
    if probe not in ms:
        return probe_every
    return max(probe_every, math.ceil((ms[probe] / ms[1] - 1) / budget))


class Policy:
    """Chooses k for every iteration (``choose``) and learns from what is accepted (``observe``); with a ``clock``
    (seconds, as ``time.perf_counter``), also from what each iteration took (``Costs.observe``). Decoders call
    ``start`` before a decode's first iteration and ``fed`` with the block each iteration feeds."""

    def __init__(self, costs: Costs, prior: Sequence[float], k_max: int, weight: float = 2.0,
                 half_life: float = 4.0, probe_every: int = 32, margin: float = 1.05,
                 probe_budget: float = 0.01, skip: float = 0.9, clock=None) -> None:
        if k_max < 1:
            raise ValueError(f"k_max must be >= 1, got {k_max}")
        prior = list(prior)[: k_max - 1] + [DEFAULT_PRIOR] * max(0, k_max - 1 - len(prior))
        self.costs, self.k_max, self.probe_every, self.margin = costs, k_max, probe_every, margin
        self.probe_budget, self.skip = probe_budget, skip
        self.estimate = AcceptanceEstimate(prior, weight, half_life)
        self.greedy_steps = 0  # greedy steps in a row
        self._sizes: dict[int, tuple[dict, list[int]]] = {}  # batch -> (its cost table, ``sizes``)
        self.stopwatch = Stopwatch(costs, clock)

    def start(self) -> None:
        """A new decode begins: the time since the last choice is not an iteration's."""
        self.stopwatch.start()

    def fed(self, n: int) -> None:
        """This iteration feeds ``n`` tokens per row (not timed where that is not what was chosen)."""
        self.stopwatch.fed(n)

    def sizes(self, batch: int) -> list[int]:
        """The block sizes worth feeding at ``batch`` rows: 1, and every k in 2..k_max unless a longer block costs
        clearly less (``skip``: 10% less; a longer block accepts at least as much). Measured costs need not grow with
        k (int8/int4 kernels and oneDNN's row blocking ran 3 rows faster than 2); ties within the noise of a
        measurement never skip a size, so noisy tables (translation: 3..8 tokens all 8.6-9.0 ms) still grow a block
        a size at a time (84d8afc: jumping to any deeper block that cost no more did not pay there)."""
        ms = self.costs.at(batch)
        known = self._sizes.get(batch)
        if known is None or known[0] is not ms:  # once per table: this runs at every step, ~30 us of a 2 ms one
            ks = sorted(k for k in ms if k <= self.k_max)
            known = self._sizes[batch] = ms, [k for k in ks if k == 1 or all(ms[j] >= self.skip * ms[k]
                                                                           for j in ks if j > k)]
        return known[1]

    def best(self, batch: int) -> int:
        """The k with the most expected tokens per second for ``batch`` rows (rows accept alike), among ``sizes`` but
        at most the next one past the deepest depth observed lately: a block grows a size at a time, so an estimate
        that rests on the prior alone is tried at the cost of a few extra tokens, never of k_max - 1."""
        ms = self.costs.at(batch)
        expected = self.estimate.expected()
        deepest = 1  # depths 2..deepest all observed lately
        while deepest - 1 < len(self.estimate.reached) and self.estimate.reached[deepest - 1] >= 0.5:
            deepest += 1
        sizes = self.sizes(batch)
        top = next((k for k in sizes if k > deepest), deepest)
        rates = {k: expected[k - 1] / ms[k] for k in sizes if k <= top}
        rates[1] *= self.margin  # a block must beat greedy by a margin: measured costs and estimates are noisy
        return max(rates, key=lambda k: (rates[k], -k))  # ties: the smaller block

    def probe_size(self, batch: int) -> int:
        """The block a probe feeds: the smallest worth feeding past greedy's (2 where costs grow with k)."""
        return next((k for k in self.sizes(batch) if k > 1), 1)

    def probe_interval(self, batch: int) -> int:
        """Greedy steps in a row before a probe at ``probe_size`` (``probe_interval``)."""
        return probe_interval(self.costs.at(batch), self.probe_size(batch), self.probe_every, self.probe_budget)

    def choose(self, batch: int) -> int:
        """This iteration's k: the best one, or a probe (``probe_size``) after ``probe_interval`` greedy steps in a
        row."""
        self.stopwatch.lap(batch)
        k = self.best(batch)
        self.greedy_steps = self.greedy_steps + 1 if k == 1 else 0
        if k == 1 and self.k_max > 1 and self.greedy_steps > self.probe_every and \
                self.greedy_steps > self.probe_interval(batch):  # the interval is never below probe_every
            self.greedy_steps = 0
            k = self.probe_size(batch)
        elif self.stopwatch.greedy_now(batch, k):
            k = 1
        self.stopwatch.chosen(batch, k)
        return k

    def observe(self, k_hat: Sequence[int], fed: int) -> None:
        self.estimate.observe(k_hat, fed)

    # the same policy choosing the block of a tree decode (decoding/tree.py: ``ChainShape``, with lookup drafts)
    def draft_budget(self, n: int) -> int:
        return n

    def expected_at(self, k: int) -> float:
        """E(k): tokens a row is expected to accept from a block of k."""
        expected = self.estimate.expected()
        return expected[min(k, len(expected)) - 1]

    def observe_tree(self, expected, k_hat: Sequence[int], fed: int) -> None:
        self.observe(k_hat, fed)


class TreePolicy:
    """Chooses the node budget n of every step's dynamic tree (decoding/tree.py) among ``budgets``; n = 1 is a greedy
    step. Tokens per second at n: B · E(n) / c(B, n), with c measured like a block's (``measure_tree_iteration``) and

        E(n) = 1 + α · (P(n) - 1),

    where P(n) is what the drafted trees predict (1 + the sum of the n - 1 best candidates' cumulative probabilities:
    every step's draft predicts every budget at once, averaged over rows and decayed like ``AcceptanceEstimate``) and
    α calibrates it: accepted tokens beyond the root over predicted ones at the budgets fed (heads are rarely
    calibrated), decayed like the curve, plus ``weight`` predicted tokens at a baseline: α over a longer span (sums
    halved every ``long_half_life`` tree steps) with ``prior_weight`` predicted tokens at 1. Greedy steps let the
    short-run sums fade, so α drifts back to that baseline, as ``AcceptanceEstimate`` does for blocks: a hard start no
    longer holds the trees off for the rest of the decode (SmolLM2 with the drafter, a 16-node budget, one prompt:
    ten steps of 1-2 tokens left α at 0.28 and 80 of the next 82 steps greedy, 1.03 tokens per call where any fixed
    tree accepted 2.2-2.9). A tree must beat greedy by ``margin``; after ``probe_interval`` greedy steps the smallest
    tree is tried. A step's tree is drafted only as deep as its budget allows (a 2-node tree: one depth), which
    predicts the budgets up to its own only; the first tree step and every ``full_every``-th tree step draft for the
    largest budget that could matter at this batch size (``draft_budget``, ``widest``; a probe drafts for its own), so
    those budgets' predictions stay fresh, and a budget's prediction takes a new draft by the steps since its last one
    (one step's share where it was drafted for at the step before, most of it after a dozen). Greedy steps draft
    nothing: the predictions fade to each budget's mean over the longer span, counting the heads' held-out E(k) of a
    chain as ``prior_drafts`` drafts (``prior``: E(1..K), where the heads file stores it), so one gloomy early draft
    does not keep trees off until a probe."""

    def __init__(self, costs: Costs, budgets: Sequence[int], half_life: float = 4.0, probe_every: int = 32,
                 margin: float = 1.05, weight: float = 1.0, probe_budget: float = 0.01, full_every: int = 8,
                 prior_weight: float = 8.0, long_half_life: float = 32.0, prior: Sequence[float] = (),
                 prior_drafts: float = 4.0, optimism: float = 1.5, clock=None) -> None:
        self.costs, self.budgets = costs, sorted(set(budgets) | {1})
        self.stopwatch = Stopwatch(costs, clock)  # iterations' times correct the costs, as ``Policy``'s
        self.full_every, self.since_full, self.probing = full_every, 0, False
        self.optimism, self.batch = optimism, 1  # ``widest``; the batch size of the last ``choose``
        self.probe_every, self.margin, self.weight, self.probe_budget = probe_every, margin, weight, probe_budget
        self.decay, self.long_decay = 0.5 ** (1.0 / half_life), 0.5 ** (1.0 / long_half_life)
        self.prior_weight = prior_weight
        self.curve: list[float] | None = None  # P(n) - 1 at each budget
        self.accepted = self.predicted = 0.0  # decayed sums of k̂ - 1 and P(n fed) - 1
        self.long_accepted = self.long_predicted = 0.0  # the same over the longer span
        self.greedy_steps = 0
        self.drafted_for = self.budgets[-1]  # the budget the last tree was drafted for (``draft_budget``)
        self.steps, self.updated = 0, []  # steps observed; the step each budget's prediction was last drafted for
        # what greedy steps let the predictions fade to: each budget's drafted predictions over the longer span, with
        # ``prior_drafts`` drafts' worth of the heads' held-out E(k) of a chain as long (``prior``: E(1..K)), if any
        self.prior_curve = [prior[min(n, len(prior)) - 1] - 1.0 for n in self.budgets] if prior else None
        self.prior_drafts = prior_drafts if prior else 0.0
        self.long_curve = [0.0] * len(self.budgets)
        self.long_drafts = [0.0] * len(self.budgets)

    @property
    def alpha(self) -> float:
        """α: the short run's accepted over predicted, with ``weight`` predicted tokens at the longer span's."""
        baseline = (self.long_accepted + self.prior_weight) / (self.long_predicted + self.prior_weight)
        return (self.accepted + self.weight * baseline) / (self.predicted + self.weight)

    def expected(self) -> dict[int, float]:
        if self.curve is None:
            return {1: 1.0}
        alpha = self.alpha
        return {n: 1.0 + alpha * c for n, c in zip(self.budgets, self.curve)}

    def baseline(self) -> list[float | None]:
        """Each budget's prediction over the longer span, with the prior's drafts (None: never drafted, no prior)."""
        prior = self.prior_curve or [0.0] * len(self.budgets)
        return [(total + self.prior_drafts * p) / (drafts + self.prior_drafts) if drafts + self.prior_drafts else None
                for total, drafts, p in zip(self.long_curve, self.long_drafts, prior)]

    def best(self, batch: int) -> int:
        ms = self.costs.at(batch)
        if self.curve is None:  # nothing drafted yet: the smallest tree, which predicts every budget
            return self.budgets[1] if len(self.budgets) > 1 else 1
        rates = {n: e / ms[n] for n, e in self.expected().items() if n in ms}
        rates[1] *= self.margin
        return max(rates, key=lambda n: (rates[n], -n))

    def choose(self, batch: int) -> int:
        self.stopwatch.lap(batch)
        self.batch = batch
        n = self.best(batch)
        self.greedy_steps = self.greedy_steps + 1 if n == 1 else 0
        self.probing = n == 1 and len(self.budgets) > 1 and self.greedy_steps > self.probe_every and \
            self.greedy_steps > self.probe_interval(batch)
        if self.probing:
            self.greedy_steps = 0
            n = self.budgets[1]
        elif self.stopwatch.greedy_now(batch, n):
            n = 1
        self.stopwatch.chosen(batch, n)
        return n

    def start(self) -> None:
        self.stopwatch.start()

    def fed(self, n: int) -> None:
        self.stopwatch.fed(n)

    def draft_budget(self, n: int) -> int:
        """The budget a step feeding ``n`` nodes drafts its tree for (``DynamicTree.build``'s ``draft``): ``n``, or the
        largest budget at the first tree step and every ``full_every``-th tree step that is not a probe. A probe drafts
        for its own small budget: drafting a wide tree (64 nodes, 8 guesses each: 9 depths of head calls) for a 2-node
        call made each probe cost several greedy steps (translation, batch 1, 200 sentences, 50 probes: auto 0.77x
        greedy); the larger budgets keep their last prediction, which the probe's outcome rescales (α)."""
        self.drafted_for = self._draft_budget(n)
        return self.drafted_for

    def _draft_budget(self, n: int) -> int:
        if n == 1:
            return 1
        if self.probing and self.curve is not None:
            return n
        self.since_full += 1
        if self.curve is None or self.since_full >= self.full_every:
            self.since_full = 0
            return max(n, self.widest(self.batch))
        return n

    def widest(self, batch: int) -> int:
        """The budget a full draft is for at ``batch`` rows: the next one up from the largest budget that could beat
        greedy there were its predicted gain E(n) - 1 ``optimism`` times what it is, so that a prediction is refreshed
        while it could matter and the next budget up is always tried (a prompt turning predictable widens the drafts a
        budget at a time); every budget while nothing is predicted. Where large trees cannot pay, drafting for them
        only costs: SmolLM2 with the drafter at batch 8, one thread, a 16-node tree costs 6.8 greedy steps, and its
        draft every 8th step of 2-node calls held treeauto16 at 0.948x greedy where it gave 0.978x without them."""
        if self.curve is None:
            return self.budgets[-1]
        ms, expected = self.costs.at(batch), self.expected()
        bar = self.margin / ms[1]  # greedy's tokens per ms, with the margin a tree must beat it by
        could = [n for n in self.budgets[1:] if n in ms and (1.0 + self.optimism * (expected[n] - 1.0)) / ms[n] >= bar]
        top = self.budgets.index(max(could, default=1))
        return self.budgets[min(top + 1, len(self.budgets) - 1)]

    def probe_interval(self, batch: int) -> int:
        """Greedy steps in a row before a probe with the smallest tree (``probe_interval``)."""
        return probe_interval(self.costs.at(batch), self.budgets[1], self.probe_every, self.probe_budget)

    def expected_at(self, n: int) -> float:
        """E(n): tokens a row is expected to accept from a tree of n nodes."""
        return self.expected().get(n, 1.0)

    def observe(self, expected: Sequence[Sequence[float]] | None, k_hat: Sequence[int], fed: int) -> None:
        """One step: each row's predicted curve (``Tree.expected`` rows; None for a greedy step, whose only effect is
        that the short-run sums fade) and accepted k̂."""
        self.accepted, self.predicted = self.decay * self.accepted, self.decay * self.predicted
        self.steps += 1
        if expected is None or not k_hat:
            if self.curve is not None:  # nothing drafted: the predictions fade to their baseline
                for i, base in enumerate(self.baseline()):
                    if base is not None:
                        self.curve[i] += (1.0 - self.decay) * (base - self.curve[i])
            return
        # a small budget's tree is drafted shallow (DynamicTree.build: a tree of n nodes is at most n - 1 deep): its
        # candidates predict the budgets up to the one it was drafted for (larger ones keep their estimate), except
        # when nothing was estimated yet. Not up to the candidates it has: a one-deep draft with 4 guesses holds 5,
        # but the best 4 of a deeper draft are a chain and a sibling, not 3 siblings (with the drafter that made
        # budget 4 look worse than 2, and kept it from being fed: 1.32-1.57 tokens per call where a fixed 4 gave 2.0)
        rows = len(expected)
        drafted = min(self.drafted_for, *(len(row) for row in expected))
        curve = [sum(row[min(n, len(row)) - 1] for row in expected) / rows - 1.0 for n in self.budgets]
        # each budget's prediction decays with the steps since it was last drafted for, greedy ones included: one
        # drafted for every 8th step, or last before a run of greedy steps, takes most of a new draft's
        if self.curve is None:
            self.curve, self.updated = list(curve), [self.steps] * len(curve)
        else:
            for i, n in enumerate(self.budgets):
                if n <= drafted:
                    fresh = 1.0 - self.decay ** (self.steps - self.updated[i])
                    self.curve[i] += fresh * (curve[i] - self.curve[i])
                    self.updated[i] = self.steps
        for i, n in enumerate(self.budgets):
            if self.updated[i] == self.steps:  # drafted for now
                self.long_curve[i] = self.long_decay * self.long_curve[i] + curve[i]
                self.long_drafts[i] = self.long_decay * self.long_drafts[i] + 1.0
        at_fed = sum(row[min(fed, len(row)) - 1] for row in expected) - rows
        self.accepted += sum(k_hat) - len(k_hat)
        self.predicted += at_fed
        self.long_accepted = self.long_decay * self.long_accepted + sum(k_hat) - len(k_hat)
        self.long_predicted = self.long_decay * self.long_predicted + at_fed

    observe_tree = observe


# -- the default policy of a model: measured costs, the heads' prior ------------------------------------------------
def context_bucket(context: int) -> int:
    """64, 256, 1024, ...: the smallest at or above ``context``."""
    bucket = 64
    while bucket < context:
        bucket *= 4
    return bucket


def model_key(model: DecodingModel, context: int, k_max: int) -> str:
    """What a measured cost depends on, as a string (see the module's docstring)."""
    # the version: v2 ragged measurements; v3 bfloat16 products through packed weights (costs measured before are off);
    # v4 a lone packed row run as the row plan runs two (bf16 greedy steps ~15% cheaper), int4 prompts in bf16;
    # v5 the in-house Transformer's float32 output projection packed (translation blocks ~2x cheaper to verify);
    # v6 two sweeps over the sizes, the least of each size's two (``_time_steps``); v7 quantized Llama sessions attend
    # in float32, query by query (one-token steps ~1.3 ms cheaper, 2-3-token ones ~0.7 ms: the costs moved); v8 the
    # feature drafter of a quantized base quantized too (a k = 3 draft of SmolLM2 int4 4.4 -> 2.0 ms); v9 bf16 tree
    # attention copies whole value rows (a tree8 call of SmolLM2 ~3 ms cheaper); v10 the cache moves entries by indexing,
    # not bf16 ``scatter_`` (ragged bf16 steps at batch 8 ~25% cheaper, tree compaction 0.9 -> 0.06 ms); v11 bf16
    # caches grow with their spans, so attention no longer copies each layer's keys and values (batch 8 ~10% cheaper);
    # v12 a lone float32 row runs packed beside a copy where MKL's one-row kernel measured slower (greedy steps ~19%
    # cheaper on an AVX-512 EPYC); v13 a float32 feature drafter multiplies by oneDNN-packed copies too (drafts ~25%
    # cheaper there)
    parts = ["v13", type(model).__name__, f"heads={model.num_heads}", f"k_max={k_max}"]
    if isinstance(model, torch.nn.Module):
        params = list(model.parameters())
        heads = getattr(model, "heads", None)
        kind = getattr(getattr(heads, "cfg", None), "kind", "?")
        parts += [f"shapes={diskcache.shapes(params)}", f"kind={kind}", f"dtype={params[0].dtype}".replace("torch.", ""),
                  f"device={params[0].device}"]
        weights = getattr(model, "weights", None)  # quantized weights (model.quant) cost differently from float ones
        if weights is not None:
            parts.append(f"weights={weights}")
    parts += [diskcache.machine(), f"context={context_bucket(context)}"]
    return "|".join(parts)


class _Enough(Exception):
    """Raised by ``_Fixed`` once it has timed enough iterations: a measurement never decodes longer than it needs."""


class _Fixed:
    """A stand-in policy that always chooses k and notes when it was asked: the gaps are whole iterations."""

    def __init__(self, k: int, limit: int) -> None:
        self.k_max, self.k, self.stamps, self.limit = k, k, [], limit

    def choose(self, batch: int) -> int:
        self.stamps.append(time.perf_counter())
        if len(self.stamps) > self.limit:
            raise _Enough
        return self.k

    def draft_budget(self, n: int) -> int:  # a tree step drafts as its budget allows, as most of TreePolicy's do
        return n

    def observe(self, *args) -> None:
        pass

    start = fed = observe

    observe_tree = observe


def measure_iteration(model: DecodingModel, prefixes: Sequence[Sequence[int]], sources, batch: int, k_max: int,
                      ahead: int = 0, repeats: int = 9, progress: bool = False, sampling=None) -> dict[int, float]:
    """k -> ms of one whole decoding iteration at block size k (feed, verify, accept, roll back, propose the next
    block, the bookkeeping included: on small models that is a good part of it), over the first ``batch`` rows
    (repeated if fewer) and ``ahead`` tokens after the prefixes, timed inside a real decode; with ``sampling``, of
    speculative sampling's iteration (p̃ at every fed position and the heads' q̃ cost more per token than argmaxes)."""
    from .blockwise import blockwise

    sampling = for_measuring(sampling)

    def decode(chosen, chosen_sources, fixed):
        blockwise(model, chosen, (repeats + 2) * fixed.k, sources=chosen_sources, policy=fixed, sampling=sampling)

    return _time_steps(decode, list(range(1, k_max + 1)), prefixes, sources, batch, ahead, repeats,
                       f"measuring the cost of k = 1..{k_max} at batch {batch} (once per machine)" if progress else None)


def _time_steps(decode, options: Sequence[int], prefixes: Sequence[Sequence[int]], sources, batch: int, ahead: int,
                repeats: int, progress: str | None, sweeps: int = 2) -> dict[int, float]:
    """option -> ms of one step of ``decode(prefixes, sources, policy)`` run with a ``_Fixed`` policy choosing that
    option: the lower quartile of ``repeats`` whole steps after two of warm-up, in each of ``sweeps`` sweeps over the
    options (every other one in reverse order), and the least of those (a shared machine only ever adds time, and
    in bursts of seconds: with one sweep the translation model's costs at k = 3..8 came out 9.6, 10.4, 7.1, 8.2, 7.6,
    7.4 ms, and k = auto fed 4- and 8-token blocks that ran 0.88x greedy). ``progress``: a progress bar's text, or
    None for none."""
    rows = [i % len(prefixes) for i in range(batch)]
    # the context a decode attends over halfway through, ragged as a batch soon is once rows accept different k̂
    # (aligned rows take cheaper cache writes and masks, which made blocks look cheaper than they are at batch 32)
    chosen = [list(prefixes[i]) + [3] * (ahead + j % 3) for j, i in enumerate(rows)]
    chosen_sources = None if sources is None else [sources[i] for i in rows]
    order = [o for sweep in range(sweeps) for o in (options if sweep % 2 == 0 else list(reversed(options)))]
    if progress is not None:
        from tqdm.auto import tqdm

        order = tqdm(order, desc=progress, leave=False, dynamic_ncols=True)
    ms: dict[int, float] = {}
    for option in order:
        fixed = _Fixed(option, repeats + 3)
        try:
            decode(chosen, chosen_sources, fixed)
        except _Enough:
            pass
        gaps = [b - a for a, b in zip(fixed.stamps, fixed.stamps[1:])][2:]  # the first two: warm-up
        ms[option] = min(ms.get(option, float("inf")), 1e3 * statistics.quantiles(gaps, n=4)[0])
    return {option: ms[option] for option in options}


def sampling_key(sampling) -> str:
    """What of a ``Sampling`` moves the cost of an iteration: whether it samples, and which cuts it makes (a top-p cut
    sorts the vocabulary at every position); not the temperature or the seed."""
    if sampling is None:
        return "greedy"
    cuts = [name for name, on in (("top_k", sampling.top_k), ("top_p", sampling.top_p < 1),
                                  ("typical", sampling.typical is not None)) if on]
    return "+".join(["sample", *cuts])


def for_measuring(sampling):
    """``sampling`` with one seed for any number of rows (a measurement repeats rows), or None."""
    return None if sampling is None else replace(sampling, seed=0)


def default_policy(model: DecodingModel, prefixes: Sequence[Sequence[int]], sources, k_max: int,
                   max_new_tokens: int = 0, progress: bool = False, sampling=None) -> Policy:
    """Measured (or cached) costs of this model on this machine (of speculative sampling's iterations with
    ``sampling``), and the heads' own prior where they carry one."""
    longest = max(map(len, prefixes))
    ahead = min(max_new_tokens // 2, model.max_positions - longest - 12 * k_max - 3)
    key = model_key(model, longest + max(ahead, 0), k_max) + f"|{sampling_key(sampling)}"
    costs = Costs(Costs.cached(key), key, lambda b: measure_iteration(
        model, prefixes, sources, b, k_max, max(ahead, 0), progress=progress, sampling=sampling))
    expected = held_out_expected(model)
    prior = prior_from_expected(expected) if expected else []
    return Policy(costs, prior, k_max, clock=time.perf_counter)


def held_out_expected(model: DecodingModel) -> list[float] | None:
    """E(1..K) of the model's heads on held-out text, where the heads file stores it (the policies' prior)."""
    return getattr(getattr(model, "heads", None), "expected_accepted", None)


def measure_tree_iteration(model: DecodingModel, prefixes: Sequence[Sequence[int]], sources, batch: int, tree,
                           budgets: Sequence[int], ahead: int = 0, repeats: int = 9,
                           progress: bool = False, sampling=None) -> dict[int, float]:
    """n -> ms of one whole tree-decoding step with a node budget n (drafting, the call, acceptance, compaction),
    timed inside a real decode like ``measure_iteration``."""
    from .tree import tree_decode

    sampling = for_measuring(sampling)

    def decode(chosen, chosen_sources, fixed):
        tree_decode(model, chosen, (repeats + 3) * (tree.depth + 1), tree, sources=chosen_sources, policy=fixed,
                    sampling=sampling)

    text = f"measuring the cost of trees of {budgets[0]}..{budgets[-1]} nodes at batch {batch} (once per machine)"
    return _time_steps(decode, list(budgets), prefixes, sources, batch, ahead, repeats, text if progress else None)


def tree_budgets(tree) -> list[int]:
    """Node budgets a policy chooses among: 1 (greedy), then doubling up to what the tree drafts."""
    top, budgets = min(tree.nodes, tree.candidates), [1]
    while budgets[-1] * 2 < top:
        budgets.append(budgets[-1] * 2)
    return budgets + [top] if top > 1 else budgets


def default_tree_policy(model: DecodingModel, prefixes: Sequence[Sequence[int]], sources, tree,
                        max_new_tokens: int = 0, progress: bool = False, sampling=None) -> TreePolicy:
    """Measured (or cached) costs of trees of 1..tree.nodes nodes of this model on this machine."""
    longest = max(map(len, prefixes))
    budgets = tree_budgets(tree)
    ahead = min(max_new_tokens // 2, model.max_positions - longest - 12 * (tree.depth + 1) - 3)
    key = model_key(model, longest + max(ahead, 0), budgets[-1]) + f"|tree={tree.describe()}|{sampling_key(sampling)}"
    costs = Costs(Costs.cached(key), key, lambda b: measure_tree_iteration(
        model, prefixes, sources, b, tree, budgets, max(ahead, 0), progress=progress, sampling=sampling))
    return TreePolicy(costs, budgets, prior=held_out_expected(model) or (), clock=time.perf_counter)


def auto_policy(model: DecodingModel, prefixes: Sequence[Sequence[int]], sources, max_new_tokens: int = 0,
                k_max: int | None = None, tree=None, progress: bool = False, sampling=None) -> Policy | TreePolicy:
    """What k = "auto" uses by default: block sizes 1..k_max (default: every head) chosen by ``default_policy``, or,
    with a dynamic ``tree``, its node budgets chosen by ``default_tree_policy``; ``sampling``: the costs are those of
    speculative sampling with it (a policy measured for greedy decoding misjudges them)."""
    if tree is None:
        return default_policy(model, prefixes, sources, k_max or model.num_heads, max_new_tokens, progress, sampling)
    return default_tree_policy(model, prefixes, sources, tree, max_new_tokens, progress, sampling)
