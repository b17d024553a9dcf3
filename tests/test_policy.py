"""The block-size policy (k="auto"): exact whatever it chooses, greedy where blocks do not pay, long blocks where they
do, and quick to follow a prompt that turns predictable. Costs are given as tables here: no timing in tests."""

import json

import pytest

from blockwise import blockwise, greedy
from blockwise.decoding.policy import AcceptanceEstimate, Costs, Policy, TreePolicy, model_key, prior_from_expected
from conftest import EOS, random_model
from scripted import ScriptedModel


def linear_costs(step: float, k_max: int = 6) -> Costs:
    """c(k) = 1 + step (k - 1) ms at every batch size."""
    return Costs({b: {k: 1 + step * (k - 1) for k in range(1, k_max + 1)} for b in (1, 2, 4, 8)})


def test_prior_from_held_out_expected_block_sizes():
    a = prior_from_expected([1.0, 1.5, 1.8, 1.98])  # ΔE = 1, .5, .3, .18 -> a2 = .5, a3 = .6, a4 = .6
    assert a == pytest.approx([0.5, 0.6, 0.6])
    est = AcceptanceEstimate(a)
    assert est.expected() == pytest.approx([1.0, 1.5, 1.8, 1.98])


def test_estimates_count_what_was_reached_and_accepted():
    est = AcceptanceEstimate([0.5, 0.5, 0.5], weight=1e-9, half_life=1e9)
    est.observe([1, 2, 4, 3], fed=4)  # proposals 2..4; k̂ >= i accepts proposal i
    assert est.reached == pytest.approx([4, 3, 2])  # depth 2 reached by every row, depth 3 where k̂ >= 2, 4 where k̂ >= 3
    assert est.accepted == pytest.approx([3, 2, 1])
    assert est.a == pytest.approx([3 / 4, 2 / 3, 1 / 2])
    est.observe([1], fed=1)  # a greedy step: nothing to learn
    assert est.reached == pytest.approx([4, 3, 2])


def observed(policy: Policy, k_hat: list[int], fed: int, times: int = 3) -> Policy:
    for _ in range(times):
        policy.observe(k_hat, fed)
    return policy


def test_greedy_when_blocks_do_not_pay_and_long_blocks_when_they_do():
    all_right = [6, 6, 6, 6]
    assert observed(Policy(linear_costs(1.0), [0.9] * 5, 6), all_right, 6).best(1) == 1  # k tokens cost k steps
    assert observed(Policy(linear_costs(0.05), [0.9] * 5, 6), all_right, 6).best(1) == 6  # nearly free, all right
    assert observed(Policy(linear_costs(0.5), [0.1] * 5, 6), [1, 1, 1, 1], 6).best(1) == 1  # nothing accepted
    mid = observed(Policy(linear_costs(0.3), [0.8, 0.5, 0.2, 0.1, 0.1], 6), [1, 2, 3, 3], 6).best(4)
    assert 2 <= mid <= 4


def test_blocks_grow_a_depth_at_a_time():
    """Depths never observed are tried one at a time: the first block is at most 2 tokens, then one more per
    iteration while everything is accepted."""
    policy = Policy(linear_costs(0.05), [0.9] * 5, 6)
    sizes = []
    for _ in range(6):
        sizes.append(policy.choose(1))
        policy.observe([sizes[-1]], sizes[-1])  # everything fed is accepted
    assert sizes == [2, 3, 4, 5, 6, 6]


