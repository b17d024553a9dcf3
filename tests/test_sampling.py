"""Sampling: plain and speculative (blocks, trees) must draw whole sequences from exactly p̃'s distribution.

Each test decodes thousands of rows of one prompt as one batch (every row its own seeded stream) on the stochastic
model (tests/stochastic.py), whose exact sequence probabilities are enumerated, and runs a chi-square goodness-of-fit
test on whole sequences and on each position's marginal. The same tests run with deliberately broken rules (accept
when p >= q, draw the replacement from p or from |p - q|) must reject: the tests have the power to tell.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from stochastic import StochasticModel

from blockwise.decoding import DynamicTree, Sampling, StaticTree, blockwise, sample
from blockwise.decoding import sampling as sampling_module

PROMPT = [1, 2]
N = 24_000  # rows per test: enough to see any token's probability moved by 0.02 (test_power)
LENGTH = 4


def exact(model: StochasticModel, sampling: Sampling, prompt=PROMPT, length=LENGTH, eos=None) -> dict[tuple, float]:
    """Every continuation's exact probability under p̃ (stopping at end-of-sequence)."""
    out, stack = {}, [((), 1.0)]
    while stack:
        seq, prob = stack.pop()
        if len(seq) == length or (seq and seq[-1] == eos):
            out[seq] = out.get(seq, 0.0) + prob
            continue
        p = sampling.probs(model.logits_after(list(prompt) + list(seq)))
        for t in range(model.vocab_size):
            if p[t] > 0:
                stack.append((seq + (t,), prob * float(p[t])))
    return out


def chi_square_p(counts: dict, expected: dict[tuple, float], n: int) -> float:
    """p-value of a chi-square goodness-of-fit test; cells expected below 5 are pooled (an impossible outcome fails)."""
    if any(c > 0 and expected.get(s, 0.0) == 0.0 for s, c in counts.items()):
        return 0.0
    obs, exp, pool_o, pool_e = [], [], 0, 0.0
    for s, prob in expected.items():
        if prob * n >= 5:
            obs.append(counts.get(s, 0))
            exp.append(prob * n)
        else:
            pool_o, pool_e = pool_o + counts.get(s, 0), pool_e + prob * n
    if pool_e > 0:
        obs.append(pool_o)
        exp.append(pool_e)
    o, e = torch.tensor(obs, dtype=torch.float64), torch.tensor(exp, dtype=torch.float64)
    stat = ((o - e) ** 2 / e).sum()
    return float(torch.special.gammaincc(torch.tensor((len(obs) - 1) / 2.0, dtype=torch.float64), stat / 2))


def counts(sequences) -> dict[tuple, int]:
    out: dict[tuple, int] = {}
    for s in sequences:
        out[tuple(s)] = out.get(tuple(s), 0) + 1
    return out


def marginals(dist: dict[tuple, float], position: int) -> dict[tuple, float]:
    """The distribution of the token at ``position`` (-1: the sequence ended before it)."""
    out: dict[tuple, float] = {}
    for s, p in dist.items():
        key = (s[position] if position < len(s) else -1,)
        out[key] = out.get(key, 0.0) + p
    return out


def fit(model, sampling, tokens, eos=None) -> float:
    """The smallest p-value over the whole-sequence test and each position's marginal test."""
    dist = exact(model, sampling, eos=eos)
    seen = counts(tokens)
    pvalues = [chi_square_p(seen, dist, len(tokens))]
    for j in range(LENGTH):
        pvalues.append(chi_square_p(counts([(s[j] if j < len(s) else -1,) for s in tokens]), marginals(dist, j),
                                    len(tokens)))
    return min(pvalues)


