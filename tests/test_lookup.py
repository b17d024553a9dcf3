"""Lookup drafts (decoding/lookup.py): chains copied from a row's own text, grafted onto the heads' tree.

* ``Lookup.propose`` against hand-worked texts: the longest n-gram first, its latest earlier occurrence, the window.
* ``graft``: a chain follows the nodes it repeats, then hangs below them; rows are padded to one node count.
* Decoding with lookup is greedy token for token (random tiny models, decoder-only and encoder-decoder, ragged rows,
  end-of-sequence; chains and trees), and the copied nodes are really accepted: on a scripted model whose answer
  repeats and whose heads are always wrong, lookup accepts several tokens per call where the heads accept one.
* Teeth: a graft whose mask loses a copied node's ancestors breaks exactness (any consistent tree is exact, whatever
  its tokens or shape: what can break is the tree's own bookkeeping).
"""

import pytest
import torch

from blockwise import blockwise, greedy
from blockwise.decoding import lookup as lookup_mod
from blockwise.decoding.lookup import Lookup
from blockwise.decoding.tree import DynamicTree, StaticTree, Tree, graft
from conftest import EOS, random_model
from scripted import ScriptedModel
from test_tree import PREFIXES, SOURCES, EOS_SEED, full


# -- propose -----------------------------------------------------------------------------------------------------------
def test_propose_takes_the_longest_ngram_and_its_latest_occurrence():
    lookup = Lookup(tokens=3, ngram=3)
    # "7 8 9" occurred once; its continuation 1 2 3
    assert lookup.propose([7, 8, 9, 1, 2, 3, 5, 7, 8, 9]) == [1, 2, 3]
    # "8 9" occurs twice earlier (followed by 1, then by 4): the latest wins
    assert lookup.propose([8, 9, 1, 6, 8, 9, 4, 5, 8, 9]) == [4, 5, 8]
    # the trigram "5 8 9" occurs earlier (-> 6) though "8 9" occurred later (-> 0): the longest n-gram first
    assert lookup.propose([5, 8, 9, 6, 8, 9, 0, 5, 8, 9]) == [6, 8, 9]
    # a continuation running into the tail is cut where the text ends
    assert lookup.propose([3, 4, 3]) == [4, 3]
    assert lookup.propose([1, 2, 3]) == [] and lookup.propose([5]) == [] and lookup.propose([]) == []
    assert Lookup(tokens=3, min_ngram=2).propose([4, 1, 2, 3, 4]) == []  # only a unigram match
    assert Lookup(tokens=2, window=4).propose([9, 1, 2, 3, 4, 9]) == []  # the earlier 9 is outside the window
    with pytest.raises(ValueError, match="min_ngram"):
        Lookup(ngram=2, min_ngram=3)


# -- graft -------------------------------------------------------------------------------------------------------------
def chain_tree(rows: list[list[int]]) -> Tree:
    tokens = torch.tensor(rows)
    n = tokens.shape[1]
    return Tree.from_parents(tokens, torch.arange(-1, n - 1).expand(len(rows), n))


def test_graft_follows_repeated_nodes_then_hangs_new_ones_and_pads_rows():
    tree = chain_tree([[10, 11, 12], [20, 21, 22], [30, 31, 32]])
    grafted = graft(tree, [[11, 13, 14], [], [31, 32]])
    assert grafted.tokens.tolist() == [[10, 11, 12, 13, 14], [20, 21, 22, 20, 20], [30, 31, 32, 30, 30]]
    assert grafted.parents.tolist() == [[-1, 0, 1, 1, 3], [-1, 0, 1, 0, 0], [-1, 0, 1, 0, 0]]
    assert grafted.depth.tolist() == [[0, 1, 2, 2, 3], [0, 1, 2, 1, 1], [0, 1, 2, 1, 1]]
    assert grafted.visible[0, 4].tolist() == [True, True, False, True, True]
    assert graft(tree, [[11, 12], [21], []]) is tree  # nothing new: the tree itself


def test_graft_keeps_a_matching_node_only_below_its_own_parent():
    # node 2 holds token 7 below the root's other child: a chain 5, 7 must not reuse it
    tree = Tree.from_parents(torch.tensor([[1, 6, 7, 5]]), torch.tensor([[-1, 0, 1, 0]]))
    grafted = graft(tree, [[5, 7]])
    assert grafted.tokens.tolist() == [[1, 6, 7, 5, 7]] and grafted.parents.tolist() == [[-1, 0, 1, 0, 3]]