def test_a_block_that_costs_clearly_more_than_a_longer_one_is_never_fed():
    """Measured costs need not grow with k (int4 on an AVX-512 CPU: 2 tokens 32 ms, 3 tokens 28.5, 11% less): k = 2 is
    then skipped, so blocks still grow (the old one-depth-at-a-time rule stuck at greedy, 1.06 tokens per call, where k = 3
    accepted 1.57), and the probe after a run of greedy steps feeds 3."""
    costs = Costs({1: {1: 21.3, 2: 31.9, 3: 28.5, 4: 31.8, 5: 39.3, 6: 43.9}})
    policy = Policy(costs, [0.5, 0.4, 0.3, 0.3, 0.3], 6)
    assert policy.sizes(1) == [1, 3, 4, 5, 6]
    assert policy.best(1) == 3  # 1.7 / 28.5 beats 1.05 / 21.3; k = 2 (1.5 / 31.9) would not have
    assert policy.probe_size(1) == 3
    nothing = Policy(costs, [0.0] * 5, 6)  # nothing accepted: greedy, with probes of 3 tokens
    chosen = []
    for _ in range(200):
        chosen.append(nothing.choose(1))
        nothing.observe([1] if chosen[-1] > 1 else (), chosen[-1])
    assert set(chosen) == {1, 3} and chosen.count(3) <= 200 // 32
    grows = Policy(linear_costs(0.05), [0.9] * 5, 6)  # costs that grow with k: every size is worth feeding
    assert grows.sizes(1) == [1, 2, 3, 4, 5, 6] and grows.probe_size(1) == 2
    # noisy ties (translation, batch 1): 2 is skipped, 3..6 within 5% of each other are all kept, so blocks still grow
    # a size at a time instead of leaping to whichever deep block happened to measure cheapest
    noisy = Policy(Costs({1: {1: 6.7, 2: 12.3, 3: 8.8, 4: 8.7, 5: 9.0, 6: 8.6}}), [0.5] * 5, 6)
    assert noisy.sizes(1) == [1, 3, 4, 5, 6] and noisy.best(1) in (1, 3)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("step", [0.05, 0.5, 1.5])
def test_auto_is_exactly_greedy(batch, step):
    model = ScriptedModel(k=5, correct=lambda length: length % 5, eos_id=EOS, eos_at=70)
    prefixes = [[3, 4], [5], [6, 7, 8]][:batch]
    ref = greedy(model, prefixes, 60, eos_id=EOS)
    out = blockwise(model, prefixes, 60, eos_id=EOS, policy=Policy(linear_costs(step, 5), [0.5] * 4, 5))
    assert out.tokens == ref.tokens
    assert sum(out.stats.k_chosen) == out.stats.iterations and out.stats.calls == out.stats.iterations + 1


def test_auto_follows_a_prompt_that_turns_predictable():
    """No proposal is right for the first 60 positions, every proposal after: greedy first, then k_max within a few
    iterations of the switch (the probe notices it), and exactly greedy's output throughout."""
    switch, k_max = 60, 5
    model = ScriptedModel(k=k_max, correct=lambda length: 0 if length < switch else k_max)
    policy = Policy(linear_costs(0.2, k_max), [0.3] * (k_max - 1), k_max, probe_every=16)
    assert policy.probe_interval(1) == 20  # a probe wastes 0.2 greedy steps: one per 20 keeps it to 1%
    choose, produced, log = policy.choose, [0], []  # log: (tokens produced so far, k chosen)
    policy.choose = lambda batch: log.append((produced[0], choose(batch))) or log[-1][1]

    def count(row, tokens):
        produced[0] += len(tokens)

    out = blockwise(model, [[3]], 200, policy=policy, stream=count)
    assert out.tokens == greedy(model, [[3]], 200).tokens
    before = [k for at, k in log if at < switch - 5]
    after = [k for at, k in log if at >= switch]
    assert before.count(1) >= 0.8 * len(before), before  # greedy while nothing is accepted (probes aside)
    first_long = next(i for i, k in enumerate(after) if k == k_max)
    assert first_long <= 20, after[:30]  # within the probe interval of the switch
    assert after[first_long:].count(k_max) >= 0.9 * len(after[first_long:]), after


def test_probes_cost_at_most_their_budget():
    """A probe at k = 2 that accepts nothing wastes c(2) - c(1): probes come every ``probe_every`` greedy steps where
    that is cheap, and rarer where it is dear, so that they never cost more than ``probe_budget`` of greedy's time."""
    for step, interval in ((0.05, 32), (0.5, 50), (1.0, 100)):
        policy = Policy(linear_costs(step, 4), [0.0] * 3, 4)  # nothing is ever accepted: greedy but for the probes
        chosen = []
        for _ in range(1000):
            chosen.append(policy.choose(1))
            policy.observe([1] if chosen[-1] > 1 else (), chosen[-1])
        assert policy.probe_interval(1) == interval
        probes = [i for i, k in enumerate(chosen) if k > 1]
        assert all(chosen[i] == 2 for i in probes) and len(probes) == 1000 // (interval + 1), (step, probes)
        assert step * len(probes) <= 0.01 * (1000 - len(probes))  # the time probes waste, in greedy steps