DECODERS = {
    "plain": lambda m, s, eos: sample(m, [PROMPT] * N, LENGTH, s, eos_id=eos),
    "block k=3": lambda m, s, eos: blockwise(m, [PROMPT] * N, LENGTH, k=3, eos_id=eos, sampling=s),
    "block k=4": lambda m, s, eos: blockwise(m, [PROMPT] * N, LENGTH, k=4, eos_id=eos, sampling=s),
    "dynamic tree": lambda m, s, eos: blockwise(m, [PROMPT] * N, LENGTH, tree=DynamicTree(6, 3, top=2),
                                                eos_id=eos, sampling=s),
    "static tree": lambda m, s, eos: blockwise(m, [PROMPT] * N, LENGTH, eos_id=eos, sampling=s,
                                               tree=StaticTree([(0,), (1,), (2,), (0, 0), (0, 1), (1, 0), (0, 0, 0)])),
}


@pytest.mark.parametrize("chained", [True, False], ids=["chained heads", "independent heads"])
@pytest.mark.parametrize("decoder", list(DECODERS))
def test_whole_sequences_follow_p(decoder, chained):
    model = StochasticModel(chained=chained, seed=1)
    s = Sampling(temperature=1.0, seed=7)
    out = DECODERS[decoder](model, s, None)
    assert fit(model, s, out.tokens) > 1e-3
    if decoder != "plain":
        assert 1.0 < out.stats.mean_accepted  # proposals are accepted (and rejected: the test means something)
        assert out.stats.mean_accepted < (3.0 if "block" in decoder else 4.0)


@pytest.mark.parametrize("decoder", ["block k=3", "dynamic tree"])
def test_end_of_sequence_inside_a_block(decoder):
    model = StochasticModel(chained=True, seed=2)
    s = Sampling(seed=3)
    out = DECODERS[decoder](model, s, 0)
    ended = [t for t in out.tokens if t and t[-1] == 0]
    assert len(ended) > N // 10 and all(0 not in t[:-1] for t in out.tokens)
    assert fit(model, s, out.tokens, eos=0) > 1e-3


@pytest.mark.parametrize("warp", [dict(temperature=0.6), dict(temperature=1.3, top_k=2), dict(top_p=0.7)],
                         ids=["temperature", "top-k", "top-p"])
def test_warped_distributions(warp):
    model = StochasticModel(chained=True, seed=3)
    s = Sampling(seed=11, **warp)
    for decoder in ("block k=3", "dynamic tree"):
        assert fit(model, s, DECODERS[decoder](model, s, None).tokens) > 1e-3, decoder


def test_power():
    """The marginal test rejects (p < 1e-3, the exact tests' threshold) when any one first token's probability is
    0.02 higher or lower than the truth, the others scaled to make up: the tests can see a 2% change."""
    model = StochasticModel(chained=True, seed=1)
    s = Sampling(seed=7)
    first = [(t[0],) for t in DECODERS["plain"](model, s, None).tokens]
    truth = marginals(exact(model, s), 0)
    assert chi_square_p(counts(first), truth, N) > 1e-3
    for token, p in truth.items():
        for shift in (0.02, -0.02):
            if not 0 < p + shift < 1:
                continue
            wrong = {t: p + shift if t == token else q * (1 - p - shift) / (1 - p) for t, q in truth.items()}
            assert chi_square_p(counts(first), wrong, N) < 1e-3, (token, p, shift)


BROKEN = {
    "accept when p >= q": ("accept_draft", lambda p, q, u: q <= p),
    "replacement drawn from p": ("residual", lambda p, q: p),
    "replacement from |p - q|": ("residual", lambda p, q: (p - q).abs()),
}


@pytest.mark.parametrize("decoder,broken", [("block k=3", b) for b in BROKEN] + [("dynamic tree", "accept when p >= q")])
def test_broken_rules_are_caught(decoder, broken, monkeypatch):
    """(Trees draw their replacement from p̃ without the rejected siblings, not from residual(): next test.)"""
    name, rule = BROKEN[broken]
    monkeypatch.setattr(sampling_module, name, rule)
    model = StochasticModel(chained=True, seed=1)
    s = Sampling(seed=7)
    assert fit(model, s, DECODERS[decoder](model, s, None).tokens) < 1e-6


