"""Every decoder checked against greedy decoding or against its definition."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockwise import Acceptance, BlockwiseModel, HeadsConfig, beam_search, blockwise, greedy, preset
from blockwise.decoding.beam import length_penalty
from blockwise.model.invariant import cpu_has_bf16
from conftest import EOS, V, chaotic, pattern_batch, random_model
from scripted import ScriptedModel

PREFIXES = [[2, 5, 9], [2], [2, 7, 3, 11, 4, 6], [2, 13]]
SOURCES = [[5, 4], [9, 3], [12, 4], [20, 3]]


def sources_for(model, n):
    return SOURCES[:n] if model.cfg.encoder_decoder else None


# -- exact blockwise == greedy, token for token ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["tiny", "tiny-encdec"])
@pytest.mark.parametrize("head_kind,p1", [("paper", "identity"), ("paper", "learned"), ("residual", "identity"),
                                         ("chain", "identity")])
@pytest.mark.parametrize("batch", [1, 4])
def test_exact_equals_greedy_random_models(kind, head_kind, p1, batch):
    model = random_model(kind, k=4, seed=11, head_kind=head_kind, p1=p1)
    prefixes, sources = PREFIXES[:batch], sources_for(model, batch)
    ref = greedy(model, prefixes, 25, eos_id=EOS, sources=sources)
    for k in (1, 2, 3, 4):
        out = blockwise(model, prefixes, 25, k=k, eos_id=EOS, sources=sources)
        assert out.tokens == ref.tokens, f"k={k}"
        assert out.stats.calls == out.stats.iterations + 1
        assert out.stats.tokens == sum(len(t) for t in ref.tokens)


@pytest.mark.parametrize("fixture", ["trained_decoder", "trained_encdec"])
@pytest.mark.parametrize("batch", [1, 4])
def test_exact_equals_greedy_trained_models(fixture, batch, request):
    model = request.getfixturevalue(fixture)
    g = torch.Generator().manual_seed(5)
    seq, src = pattern_batch(batch, 4, g, model.cfg.encoder_decoder)
    prefixes = [row[: 2 + i % 3].tolist() for i, row in enumerate(seq)]  # ragged prefixes
    sources = src.tolist() if src is not None else None
    ref = greedy(model, prefixes, 30, eos_id=EOS, sources=sources)
    for k in (2, 3, 4):
        out = blockwise(model, prefixes, 30, k=k, eos_id=EOS, sources=sources)
        assert out.tokens == ref.tokens, f"k={k}"
        assert out.stats.calls == out.stats.iterations + 1
    # the heads learned the language: blocks longer than one token are really accepted (so the test has teeth)
    assert out.stats.mean_accepted > 2.0, out.stats.as_dict()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(k=st.integers(1, 4), batch=st.integers(1, 5), max_new=st.integers(1, 20), seed=st.integers(0, 3),
       prefix_lengths=st.lists(st.integers(1, 6), min_size=5, max_size=5), encdec=st.booleans())
def test_exact_equals_greedy_property(k, batch, max_new, seed, prefix_lengths, encdec):
    model = random_model("tiny-encdec" if encdec else "tiny", k=4, seed=seed)
    g = torch.Generator().manual_seed(seed)
    prefixes = [torch.randint(2, V, (n,), generator=g).tolist() for n in prefix_lengths[:batch]]
    sources = [torch.randint(2, V, (n,), generator=g).tolist() for n in prefix_lengths[:batch]] if encdec else None
    ref = greedy(model, prefixes, max_new, eos_id=EOS, sources=sources)
    out = blockwise(model, prefixes, max_new, k=k, eos_id=EOS, sources=sources)
    assert out.tokens == ref.tokens
    assert all(1 <= len(t) <= max_new for t in out.tokens)
    assert out.stats.calls == out.stats.iterations + 1


def test_rows_are_independent_of_their_batch(trained_decoder):
    prefixes = [[2, 5], [2, 9, 10, 11], [2]]
    batched = blockwise(trained_decoder, prefixes, 20, eos_id=EOS).tokens
    alone = [blockwise(trained_decoder, [p], 20, eos_id=EOS).tokens[0] for p in prefixes]
    assert batched == alone


# -- the scripted model: every accepted length forced -------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_every_accepted_length_is_forced(k):
    for j in range(1, k + 1):
        model = ScriptedModel(k=k, correct=lambda length, j=j: j)
        m = 6 * j
        out = blockwise(model, [[3, 4]], m, k=k)
        ref = greedy(model, [[3, 4]], m)
        assert out.tokens == ref.tokens
        assert out.stats.block_sizes[j] == 6 and out.stats.blocks == 6, (j, out.stats.as_dict())
        assert out.stats.mean_accepted == j
        # the last block is a call too, unless it is one token: p1's own, taken without one (as greedy's last token)
        assert out.stats.calls == m // j + 1 - (j == 1)


def test_scripted_varying_lengths_and_ragged_rows():
    k = 4
    model = ScriptedModel(k=k, correct=lambda length: 1 + (length * 7) % k)
    prefixes = [[3], [5, 6, 7], [9, 9]]
    out = blockwise(model, prefixes, 23, k=k)
    assert out.tokens == greedy(model, prefixes, 23).tokens
    # each block's k̂ is what the script says at the position the block was proposed from (clipped at the end)
    for prefix, tokens in zip(prefixes, out.tokens):
        length, produced, expected = len(prefix), 0, []
        while produced < 23:
            j = min(1 + (length * 7) % k, 23 - produced)
            expected.append(j)
            length, produced = length + j, produced + j
        assert sum(expected) == len(tokens)
    assert sum(out.stats.block_sizes[1:]) == out.stats.blocks
    assert len(set(range(1, k + 1)) & {j for j, c in enumerate(out.stats.block_sizes) if c}) >= 3


def test_end_of_sequence_inside_a_block():
    k = 5
    for eos_at in range(3, 12):  # end-of-sequence lands at every offset of a block
        model = ScriptedModel(k=k, correct=lambda length: k, eos_id=EOS, eos_at=eos_at)
        out = blockwise(model, [[3, 4]], 40, k=k, eos_id=EOS)
        ref = greedy(model, [[3, 4]], 40, eos_id=EOS)
        assert out.tokens == ref.tokens
        assert out.tokens[0][-1] == EOS and EOS not in out.tokens[0][:-1]
        assert len(out.tokens[0]) == eos_at - 2 + 1


def test_rows_finish_at_their_own_pace():
    model = ScriptedModel(k=4, correct=lambda length: 4, eos_id=EOS, eos_at=9)
    prefixes = [[3], [3, 4, 5, 6], [3, 4, 5, 6, 7, 8, 9, 10]]
    out = blockwise(model, prefixes, 12, k=4, eos_id=EOS)
    assert out.tokens == greedy(model, prefixes, 12, eos_id=EOS).tokens
    assert [len(t) for t in out.tokens] == [9, 6, 2]


def test_max_length_is_honoured():
    model = ScriptedModel(k=4, correct=lambda length: 4)
    for m in range(1, 11):
        out = blockwise(model, [[3], [4, 5]], m, k=4)
        assert [len(t) for t in out.tokens] == [m, m]


# -- approximate acceptance ----------------------------------------------------------------------------------------
def test_top_1_equals_exact_and_eps_0_equals_exact():
    model = random_model("tiny", k=4, seed=21)
    exact = blockwise(model, PREFIXES, 25, eos_id=EOS)
    for rule in (Acceptance("top_k", top_k=1), Acceptance("distance", eps=0)):
        out = blockwise(model, PREFIXES, 25, eos_id=EOS, accept=rule)
        assert out.tokens == exact.tokens
        assert out.stats.as_dict() == exact.stats.as_dict()


def test_top_2_and_eps_1_accept_the_runner_up():
    k = 4
    model = ScriptedModel(k=k, correct=lambda length: 1)  # every proposal past p1 is the runner-up, never the argmax
    assert blockwise(model, [[3]], 20, k=k).stats.mean_accepted == 1
    for rule in (Acceptance("top_k", top_k=2), Acceptance("distance", eps=1)):
        out = blockwise(model, [[3]], 20, k=k, accept=rule)
        assert out.stats.block_sizes[k] == 5, (rule, out.stats.as_dict())
    assert blockwise(model, [[3]], 20, k=k, accept=Acceptance("top_k", top_k=3)).stats.mean_accepted == k


def test_distance_rule_definition():
    from blockwise.decoding.acceptance import distance_matches

    logits = F.one_hot(torch.tensor([[10, 20, 30, 40]]), 64).double()  # p1 argmax after each fed token
    block = torch.tensor([[0, 12, 17, 99]])
    assert distance_matches(block, logits, 2).tolist() == [[True, False, False]]
    assert distance_matches(block, logits, 3).tolist() == [[True, True, False]]


@pytest.mark.parametrize("ell", [2, 3])
def test_minimum_block_size(ell):
    k = 4
    model = ScriptedModel(k=k, correct=lambda length: 1)
    out = blockwise(model, [[3]], 24, k=k, accept=Acceptance(min_block=ell))
    assert out.stats.block_sizes[ell] == 24 // ell and out.stats.blocks == 24 // ell
    # ℓ never accepts past end-of-sequence
    model = ScriptedModel(k=k, correct=lambda length: 1, eos_id=EOS, eos_at=4)
    out = blockwise(model, [[3]], 24, k=k, eos_id=EOS, accept=Acceptance(min_block=ell))
    assert out.tokens[0][-1] == EOS and out.tokens[0].count(EOS) == 1


class _Recorder:
    """Wraps a model so that every block fed to its sessions is recorded, the prefill excepted: the proposals,
    accepted or not, that check_against_definition judges."""

    def __init__(self, model):
        self.model, self.fed = model, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def start(self, *args, **kwargs):
        return _RecordingSession(self.model.start(*args, **kwargs), self.fed)


class _RecordingSession:
    def __init__(self, session, fed):
        self.session, self.fed, self.prefilled = session, fed, False

    def __getattr__(self, name):
        return getattr(self.session, name)

    def feed(self, tokens):
        if self.prefilled:
            self.fed.append(tokens.tolist())
        self.prefilled = True
        return self.session.feed(tokens)


def _rule_matches(rule, token, logits):
    """The rule's definition, written independently of blockwise.decoding.acceptance: may ``token`` follow where p1's
    logits are ``logits`` (V,)?"""
    best = int(logits.argmax())
    if rule.rule == "top_k":
        return int((logits > logits[token]).sum()) < rule.top_k  # fewer than top_k tokens score higher
    if rule.rule == "distance":
        return abs(token - best) <= rule.eps
    return token == best


def _distance_and_rank(token, logits):
    return abs(token - int(logits.argmax())), int((logits > logits[token]).sum())


def check_against_definition(model, prefixes, max_new, rule, k, eos_id=None):
    """Decode with ``rule`` and check every block against the definition, p1 recomputed by an uncached forward:
    each fed block's first token is p1's argmax after the row so far; k̂ = 1 + the unbroken run of proposals the rule
    accepts, at least ℓ, at most the block fed, cut at the length limit and after end-of-sequence. The same check for
    every rule. Returns the output and the cases met: how many accepted proposals were not p1's argmax ("inexact"), how
    many blocks ℓ made longer ("forced"), and the (|proposal - argmax|, rank in p1) of accepted and rejected proposals.
    """
    recorder, streamed = _Recorder(model), []
    out = blockwise(recorder, prefixes, max_new, k=k, eos_id=eos_id, accept=rule,
                    stream=lambda row, tokens: streamed.append((row, tokens)))
    seen = {"inexact": 0, "forced": 0, "accepted": set(), "rejected": set()}  # (distance, rank) pairs
    emitted = [[] for _ in prefixes]
    active = list(range(len(prefixes)))

    def end_early(active):
        """Rows whose next token (p1's argmax) ends them take it before the next call, without one."""
        ending = []
        for r in active:
            with torch.no_grad():
                token = int(model.scores(model(torch.tensor([prefixes[r] + emitted[r]])))[0, -1].argmax())
            if max_new - len(emitted[r]) == 1 or token == eos_id:
                ending.append((r, [token]))
        step, streamed[: len(ending)] = streamed[: len(ending)], []
        assert step == ending
        for r, token in ending:
            emitted[r] += token
        return [r for r in active if r not in dict(ending)]

    assert len(recorder.fed) == out.stats.iterations
    for fed in recorder.fed:
        active = end_early(active)
        n = len(fed[0])
        assert n == min(k, max(max_new - len(emitted[r]) for r in active))  # never feed more than a row may accept
        assert len(fed) == len(active)
        step, streamed[: len(active)] = streamed[: len(active)], []
        assert [r for r, _ in step] == active
        for r, block, (_, accepted) in zip(active, fed, step):
            seq = torch.tensor([prefixes[r] + emitted[r] + block])
            with torch.no_grad():
                p1 = model.scores(model(seq))[0, len(prefixes[r]) + len(emitted[r]) - 1:]  # (n + 1, V)
            assert block[0] == int(p1[0].argmax())  # p1's own next token, always accepted
            run = 1
            while run < n and _rule_matches(rule, block[run], p1[run]):
                seen["accepted"].add(_distance_and_rank(block[run], p1[run]))
                seen["inexact"] += block[run] != int(p1[run].argmax())
                run += 1
            if run < n:
                seen["rejected"].add(_distance_and_rank(block[run], p1[run]))
            k_hat = min(max(run, rule.min_block), n, max_new - len(emitted[r]))
            seen["forced"] += k_hat > run
            if eos_id in block[:k_hat]:
                k_hat = block.index(eos_id) + 1
            assert accepted == block[:k_hat], (rule, r, block, accepted, run)
            emitted[r] += accepted
        active = [r for r in active if len(emitted[r]) < max_new and emitted[r][-1] != eos_id]
    active = end_early(active)
    assert not active and not streamed
    assert out.tokens == emitted
    assert all(1 <= len(t) <= max_new for t in out.tokens)
    return out, seen


def test_approximate_modes_on_a_real_model_follow_their_definition():
    """Each rule on a random model, every block checked against the rule's definition (check_against_definition),
    the same check for every rule. The check has teeth: each rule's looseness is used, and the boundary cases occur
    (seed 7 is chosen for that: a proposal at rank top_k - 1 or distance ε accepted, one at rank top_k or ε + 1
    rejected)."""
    model = random_model("tiny", k=4, seed=7)
    for rule in (Acceptance(), Acceptance("top_k", top_k=3), Acceptance(min_block=2), Acceptance("distance", eps=3),
                 Acceptance("distance", eps=3, min_block=3)):
        out, seen = check_against_definition(model, PREFIXES, 20, rule, k=4, eos_id=EOS)
        assert (seen["inexact"] > 0) == (rule.rule != "exact"), (rule, seen)  # accepted proposals not p1's argmax
        assert (seen["forced"] > 0) == (rule.min_block > 1), (rule, seen)  # blocks made longer by ℓ
        assert seen["rejected"], (rule, seen)
        if rule.min_block == 1 and rule.rule != "exact":
            edge = rule.eps if rule.rule == "distance" else rule.top_k - 1
            measure = 0 if rule.rule == "distance" else 1  # (distance, rank)
            assert edge in {c[measure] for c in seen["accepted"]}, (rule, seen)
            assert edge + 1 in {c[measure] for c in seen["rejected"]}, (rule, seen)
        assert sum(map(len, out.tokens)) > 40, out.tokens  # rows run, not all ending at once


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("max_new", [1, 7, 12])
def test_a_rule_that_accepts_everything_accepts_whole_blocks(k, max_new):
    """ε = V - 1 (the ε = 255 of pixel intensities): every proposal is accepted, so each row takes k tokens per
    iteration and the last block is what the length limit leaves."""
    model = random_model("tiny", k=4, seed=8)
    out, seen = check_against_definition(model, PREFIXES, max_new, Acceptance("distance", eps=V - 1), k=k)
    iterations = -(-max_new // k)  # ceil(max_new / k)
    last = max_new - k * (iterations - 1)  # the last block: what the length limit leaves, 1..k
    called = iterations - (last == 1)  # a last block of one token is p1's own, taken without a call
    assert out.stats.iterations == called and out.stats.calls == called + 1
    expected = {}  # k̂ -> how many (row, iteration) pairs accepted it
    for j, count in ((k, len(PREFIXES) * (iterations - 1)), (last, len(PREFIXES))):
        if count:
            expected[j] = expected.get(j, 0) + count
    assert {j: count for j, count in enumerate(out.stats.block_sizes) if count} == expected, out.stats.as_dict()
    assert out.stats.tokens == len(PREFIXES) * max_new and [len(t) for t in out.tokens] == [max_new] * len(PREFIXES)
    assert out.stats.mean_accepted == max_new / iterations  # tokens per block, the free last one included
    if max_new % k == 0:
        assert out.stats.mean_accepted == k
    if k > 1 and max_new > 1:
        assert seen["inexact"] > 0  # proposals exact acceptance would reject were accepted


# -- beam search -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["tiny", "tiny-encdec"])
def test_beam_1_equals_greedy(kind):
    model = random_model(kind, seed=9)
    sources = sources_for(model, 4)
    assert beam_search(model, PREFIXES, 20, beam_size=1, eos_id=EOS, sources=sources).tokens == \
        greedy(model, PREFIXES, 20, eos_id=EOS, sources=sources).tokens


def _sequence_logprob(model, prefix, tokens):
    seq = torch.tensor([prefix + tokens])
    with torch.no_grad():
        logp = F.log_softmax(model.base.project(model(seq[:, :-1])), -1)[0]
    return sum(float(logp[len(prefix) - 1 + i, t]) for i, t in enumerate(tokens))


def test_wide_beam_finds_the_best_length_penalised_hypothesis():
    """With a beam as wide as the search space, beam search is exhaustive: compare against brute force."""
    from blockwise import BlockwiseModel, preset
    from conftest import chaotic

    torch.manual_seed(0)
    model = chaotic(BlockwiseModel(preset("tiny", vocab_size=4)).double().eval(), 2, std=0.8)
    eos, prefix, max_new, alpha = 1, [2, 3], 3, 0.6
    best, best_score = None, -math.inf
    for n in range(1, max_new + 1):
        for tokens in itertools.product(range(4), repeat=n):
            tokens = list(tokens)
            if eos in tokens[:-1] or (n < max_new and tokens[-1] != eos):
                continue  # hypotheses end at eos, or at the length limit
            s = _sequence_logprob(model, prefix, tokens) / length_penalty(n, alpha)
            if s > best_score:
                best, best_score = tokens, s
    out = beam_search(model, [prefix], max_new, beam_size=64, eos_id=eos, alpha=alpha)
    assert out.tokens[0] == best


# -- clear errors --------------------------------------------------------------------------------------------------
def test_clear_errors_for_bad_input():
    model = random_model("tiny", k=3, seed=0)
    with pytest.raises(ValueError, match="larger than the 3 heads"):
        blockwise(model, [[2]], 5, k=4)
    with pytest.raises(ValueError, match="batch is empty"):
        blockwise(model, [], 5)
    with pytest.raises(ValueError, match="at least one token"):
        greedy(model, [[2], []], 5)
    with pytest.raises(ValueError, match="needs 129 positions, beyond the model's 128"):
        greedy(model, [[2] * 100], 29)
    with pytest.raises(ValueError, match="k-1=2 verified positions"):
        blockwise(model, [[2] * 100], 27, k=3)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        blockwise(model, [[2]], 0)
    encdec = random_model("tiny-encdec", seed=0)
    with pytest.raises(ValueError, match="needs source"):
        greedy(encdec, [[2]], 5)
    with pytest.raises(ValueError, match="unknown acceptance rule"):
        Acceptance("nearest")


@pytest.mark.skipif(not cpu_has_bf16(), reason="CPU without native bfloat16: batch invariance not claimed there")
def test_bf16_exact_equals_greedy_at_every_batch_shape():
    """In bfloat16 one-row and multi-row kernels sum in different orders; the model's decoding path avoids the
    difference (blockwise.model.invariant), so bf16 blockwise is still token for token bf16 greedy, batched or not.
    (Without it, 2 of these 6 rows differ under batched blockwise decoding.)"""
    vocab = 4000  # a wide vocabulary: near-ties in the argmax are what a last-bit difference turns into a new token
    cfg = preset("mt-small", vocab_size=vocab, d_ff=1536, n_layers=2, n_encoder_layers=2)
    model = chaotic(BlockwiseModel(cfg, HeadsConfig(num_heads=4, d_hidden=32)), seed=3, std=0.08)
    model = model.to(torch.bfloat16).eval()
    g = torch.Generator().manual_seed(0)
    sources = [torch.randint(3, vocab, (n,), generator=g).tolist() + [1] for n in (5, 2, 8, 4, 6, 3)]
    prefixes = [[2]] * len(sources)
    ref = [greedy(model, [p], 40, sources=[s]).tokens[0] for p, s in zip(prefixes, sources)]
    assert len({tuple(r) for r in ref}) > 1  # the rows differ: the batch is not copies of one decode
    assert greedy(model, prefixes, 40, sources=sources).tokens == ref
    for k in (2, 4):
        assert blockwise(model, prefixes, 40, k=k, sources=sources).tokens == ref, f"k={k}"
        assert [blockwise(model, [p], 40, k=k, sources=[s]).tokens[0] for p, s in zip(prefixes, sources)] == ref