def test_a_failed_block_is_not_retried_before_the_next_probe():
    """Heads whose prior promises more than they deliver (the drafter's held-out agreement on prompts unlike its
    training, SmolLM2 int8 at batch 8): once blocks are seen to fail, greedy steps hold the estimates where they are,
    so blocks come back only with the probes — had they drifted back to the prior, every few greedy steps would feed
    a block (8 in 59 steps there, 0.95x greedy)."""
    policy = Policy(linear_costs(0.6, 4), [0.9, 0.9, 0.9], 4)  # the prior: E(2) = 1.9 for 1.6 greedy steps
    interval = policy.probe_interval(8)
    assert policy.best(8) == 2 and 60 <= interval <= 61  # a probe wastes 0.6 greedy steps: one in ~60 keeps it to 1%
    chosen = []
    for _ in range(300):
        chosen.append(policy.choose(8))
        policy.observe([1] * 8 if chosen[-1] > 1 else (), chosen[-1])  # nothing is ever accepted
    blocks = [i for i, k in enumerate(chosen) if k > 1]
    assert blocks[0] == 0 and len(blocks) <= 1 + 300 // interval, blocks


def test_costs_are_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("BLOCKWISE_CACHE", str(tmp_path))
    calls = []

    def measure(batch):
        calls.append(batch)
        return {1: 1.0, 2: 1.2 * batch}

    costs = Costs(Costs.cached("key"), "key", measure)
    assert costs.at(3) == {1: 1.0, 2: 4.8}  # batch 3 -> the bucket of 4
    assert costs.at(4) == costs.at(3) and calls == [4]
    again = Costs(Costs.cached("key"), "key", lambda b: pytest.fail("measured twice"))
    assert again.at(4) == {1: 1.0, 2: 4.8}
    assert json.loads((tmp_path / "costs.json").read_text())["key"] == {"4": {"1": 1.0, "2": 4.8}}


def test_tree_policy_drafts_for_every_budget_now_and_then():
    """Most tree steps draft only as deep as their budget (DynamicTree.build); the first and every ``full_every``-th
    draft for the largest budget, so that the predictions of the large budgets stay fresh. A probe drafts shallow: a
    full draft for a 2-node call cost several greedy steps."""
    policy = TreePolicy(Costs({1: {1: 1.0, 2: 1.0, 4: 1.0, 8: 1.0}}, "key", None), [2, 4, 8], full_every=3)
    assert policy.draft_budget(1) == 1  # a greedy step drafts nothing
    assert policy.draft_budget(2) == 8  # nothing predicted yet
    policy.observe([[1.0, 1.9, 2.5, 2.8, 3.0, 3.1, 3.2, 3.3]], [2], 2)
    assert [policy.draft_budget(n) for n in (2, 4, 2, 2, 4, 1, 2)] == [2, 4, 8, 2, 4, 1, 8]
    policy.probing = True
    assert [policy.draft_budget(2) for _ in range(5)] == [2] * 5  # probes: their own budget, never a full draft
    policy.probing = False
    assert [policy.draft_budget(n) for n in (2, 4, 2)] == [2, 4, 8]  # every third tree step, probes not counted
    # a shallow draft (3 candidates) updates the prediction of budgets 1 and 2 only
    before = list(policy.curve)
    policy.observe([[1.0, 1.2, 1.3]], [1], 2)
    assert policy.curve[2:] == before[2:] and policy.curve[1] < before[1]
    # so does a draft for budget 2 that holds more candidates (one depth, 4 guesses: 5): the best 4 of a deeper draft
    # are not those, so they say nothing about budget 4
    assert policy.draft_budget(2) == 2
    before = list(policy.curve)
    policy.observe([[1.0, 1.95, 2.6, 2.9, 3.0]], [2], 2)
    assert policy.curve[2:] == before[2:] and policy.curve[1] > before[1]