def test_tree_keeping_rejected_siblings_is_caught(monkeypatch):
    """Trees: drawing the replacement from p̃ with the rejected siblings left in must fail the test."""
    monkeypatch.setattr(sampling_module, "without", lambda p, tokens, rejected: p)
    model = StochasticModel(chained=True, seed=1)
    s = Sampling(seed=7)
    assert fit(model, s, DECODERS["dynamic tree"](model, s, None).tokens) < 1e-6


@pytest.mark.parametrize("chained", [True, False], ids=["chained heads", "independent heads"])
@pytest.mark.parametrize("decoder", ["block k=3", "dynamic tree"])
def test_proposals_over_part_of_the_vocabulary(decoder, chained, monkeypatch):
    """Heads that score only some tokens (``proposal_vocab``, as SmolLM2's): q̃ is warped and drawn over those columns
    and put back in place for the residual. Still p̃'s distribution; with q̃ put back in the wrong columns, not."""
    model = StochasticModel(vocab_size=5, chained=chained, seed=1, proposal_vocab=[1, 2, 4])
    s = Sampling(seed=7)
    out = DECODERS[decoder](model, s, None)
    assert fit(model, s, out.tokens) > 1e-3
    assert out.stats.mean_accepted > 1.2
    assert {t for row in out.tokens for t in row} == set(range(5))  # the residual gives the tokens never proposed
    if decoder == "block k=3":  # teeth: the columns matter
        monkeypatch.setattr(sampling_module.Drafts, "full", lambda self, q, size: q.new_zeros(q.shape[0], size)
                            .index_copy_(1, self.vocab.flip(0), q))
        assert fit(model, s, DECODERS[decoder](model, s, None).tokens) < 1e-6


def test_seeds_reproduce_and_rows_do_not_depend_on_their_neighbours():
    model = StochasticModel(vocab_size=8, chained=True, seed=4)
    prompts = [[1, 2], [3], [2, 2, 1], [0], [3, 1], [2]]  # rows end (end-of-sequence 0) at different steps
    seeds = (5, 6, 7, 8, 9, 10)
    for decode in (lambda p, s: blockwise(model, p, 8, k=3, sampling=s, eos_id=0),
                   lambda p, s: blockwise(model, p, 10, k=4, sampling=s, eos_id=0),  # last blocks cut short
                   lambda p, s: blockwise(model, p, 8, tree=DynamicTree(5, 2, top=2), sampling=s, eos_id=0),
                   lambda p, s: blockwise(model, p, 8, tree=StaticTree([(0,), (1,), (0, 0), (1, 0)]), sampling=s,
                                          eos_id=0),
                   lambda p, s: sample(model, p, 8, s, eos_id=0)):
        batch = decode(prompts, Sampling(seed=seeds)).tokens
        assert batch == decode(prompts, Sampling(seed=seeds)).tokens  # the same run again, bit for bit
        alone = [decode([p], Sampling(seed=(s,))).tokens[0] for p, s in zip(prompts, seeds)]
        assert batch == alone
        assert len({len(t) for t in batch}) > 2  # rows finish at different steps
        assert batch != decode(prompts, Sampling(seed=(11, 12, 13, 14, 15, 16))).tokens


def test_low_temperature_is_greedy():
    from blockwise.decoding import greedy

    model = StochasticModel(chained=True, seed=5)
    prompts = [[1, 2], [3], [2, 2, 1]]
    want = greedy(model, prompts, 6).tokens
    cold = Sampling(temperature=1e-4)
    assert sample(model, prompts, 6, cold).tokens == want
    assert blockwise(model, prompts, 6, k=3, sampling=cold).tokens == want
    assert blockwise(model, prompts, 6, tree=DynamicTree(6, 3), sampling=cold).tokens == want


def test_typical_acceptance_is_lossy_and_named():
    model = StochasticModel(chained=True, seed=1)
    s = Sampling(seed=7, typical=0.3)
    out = DECODERS["block k=3"](model, s, None)
    assert fit(model, Sampling(seed=7), out.tokens) < 1e-6  # not p̃'s distribution: documented as lossy
    assert "lossy" in s.describe()
    with pytest.raises(ValueError, match="typical"):
        blockwise(model, [PROMPT], 4, tree=DynamicTree(4, 2), sampling=s)