# -- decoding with lookup is greedy ------------------------------------------------------------------------------------
class Periodic(ScriptedModel):
    """Greedy's next token depends on the length only, ``pattern`` over and over: an answer that repeats itself. Its
    heads are always wrong (the right token sits at rank 3 under every node)."""

    def __init__(self, pattern, **kwargs):
        super().__init__(k=4, correct=lambda length: 1, rank=lambda length, i: 3, **kwargs)
        self.pattern = pattern

    def next_token(self, s, length):
        if self.eos_at is not None and length >= self.eos_at:
            return self.eos_id
        return self.pattern[length % len(self.pattern)]


def test_lookup_accepts_copied_tokens_of_a_repeating_answer():
    model = Periodic([5, 9, 14, 22, 7, 30])
    prefixes = [[3], [3, 4, 5]]
    ref = greedy(model, prefixes, 60).tokens
    plain = blockwise(model, prefixes, 60, k=3)
    assert plain.tokens == ref and plain.stats.mean_accepted == 1.0  # the heads never help
    for lookup in (Lookup(tokens=4), Lookup(tokens=4, min_ngram=2), Lookup(tokens=2, ngram=1)):
        out = blockwise(model, prefixes, 60, k=3, lookup=lookup)
        assert out.tokens == ref
        # once a period (6 tokens) is in the text every call accepts the root and the whole copied chain
        whole = lookup.tokens + 1
        assert out.stats.block_sizes[whole] >= 2 * ((60 - 2 * 6) // whole), (lookup.describe(), out.stats.block_sizes)
        assert out.stats.mean_accepted > 2
    tree = blockwise(model, prefixes, 60, tree=StaticTree(full(4, 2)), lookup=Lookup(tokens=5))
    assert tree.tokens == ref and tree.stats.mean_accepted > 3


def test_lookup_with_end_of_sequence_and_the_length_limit():
    for eos_at in range(3, 30, 4):
        model = Periodic([5, 9, 14], eos_id=EOS, eos_at=eos_at)
        for max_new in (1, 7, 40):
            ref = greedy(model, [[3], [3, 4]], max_new, eos_id=EOS).tokens
            out = blockwise(model, [[3], [3, 4]], max_new, k=2, eos_id=EOS, lookup=Lookup(tokens=6))
            assert out.tokens == ref, (eos_at, max_new)


@pytest.mark.parametrize("kind", ["tiny", "tiny-encdec"])
def test_lookup_decoding_equals_greedy_on_random_models(kind):
    for seed in (EOS_SEED[kind], 12):
        model = random_model(kind, k=4, seed=seed, head_kind="chain")
        sources = SOURCES if model.cfg.encoder_decoder else None
        ref = greedy(model, PREFIXES, 30, eos_id=EOS, sources=sources).tokens
        gains = []
        for k, tree, lookup in [(3, None, Lookup(4)), (2, None, Lookup(6, min_ngram=2)),
                                (None, StaticTree(full(2, 2)), Lookup(3, ngram=2)),
                                (None, DynamicTree(8, 3, top=3), Lookup(5))]:
            out = blockwise(model, PREFIXES, 30, k=k, tree=tree, eos_id=EOS, sources=sources, lookup=lookup)
            assert out.tokens == ref, (seed, k, tree and tree.describe(), lookup.describe())
            base = blockwise(model, PREFIXES, 30, k=k, tree=tree, eos_id=EOS, sources=sources)
            gains.append(out.stats.calls < base.stats.calls)
        assert any(gains)  # the copied chains were accepted somewhere: fewer calls than the heads alone


def test_lookup_refuses_sampling():
    from blockwise import Sampling

    model = Periodic([5, 9])
    with pytest.raises(ValueError, match="not for sampling"):
        blockwise(model, [[3]], 5, k=2, lookup=Lookup(), sampling=Sampling(0.7))


# -- teeth -------------------------------------------------------------------------------------------------------------
def lost_ancestors(tree: Tree, chains):
    """The right nodes, parents and depths, but each new node's mask row holds only itself and the root: a node is
    judged without the nodes between (the mask of a graft that forgot to extend the ancestors)."""
    good = graft(tree, chains)
    visible = good.visible.clone()
    visible[:, tree.nodes:] = False
    visible[:, tree.nodes:, 0] = True
    new = torch.arange(tree.nodes, good.nodes)
    visible[:, new, new] = True
    return Tree(good.tokens, good.parents, good.depth, visible)


def test_a_graft_that_loses_ancestors_breaks_exactness(monkeypatch):
    # 5 is followed by 9 and by 11, and both go on with 14: a wrong copy (9 for 11) is followed by a right one (14),
    # which the lost mask accepts below a rejected node
    model = Periodic([5, 9, 14, 22, 5, 11, 14, 30])
    ref = greedy(model, [[3], [3, 4]], 60).tokens
    assert blockwise(model, [[3], [3, 4]], 60, k=2, lookup=Lookup(4)).tokens == ref
    monkeypatch.setattr(lookup_mod, "graft", lost_ancestors)
    assert blockwise(model, [[3], [3, 4]], 60, k=2, lookup=Lookup(4)).tokens != ref


# -- k = "auto": chains graft only where they pay ---------------------------------------------------------------------
def costs(step: float, k_max: int = 8):
    from blockwise.decoding.policy import Costs

    return Costs({b: {k: 1 + step * (k - 1) for k in range(1, k_max + 1)} for b in (1, 2, 4)})


def test_auto_with_lookup_grafts_where_chains_pay_and_not_where_they_cost_more():
    from blockwise.decoding.policy import Policy

    model = Periodic([5, 9, 14, 22, 7, 30])  # heads always wrong, copies right once a period is in the text
    model.num_heads = 8
    prefixes = [[3], [3, 4, 5]]
    ref = greedy(model, prefixes, 60).tokens
    cheap = blockwise(model, prefixes, 60, lookup=Lookup(4), policy=Policy(costs(0.05), [0.1] * 7, 8))
    assert cheap.tokens == ref and cheap.stats.mean_accepted > 2.5  # a 5-node call costs 1.2 steps: chains pay
    assert sum(cheap.stats.k_chosen[2:]) <= 2  # the heads' blocks shrink to greedy's single token (a probe or two)
    dear = blockwise(model, prefixes, 60, lookup=Lookup(4), policy=Policy(costs(10.0), [0.1] * 7, 8))
    assert dear.tokens == ref  # a 5-node call costs 41 steps: a chain of 4 never pays
    assert dear.stats.mean_accepted < 1.2, dear.stats.block_sizes  # only the optimistic first tries


def test_copied_chains_never_pass_the_last_position():
    """Chains are cut to the tokens a row still produces: no node sits past the row's last position (prefix +
    max_new_tokens - 1), the most a model's positions are checked for."""
    model = Periodic([5, 9, 14, 22])
    deepest = []
    start = model.start

    def recording(*args, **kwargs):
        session = start(*args, **kwargs)
        feed = session.feed

        def fed(tokens, tree=None):
            if tree is not None:
                deepest.append(int((session.lengths[:, None] + tree.depth).max()))
            return feed(tokens, tree)

        session.feed = fed
        return session

    model.start = recording
    for max_new in (9, 10, 11, 12):
        ref = greedy(model, [[3]], max_new).tokens
        deepest.clear()
        assert blockwise(model, [[3]], max_new, k=2, lookup=Lookup(8)).tokens == ref
        assert max(deepest) <= 1 + max_new - 1  # the last position (0-based), never passed


def test_cost_of_a_call_past_the_measured_sizes_follows_the_last_slope():
    from blockwise.decoding.lookup import cost

    ms = {1: 10.0, 2: 11.0, 4: 12.0, 6: 16.0}
    assert cost(ms, 3) == 12.0 and cost(ms, 6) == 16.0  # the smallest measured size at or above
    assert cost(ms, 9) == 16.0 + 2.0 * 3  # past 6: the slope of 4 -> 6, 2 ms per node
    assert cost({1: 10.0, 2: 9.0}, 5) == 9.0  # a falling slope is not extended downwards


def test_budget_trims_the_heads_block_beside_a_copy_that_pays():
    from blockwise.decoding.lookup import LookupRun

    ms = {k: 1 + 0.3 * (k - 1) for k in range(1, 9)}  # a call of k nodes: 1 + 0.3 (k - 1)

    def expected(k):
        return 1 + 0.5 * (k - 1)  # the heads accept half a token more per node

    run = LookupRun(Lookup(4))
    run.find([[7, 8]], [50])
    assert run.matched == [0] and run.budget(4, ms, expected) == 4  # no copy: the policy's block
    run.find([[5, 9, 14, 5, 9]], [50])
    assert run.chains == [[14, 5, 9]] and run.matched == [2]
    assert run.budget(4, ms, expected) == 4  # the prior gain (1 token) does not pay 3 more nodes
    run.sums[2] = [3.0, 1.0]  # copies after bigrams have added 3 tokens
    assert run.budget(4, ms, expected) == 1  # a greedy step beside the copy: (1 + 3) / c(4) beats 2.5 / c(4)
    run.find([[5, 9, 14, 5, 9]], [2])
    assert run.chains == [[14]]  # cut to the row's last position