def test_tree_policy_full_drafts_only_for_budgets_that_could_matter():
    """A full draft (every ``full_every``-th tree step) is for the next budget up from the largest that could beat
    greedy at this batch size with an optimistic prediction: at a batch where large trees cost many greedy steps it
    stops short of them (drafting them only costs), at a batch where they are cheap it covers every budget, and when
    predictions rise the drafts widen a budget at a time."""
    costs = Costs({1: {1: 1.0, 2: 1.1, 4: 1.3, 8: 1.8, 16: 2.4}, 8: {1: 1.0, 2: 1.4, 4: 2.5, 8: 4.1, 16: 6.8}},
                  "key", None)
    policy = TreePolicy(costs, [2, 4, 8, 16], full_every=1, optimism=1.5)
    assert policy.draft_budget(2) == 16  # nothing predicted yet: every budget
    policy.observe([[1.0, 1.6, 2.0, 2.3, 2.45, 2.55, 2.6, 2.65] + [2.7] * 8], [2], 16)  # E(2..16) 1.43 .. 2.21
    policy.choose(1)
    assert policy.draft_budget(2) == 16  # batch 1: even 16 nodes could pay (1 + 1.5 * 1.21 tokens in 2.4 steps)
    policy.choose(8)
    assert policy.draft_budget(2) == 4  # batch 8: only 2 nodes could pay (4: 1 + 1.5 * 0.93 tokens in 2.5 steps)
    assert policy.draft_budget(8) == 8  # never less than the budget fed
    policy.optimism = 2.0  # as if the predictions had risen: 4 could pay at batch 8 now, so 8 is drafted for too
    assert policy.draft_budget(2) == 8
    policy.choose(1)
    assert policy.widest(1) == 16


def tree_policy_after(steps, budgets=(2, 4, 8), prior=()):
    """A TreePolicy (a tree of 2 / 4 / 8 nodes costs 1.1 / 1.3 / 1.8 greedy steps) fed ``steps``: (the budget fed,
    the predicted curve of one row, its k̂), a budget of 1 for a greedy step."""
    policy = TreePolicy(Costs({1: {1: 1.0, 2: 1.1, 4: 1.3, 8: 1.8}}, "key", None), list(budgets), prior=prior)
    for n, row, k_hat in steps:
        if n == 1:
            policy.observe(None, [1], 1)
        else:
            policy.draft_budget(n)
            policy.observe([row], [k_hat], n)
    return policy


def test_tree_policy_estimates_fade_back_after_a_hard_start():
    """A hard start (the heads promise, nothing is accepted) lowers α; greedy steps then let the short run fade to the
    longer span's α, which still counts its prior: trees come back by themselves, not only with the probes (SmolLM2
    with the drafter, one prompt: ten poor steps, then 80 of the next 82 greedy). A long run of failures moves the
    longer span too, and then greedy steps do not bring trees back."""
    promise = [1.0, 1.8, 2.4, 2.8, 3.0, 3.1, 3.2, 3.3]
    start = [(4, promise, 1)] * 6
    policy = tree_policy_after(start)
    low = policy.alpha
    assert low < 0.5
    policy = tree_policy_after(start + [(1, None, 1)] * 24)
    assert policy.alpha > 3 * low and policy.best(1) > 1
    failing = tree_policy_after([(4, promise, 1)] * 200 + [(1, None, 1)] * 24)
    assert failing.alpha < 0.1 and failing.best(1) == 1


def test_tree_policy_takes_a_rare_draft_at_its_word():
    """A budget drafted for now and then (every ``full_every``-th step, or after a run of greedy steps) takes most of
    the new draft's prediction, not the share of a step: an early pessimistic draft no longer holds it down for
    dozens of steps."""
    gloomy, bright = [1.0, 1.1, 1.15, 1.2, 1.22, 1.24, 1.26, 1.28], [1.0, 1.8, 2.4, 2.8, 3.0, 3.1, 3.2, 3.3]
    policy = tree_policy_after([(8, gloomy, 1)] + [(1, None, 1)] * 20 + [(8, bright, 3)])
    assert policy.curve[2] > 0.9 * (bright[3] - 1)  # budget 4: P(4) - 1
    step_by_step = tree_policy_after([(8, gloomy, 1), (8, bright, 3)])  # drafted for at consecutive steps
    assert step_by_step.curve[2] < 0.5 * (bright[3] - 1)

def test_a_gloomy_first_draft_fades_to_the_heads_prior():
    """Without drafts (greedy steps) the predictions fade to each budget's longer-span mean, which counts the heads'
    held-out E(k) as a few drafts: one gloomy first draft (SmolLM2 with the drafter, one prompt: 29 greedy steps
    until the first probe) no longer keeps the trees off until a probe; without a prior it still does."""
    gloomy = [1.0, 1.1, 1.15, 1.2, 1.22, 1.24, 1.26, 1.28]
    held_out = [1.0, 1.77, 2.37, 2.85, 3.26, 3.6]  # E(1..6) of a chain, as the shipped drafter's file stores them
    steps = [(8, gloomy, 1)] + [(1, None, 1)] * 12
    assert tree_policy_after(steps[:1], prior=held_out).best(1) == 1  # right after it: greedy
    assert tree_policy_after(steps, prior=held_out).best(1) > 1  # a dozen greedy steps later: a tree again
    assert tree_policy_after(steps).best(1) == 1