def test_warp_definitions():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 1.0]])
    p = torch.softmax(logits.double(), -1)
    assert torch.allclose(Sampling().probs(logits), p)
    assert torch.allclose(Sampling(temperature=0.5).probs(logits), torch.softmax(logits.double() / 0.5, -1))
    top2 = Sampling(top_k=2).probs(logits)[0]  # ties with the 2nd are kept: tokens 0, 1, 4
    assert (top2 > 0).tolist() == [True, True, False, False, True]
    nucleus = Sampling(top_p=0.6).probs(logits)[0]  # token 0 holds 0.52 < 0.6: one of the next (stable order) joins
    assert (nucleus > 0).tolist() == [True, True, False, False, False] and abs(float(nucleus.sum()) - 1) < 1e-12
    assert (Sampling(top_p=0.5).probs(logits)[0] > 0).tolist() == [True, False, False, False, False]


@pytest.mark.parametrize("bad", [dict(temperature=0), dict(temperature=-1), dict(top_k=-1), dict(top_p=0),
                                 dict(top_p=1.5), dict(typical=1.0)])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        Sampling(**bad)


def test_sampling_refuses_an_approximate_rule():
    from blockwise.decoding import Acceptance

    with pytest.raises(ValueError, match="its own acceptance rule"):
        blockwise(StochasticModel(), [[1]], 3, k=2, sampling=Sampling(), accept=Acceptance("top_k", top_k=2))


def test_seed_count_must_match_rows():
    model = StochasticModel()
    with pytest.raises(ValueError, match="seeds"):
        sample(model, [[1], [2]], 3, Sampling(seed=(1, 2, 3)))


def test_exact_enumeration_sums_to_one():
    model = StochasticModel(seed=6)
    for s in (Sampling(), Sampling(top_p=0.6), Sampling(top_k=1)):
        assert abs(sum(exact(model, s).values()) - 1) < 1e-9
    assert len(exact(model, Sampling(top_k=1))) == 1
    assert len(list(itertools.islice(exact(model, Sampling()), 5))) == 5


def two_sample_p(a: dict, b: dict) -> float:
    """p-value of a chi-square test that two equally sized samples come from one distribution (cells with fewer
    than 10 in both samples together are pooled)."""
    cells = set(a) | set(b)
    big = [c for c in cells if a.get(c, 0) + b.get(c, 0) >= 10]
    x = [a.get(c, 0) for c in big] + [sum(a.get(c, 0) for c in cells if c not in big)]
    y = [b.get(c, 0) for c in big] + [sum(b.get(c, 0) for c in cells if c not in big)]
    x, y = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    used = (x + y) > 0
    stat = ((x - y)[used] ** 2 / (x + y)[used]).sum()
    return float(torch.special.gammaincc(torch.tensor((int(used.sum()) - 1) / 2.0, dtype=torch.float64), stat / 2))


def test_a_real_model_with_cache_rollback_and_trees(trained_decoder):
    """The tiny Transformer (float64, trained heads), 6 tokens: every position's token, and each pair of neighbours,
    are distributed as under plain sampling, for blocks and trees (a cache rollback or tree compaction bug moves the
    positions after the second call's block: it fails here)."""
    model, n, length = trained_decoder, 6000, 6
    s = Sampling(temperature=1.5, seed=1)
    prompt = [5, 6, 7]
    reference = sample(model, [prompt] * n, length, Sampling(temperature=1.5, seed=2)).tokens
    for decode in (lambda: blockwise(model, [prompt] * n, length, k=3, sampling=s),
                   lambda: blockwise(model, [prompt] * n, length, tree=DynamicTree(6, 3, top=2), sampling=s)):
        out = decode()
        assert out.stats.mean_accepted > 1.5
        for j in range(length):
            assert two_sample_p(counts([(t[j],) for t in out.tokens]), counts([(t[j],) for t in reference])) > 1e-3
            if j:
                assert two_sample_p(counts([t[j - 1:j + 1] for t in out.tokens]),
                                    counts([t[j - 1:j + 1] for t in reference])) > 1e-3