def test_model_key_names_what_the_cost_depends_on():
    model = random_model("tiny", k=4, seed=0)
    key = model_key(model, 10, 4)
    assert "dtype=float64" in key and "context=64" in key and "k_max=4" in key
    assert "host=" in key and "model=" in key and "threads=1" in key  # another machine measures its own costs
    assert model_key(model.float(), 10, 4) != key
    assert model_key(model, 70, 4) != key


def test_auto_on_a_real_model_measures_its_costs_and_stays_greedy(tmp_path, monkeypatch, trained_decoder):
    monkeypatch.setenv("BLOCKWISE_CACHE", str(tmp_path))
    prefixes = [[2, 3], [4], [5, 6, 7]]
    ref = greedy(trained_decoder, prefixes, 30, eos_id=EOS)
    out = blockwise(trained_decoder, prefixes, 30, k="auto", eos_id=EOS)
    assert out.tokens == ref.tokens
    assert sum(out.stats.k_chosen) == out.stats.iterations
    table = json.loads((tmp_path / "costs.json").read_text())
    assert len(table) == 1 and all(set(row) == {"1", "2", "3", "4"} for row in next(iter(table.values())).values())
    with pytest.raises(ValueError, match="'auto'"):
        blockwise(trained_decoder, prefixes, 30, k="fast")


def test_sampling_measures_its_own_costs(tmp_path, monkeypatch, trained_decoder):
    """Speculative sampling with k = "auto" times sampling's iterations (p̃ and q̃ at every fed position cost more than
    argmaxes), under a key of their own: a table measured for greedy decoding is not used for it."""
    import sys

    from blockwise import Sampling
    from blockwise.decoding import policy as policy_module

    decoders = sys.modules["blockwise.decoding.blockwise"]  # the module (its name is also the function's)
    monkeypatch.setenv("BLOCKWISE_CACHE", str(tmp_path))
    timed = []  # speculative-sampling decodes run, the measurements' included
    real = decoders.sample_blocks
    monkeypatch.setattr(decoders, "sample_blocks", lambda *a, **kw: timed.append(1) or real(*a, **kw))
    prefixes = [[2, 3], [4]]
    blockwise(trained_decoder, prefixes, 20, k="auto", eos_id=EOS)
    assert timed == []
    drawn = Sampling(0.8, seed=(3, 4))  # one seed per row: the measurement decodes other rows with seed 0
    out = blockwise(trained_decoder, prefixes, 20, k="auto", eos_id=EOS, sampling=drawn)
    fixed = blockwise(trained_decoder, prefixes, 20, k=1, eos_id=EOS, sampling=drawn)
    assert len(timed) > 2  # the measurement of k = 1..4 sampled, then the two decodes above
    keys = sorted(json.loads((tmp_path / "costs.json").read_text()))
    assert [k.rsplit("|", 1)[1] for k in keys] == ["greedy", "sample"], keys
    assert policy_module.sampling_key(Sampling(1.0, top_p=0.9)) == "sample+top_p"
    assert len(out.tokens) == len(fixed.tokens) == 2


def test_step_costs_are_the_least_of_two_sweeps_in_opposite_orders(monkeypatch):
    """A burst of load while one size is timed must not stick to it: every size is timed in two sweeps, the second in
    reverse order, and keeps the lower of its two figures."""
    from blockwise.decoding import policy as pol

    clock, visits = [0.0], []
    slow = {(0, 3): 5.0, (1, 1): 5.0}  # (sweep, size) -> a step's ms while another process ran

    def decode(prefixes, sources, fixed):  # steps of k ms (k + the burst), as a real decode asks its policy
        sweep = sum(1 for v in visits if v == fixed.k)
        visits.append(fixed.k)
        while True:
            fixed.choose(len(prefixes))
            clock[0] += (fixed.k + slow.get((sweep, fixed.k), 0.0)) / 1e3

    monkeypatch.setattr(pol.time, "perf_counter", lambda: clock[0])
    ms = pol._time_steps(decode, [1, 2, 3], [[1, 2]], None, batch=1, ahead=0, repeats=5, progress=None)
    assert visits == [1, 2, 3, 3, 2, 1]
    assert ms == pytest.approx({1: 1.0, 2: 2.0, 3: 3.0})


def test_expected_block_sizes_from_an_exact_decodes_histogram():
    """A row that accepted k̂ at block size K accepts min(k̂, k) at k: E(k) from the histogram of one decode at K."""
    from blockwise.decoding.policy import expected_from_block_sizes

    # k̂ = 1 twice, 2 once, 3 once
    assert expected_from_block_sizes([0, 2, 1, 1], 3) == pytest.approx([1.0, 1.5, 1.75])
    with pytest.raises(ValueError, match="no blocks"):
        expected_from_block_sizes([0, 0], 3)


def test_a_checkpoint_carries_its_held_out_prior_to_the_policy(tmp_path, monkeypatch, trained_encdec):
    """A translation checkpoint stores held-out E(k) (recipes/mt/06_prior.py); loaded, it is k = auto's prior. With it
    a model whose second proposal is right a third of the time stays greedy where a 2-token call costs 1.42 steps;
    with the cautious default (a half) it would feed blocks."""
    from blockwise.decoding.policy import default_policy
    from blockwise.model import BlockwiseModel
    from blockwise.model.blockwise_model import record_expected

    monkeypatch.setenv("BLOCKWISE_CACHE", str(tmp_path))
    path = tmp_path / "model.safetensors"
    trained_encdec.save(path)
    assert BlockwiseModel.load(path).heads.expected_accepted is None  # nothing measured: the default prior
    expected = [1.0, 1.348, 1.437, 1.453]
    record_expected(path, expected)
    model = BlockwiseModel.load(path)
    assert model.heads.expected_accepted == pytest.approx(expected)
    assert torch_equal_state(model, trained_encdec)  # the tensors are untouched
    model.save(tmp_path / "again.safetensors")  # and a saved model keeps it
    assert BlockwiseModel.load(tmp_path / "again.safetensors").heads.expected_accepted == pytest.approx(expected)
    with pytest.raises(ValueError, match="4 heads"):
        record_expected(path, expected[:3])
    policy = default_policy(model, [[1]], [[5, 6, 3]], 4)  # costs are measured when first needed: not here
    assert policy.estimate.prior == pytest.approx(prior_from_expected(expected))
    costs = Costs({8: {1: 3.40, 2: 4.82, 3: 5.41, 4: 5.76}})  # the shipped model's, batch 8, measured here
    assert Policy(costs, policy.estimate.prior, 4).best(8) == 1
    assert Policy(costs, [], 4).best(8) == 2  # the default prior: blocks tried


def torch_equal_state(a, b) -> bool:
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[n].half(), sb[n].half()) for n in sa)


class FakeClock:
    """Seconds that move only when told: a decode's iterations take what the test says."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_timed(policy: Policy, clock: FakeClock, true_ms: dict[int, float], steps: int,
              accepted: float = 0.35) -> list[int]:
    """``steps`` iterations of one row: each takes ``true_ms`` of its k and accepts proposal 2 with ``accepted``
    frequency (a fixed pattern), nothing deeper."""
    policy.start()
    chosen = []
    for step in range(steps):
        k = policy.choose(1)
        policy.fed(k)
        clock.now += true_ms[k] / 1e3
        k_hat = 2 if k > 1 and (step * accepted) % 1 < accepted else 1
        policy.observe([k_hat] if k > 1 else (), k)
        chosen.append(k)
    return chosen


def test_costs_measured_in_a_burst_of_load_are_corrected_while_decoding():
    """A cost table whose greedy step was measured slow (translation, batch 1: k = 1 / 2 / 3 cached at 1.63 / 1.64 /
    1.76 ms where they take 1.2 / 2.0 / 2.3): by the table, blocks pay and k = auto fed them at every step (0.84x
    greedy). With a clock, the iterations' own times replace the table within a few steps, and the policy settles on
    greedy; without one, it keeps feeding blocks."""
    table = {1: {1: 1.63, 2: 1.64, 3: 1.76}}
    true_ms = {1: 1.2, 2: 2.0, 3: 2.3}
    prior = [0.35, 0.25]  # E(2) = 1.35, E(3) = 1.44: blocks pay only if a 2-token call costs < 1.35 / 1.05 steps
    blind = run_timed(Policy(Costs(table), prior, 3), FakeClock(), true_ms, 200)
    assert blind.count(1) < 20, blind[:40]
    clock = FakeClock()
    costs = Costs({b: dict(row) for b, row in table.items()})
    seeing = run_timed(Policy(costs, prior, 3, clock=clock), clock, true_ms, 200)
    assert seeing[40:].count(1) >= 0.95 * 160, seeing
    assert costs.at(1) == pytest.approx(true_ms, rel=0.01)


def test_only_iterations_that_fed_what_was_chosen_are_timed():
    """An iteration cut short at the end of a row, or one with lookup drafts grafted on, is not the option chosen;
    the time across two decodes (a prefill in between) is nobody's iteration."""
    clock = FakeClock()
    costs = Costs({1: {1: 1.0, 2: 2.0}})
    policy = Policy(costs, [0.0], 2, clock=clock)
    policy.start()
    for _ in range(10):  # one decode: greedy steps that fed 3 tokens (lookup drafts beside the root)
        assert policy.choose(1) == 1
        policy.fed(3)
        clock.now += 0.01
    for _ in range(10):  # ten decodes of one greedy step each, a 50 ms prefill before each
        policy.start()
        clock.now += 0.05
        assert policy.choose(1) == 1
        policy.fed(1)
    assert costs.at(1) == {1: 1.0, 2: 2.0} and not costs.seen
    for _ in range(5):  # and timed where the step fed what was chosen
        policy.choose(1)
        policy.fed(1)
        clock.now += 0.0015
    assert costs.at(1)[1] == pytest.approx(1.5)


def test_a_cached_cost_that_is_far_off_is_healed_on_disk(tmp_path, monkeypatch):
    """After ``LIVE_KEEP`` iterations of an option whose lower quartile is more than ``HEAL`` away from the cached
    cost, the disk cache takes the observed cost (once), so that the next run starts from it."""
    monkeypatch.setenv("BLOCKWISE_CACHE", str(tmp_path))
    Costs({1: {1: 1.63, 2: 1.64}}, "key")._save()
    clock = FakeClock()
    costs = Costs(Costs.cached("key"), "key")
    policy = Policy(costs, [0.0], 2, clock=clock)
    policy.start()
    for i in range(Costs.LIVE_KEEP + 1):  # LIVE_KEEP whole iterations: the last choice closes the last one
        assert policy.choose(1) == 1  # nothing is ever accepted: blocks do not pay
        policy.fed(1)
        clock.now += (1.2 if i % 5 else 3.0) / 1e3  # every fifth iteration slowed by the host: not the quartile
    cached = Costs(Costs.cached("key")).table
    assert cached[1][1] == pytest.approx(1.2) and cached[1][2] == pytest.approx(1.64)
    slightly = Costs({1: {1: 1.1, 2: 2.0}}, "other")  # within HEAL of what is observed: the cache is left alone
    greedy_steps(slightly, clock, 1.2)
    assert slightly.at(1)[1] == pytest.approx(1.2) and Costs.cached("other") == {}


def greedy_steps(costs: Costs, clock: FakeClock, ms: float) -> None:
    """``LIVE_KEEP`` timed greedy steps of ``ms`` each (nothing accepted) under a fresh policy over ``costs``."""
    policy = Policy(costs, [0.0], 2, clock=clock)
    policy.start()
    for _ in range(Costs.LIVE_KEEP + 1):  # the last choice closes the last step
        policy.choose(1)
        policy.fed(1)
        clock.now += ms / 1e3


def test_healing_a_cache_that_cannot_be_written_never_stops_a_decode(tmp_path, monkeypatch):
    """The cache is written back mid-decode: where that fails (a read-only cache folder), decoding goes on with the
    corrected costs in memory."""
    from blockwise import diskcache

    def refuse(*args, **kwargs):
        raise PermissionError("read-only")

    monkeypatch.setattr(diskcache, "write", refuse)
    costs = Costs({1: {1: 3.0, 2: 4.0}}, "key")
    greedy_steps(costs, FakeClock(), 1.0)
    assert costs.table[1][1] == pytest.approx(1.0) and costs.at(1)[1] == pytest.approx(1.0)
