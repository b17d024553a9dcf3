"""Tree verification (decoding/tree.py) checked against greedy decoding, against plain blockwise decoding, and piece
by piece against hand-computed expectations.

* A one-path tree (``StaticTree.chain(k)``) is plain blockwise decoding: same tokens, same calls, same block sizes.
* Scripted models whose right token sits at a pseudo-random rank 0..3 under every node (``rank(length, i)``): every
  accepted length is forced and computed here independently (``forced_blocks``), so the accepted paths provably run
  through second, third and fourth children, end-of-sequence and the length limit fall inside them, and rows finish at
  their own pace.
* Real models (tiny Transformers, decoder-only and encoder-decoder, every head kind; the trained fixtures; the native
  Llama) in float64: tree decoding is greedy token for token. Trees that hold every token of the vocabulary below the
  root accept a non-first child at almost every step, so the ancestor mask, the depth positions and the cache
  compaction are exercised on every call.
* bfloat16: a node's hidden state has the same bits whatever else is in its tree and its batch, so bf16 tree decoding
  is bf16 greedy.
* Teeth: a causal mask, positions = slots, a lost ancestor or a skipped compaction (monkeypatched) make these checks
  fail (``test_sabotage_*``).
"""

import itertools
import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockwise import Acceptance, BlockwiseModel, HeadsConfig, blockwise, greedy, preset
from blockwise.decoding.common import prefill
from blockwise.decoding.tree import DynamicTree, StaticTree, Tree, tree_decode
from blockwise.model.cache import KVCache
from blockwise.model.invariant import cpu_has_bf16
from conftest import EOS, V, chaotic, pattern_batch, random_model
from scripted import ScriptedModel, ScriptedSession

PREFIXES = [[2, 5, 9], [2], [2, 7, 3, 11, 4, 6], [2, 13]]  # ragged
SOURCES = [[5, 4], [9, 3], [12, 4], [20, 3]]
EOS_SEED = {"tiny": 10, "tiny-encdec": 7}  # random models whose rows end with end-of-sequence at different times

needs_bf16 = pytest.mark.skipif(not cpu_has_bf16(), reason="CPU without native bfloat16: batch invariance not claimed")


# -- helpers ---------------------------------------------------------------------------------------------------------
def full(width: int, depth: int) -> list[tuple[int, ...]]:
    """Every rank path of a complete ``width``-ary tree of ``depth`` levels below the root."""
    return [p for d in range(1, depth + 1) for p in itertools.product(range(width), repeat=d)]


def wide(vocab: int, under: int, width: int) -> list[tuple[int, ...]]:
    """Every token of the vocabulary below the root (depth 1 is always accepted), plus ``width`` children under the
    ``under`` most likely of them."""
    return [(r,) for r in range(vocab)] + [(r, s) for r in range(under) for s in range(width)]


SPARSE = [(0,), (1,), (2,), (3,), (0, 0), (0, 1), (1, 0), (2, 0), (0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 0, 0)]  # Medusa
SKINNY = [(0,) * d for d in range(1, 6)] + [(0,) * (d - 1) + (1,) for d in range(1, 6)]  # depth 5, a sibling per level
WIDE_T = wide(V, 4, 3)  # 37 nodes for the tiny Transformers' 24 tokens


def scrambled(seed: int, top: int = 4):
    """rank(length, i): where the right token sits among head p_i's candidates, pseudo-random in 0..top-1."""
    def rank(length: int, i: int) -> int:
        x = (length * 1_000_003 + i * 7_919 + seed * 104_729) * 2_654_435_761 % 2**32
        return (x >> 13) % top
    return rank


def forced_blocks(prefix_length: int, produced: int, paths, depth: int, rank) -> list[int]:
    """The accepted block sizes of one row of a scripted model, worked out without the decoder: below a node of
    length L the right token sits at rank ``rank(L + 1, head)``, so from a row of length L the tree accepts the
    longest prefix of (rank(L + 1, 2), rank(L + 2, 3), ...) that is one of its paths, plus the root; the last block
    is cut where the row ends (end-of-sequence or the length limit: ``produced`` tokens in all)."""
    paths = set(map(tuple, paths))
    length, left, blocks = prefix_length, produced, []
    while left:
        node = ()
        while len(node) < depth and node + (rank(length + len(node) + 1, len(node) + 2),) in paths:
            node += (rank(length + len(node) + 1, len(node) + 2),)
        blocks.append(min(len(node) + 1, left))
        length, left = length + blocks[-1], left - blocks[-1]
    return blocks


def histogram(blocks: list[list[int]]) -> list[int]:
    flat = [j for row in blocks for j in row]
    return [flat.count(j) for j in range(max(flat) + 1)]


def decode_recorded(model, prefixes, max_new, tree, **kwargs):
    """tree_decode, with every row's accepted blocks (via ``stream``) and every compaction (the accepted paths as node
    indices, and k̂) recorded."""
    recorder = Recorder(model)
    blocks = [[] for _ in prefixes]
    out = tree_decode(recorder, prefixes, max_new, tree, stream=lambda row, t: blocks[row].append(len(t)), **kwargs)
    assert [sum(b) for b in blocks] == [len(t) for t in out.tokens]
    # every block is a call, but a row's last block when it is the root alone: it ends the row (end-of-sequence or the
    # length limit) and is taken without one, as greedy takes its last token
    called = max(len(b) - (b[-1] == 1) for b in blocks)
    assert out.stats.calls == out.stats.iterations + 1 == called + 1
    assert out.stats.block_sizes == histogram(blocks)
    return out, blocks, recorder.compacted


class Recorder:
    """Wraps a model: its sessions record every ``compact(start, path, lengths)`` as (path rows, k̂ rows)."""

    def __init__(self, model):
        self.model, self.compacted = model, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def start(self, *args, **kwargs):
        session = self.model.start(*args, **kwargs)
        compact = session.compact

        def recording(start, path, lengths):
            self.compacted.append((path.tolist(), (lengths - start).tolist()))
            return compact(start, path, lengths)

        session.compact = recording
        return session


def accepted_ranks(compacted, tree: StaticTree) -> set[tuple[int, int]]:
    """(depth, rank) of every accepted non-root node of a static tree."""
    return {(j, tree.paths[path[j] - 1][-1]) for paths, ks in compacted for path, k in zip(paths, ks)
            for j in range(1, k)}


def sources_for(model, n):
    return SOURCES[:n] if model.cfg.encoder_decoder else None


# -- 1. a one-path tree is plain blockwise decoding --------------------------------------------------------------------
RULES = [Acceptance(), Acceptance("top_k", top_k=2), Acceptance("distance", eps=1), Acceptance(min_block=2),
         Acceptance(min_block=3)]


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_chain_tree_is_blockwise_on_the_scripted_model(k):
    prefixes = [[3], [5, 6, 7], [9, 9], [4, 4, 4, 4, 4, 4]]
    for correct in (lambda length: 1 + (length * 7) % 5, lambda length: 5, lambda length: 1):
        for eos_at, max_new in ((None, 23), (11, 30), (6, 4)):
            model = ScriptedModel(k=5, correct=correct, eos_id=EOS, eos_at=eos_at)
            for rule in RULES:
                ref = blockwise(model, prefixes, max_new, k=k, eos_id=EOS, accept=rule)
                out = tree_decode(model, prefixes, max_new, StaticTree.chain(k), eos_id=EOS, accept=rule)
                assert out.tokens == ref.tokens, (k, eos_at, rule)
                assert out.stats.as_dict() == ref.stats.as_dict(), (k, eos_at, rule)
                if rule == Acceptance():
                    assert out.tokens == greedy(model, prefixes, max_new, eos_id=EOS).tokens


def _chain_cases(model, prefixes, sources, max_new, rules=(Acceptance(),)):
    for k in range(1, model.num_heads + 1):
        for rule in rules:
            ref = blockwise(model, prefixes, max_new, k=k, eos_id=EOS, sources=sources, accept=rule)
            out = tree_decode(model, prefixes, max_new, StaticTree.chain(k), eos_id=EOS, sources=sources, accept=rule)
            assert out.tokens == ref.tokens, (k, rule)
            assert out.stats.calls == ref.stats.calls and out.stats.block_sizes == ref.stats.block_sizes, (k, rule)
            assert out.stats.as_dict() == ref.stats.as_dict()


@pytest.mark.parametrize("fixture", ["trained_decoder", "trained_encdec"])
def test_chain_tree_is_blockwise_on_trained_models(fixture, request):
    model = request.getfixturevalue(fixture)
    g = torch.Generator().manual_seed(5)
    seq, src = pattern_batch(4, 4, g, model.cfg.encoder_decoder)
    prefixes = [row[: 2 + i % 3].tolist() for i, row in enumerate(seq)]  # ragged prefixes of the learned language
    sources = src.tolist() if src is not None else None
    _chain_cases(model, prefixes, sources, 30)
    # the heads learned the language: long blocks are accepted, so the chains really are blocks
    assert tree_decode(model, prefixes, 30, StaticTree.chain(4), sources=sources).stats.mean_accepted > 2.5


@pytest.mark.parametrize("kind", ["tiny", "tiny-encdec"])
def test_chain_tree_is_blockwise_on_random_models_with_eos(kind):
    """Random models end rows with end-of-sequence at different times (some rows run to the limit)."""
    model = random_model(kind, k=4, seed=EOS_SEED[kind])
    sources = sources_for(model, 4)
    lengths = [len(t) for t in greedy(model, PREFIXES, 25, eos_id=EOS, sources=sources).tokens]
    assert min(lengths) < 25 and max(lengths) == 25, lengths  # end-of-sequence and the limit both end rows
    _chain_cases(model, PREFIXES, sources, 25, RULES)


# -- 2. scripted models: every accepted length forced, through every branch -------------------------------------------
SCRIPTED_SHAPES = [StaticTree.chain(4).paths, full(4, 1), full(4, 2), full(4, 3), full(8, 1), SPARSE, SKINNY]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=st.integers(0, len(SCRIPTED_SHAPES) - 1), seed=st.integers(0, 10**6), batch=st.integers(1, 4),
       prefix_lengths=st.lists(st.integers(1, 6), min_size=4, max_size=4), max_new=st.integers(1, 25),
       eos_at=st.one_of(st.none(), st.integers(2, 30)))
def test_scripted_static_tree_equals_greedy_with_forced_lengths(shape, seed, batch, prefix_lengths, max_new, eos_at):
    tree = StaticTree(SCRIPTED_SHAPES[shape])
    rank = scrambled(seed)
    model = ScriptedModel(k=tree.depth + 1, correct=lambda length: 1, eos_id=EOS, eos_at=eos_at, rank=rank)
    rng = random.Random(seed)
    prefixes = [[rng.randrange(2, 50) for _ in range(n)] for n in prefix_lengths[:batch]]
    eos_id = EOS if eos_at is not None else None
    ref = greedy(model, prefixes, max_new, eos_id=eos_id)
    out, blocks, _ = decode_recorded(model, prefixes, max_new, tree, eos_id=eos_id)
    assert out.tokens == ref.tokens
    for prefix, row, tokens in zip(prefixes, blocks, ref.tokens):
        assert row == forced_blocks(len(prefix), len(tokens), tree.paths, tree.depth, rank)


class CheckedDynamicTree(DynamicTree):
    """A dynamic tree that checks every tree it builds on a scripted model: as many nodes as the budget allows, parents
    first, none deeper than ``depth``, the root p1's argmax, and every other node one of head p_{d+1}'s ``top``
    candidates under its own parent (there the scripted head ranks right, right + 1, right + 2, ... with right the
    token greedy would take after the parent's root path)."""

    def __init__(self, model: ScriptedModel, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model, self.built = model, 0

    def build(self, session, p1, hidden, *args, **kwargs):
        tree = super().build(session, p1, hidden, *args, **kwargs)
        top, vocab = self.top, self.model.vocab_size
        candidates = 1 + sum(top * min(top, top ** (d - 1)) for d in range(1, self.depth + 1))
        B, N = tree.tokens.shape
        assert N == min(self.nodes, candidates)
        assert tree.tokens[:, 0].tolist() == p1.argmax(-1).tolist()
        assert int(tree.depth.max()) <= self.depth
        for b in range(B):
            s, length = (int(x) for x in hidden[b])
            for i in range(1, N):
                parent = int(tree.parents[b, i])
                assert 0 <= parent < i
                path = ancestors(tree, b, parent)
                right = self.model.next_token(s + int(tree.tokens[b, path].sum()), length + len(path))
                assert (int(tree.tokens[b, i]) - right) % vocab <= top, (b, i, tree.tokens[b].tolist())
            children = {}
            for i in range(1, N):
                children.setdefault(int(tree.parents[b, i]), []).append(int(tree.tokens[b, i]))
            assert all(len(set(c)) == len(c) for c in children.values())  # siblings differ
        self.built += 1
        return tree


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes=st.integers(1, 30), depth=st.integers(0, 3), top=st.integers(1, 4), spine=st.booleans(),
       seed=st.integers(0, 10**6), batch=st.integers(1, 4), max_new=st.integers(1, 25),
       eos_at=st.one_of(st.none(), st.integers(2, 30)))
def test_scripted_dynamic_tree_equals_greedy(nodes, depth, top, spine, seed, batch, max_new, eos_at):
    """Every tree built is checked (``CheckedDynamicTree``); a dynamic tree of depth <= 2 with room for every
    candidate is the complete top-ary tree, so its accepted lengths are forced too."""
    rank = scrambled(seed)
    model = ScriptedModel(k=4, correct=lambda length: 1, eos_id=EOS, eos_at=eos_at, rank=rank)
    tree = CheckedDynamicTree(model, nodes, depth, top, spine=spine)
    prefixes = PREFIXES[:batch]
    eos_id = EOS if eos_at is not None else None
    ref = greedy(model, prefixes, max_new, eos_id=eos_id)
    out, blocks, _ = decode_recorded(model, prefixes, max_new, tree, eos_id=eos_id)
    assert out.tokens == ref.tokens
    assert tree.built == out.stats.iterations
    if depth <= 2 and nodes >= 1 + top + (top * top if depth == 2 else 0):
        for prefix, row, tokens in zip(prefixes, blocks, ref.tokens):
            assert row == forced_blocks(len(prefix), len(tokens), full(top, depth), depth, rank)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_trees_accept_second_third_and_fourth_children(seed):
    """The right token's rank is pseudo-random in 0..3 at every node: a complete 4-ary tree accepts its whole depth at
    every step, through children of every rank at every depth, where the chain accepts only runs of rank 0."""
    rank = scrambled(seed)
    model = ScriptedModel(k=4, correct=lambda length: 1, rank=rank)
    prefixes = [[3], [5, 6, 7], [9, 9]]
    ref = greedy(model, prefixes, 40).tokens
    complete = StaticTree(full(4, 3))
    out, blocks, compacted = decode_recorded(model, prefixes, 40, complete)
    assert out.tokens == ref
    assert blocks == [[4] * 10] * 3 and out.stats.mean_accepted == 4 and out.stats.calls == 11
    assert accepted_ranks(compacted, complete) == {(d, r) for d in (1, 2, 3) for r in range(4)}
    chain = tree_decode(model, prefixes, 40, StaticTree.chain(4))
    assert chain.tokens == ref
    assert chain.stats.mean_accepted < 2 and chain.stats.calls > 20, chain.stats.as_dict()
    dynamic, blocks, _ = decode_recorded(model, prefixes, 40, DynamicTree(21, 2, top=4))  # the complete 4-ary tree
    assert dynamic.tokens == ref and blocks == [[3] * 13 + [1]] * 3
    sparse = StaticTree(SPARSE)
    out, blocks, compacted = decode_recorded(model, prefixes, 40, sparse)
    assert out.tokens == ref
    assert {r for d, r in accepted_ranks(compacted, sparse)} == {0, 1, 2, 3}
    assert out.stats.mean_accepted > chain.stats.mean_accepted + 0.3, (out.stats.as_dict(), chain.stats.as_dict())
    deeper = tree_decode(model, prefixes, 40, DynamicTree(30, 3, top=4))
    assert deeper.tokens == ref and deeper.stats.mean_accepted > chain.stats.mean_accepted + 0.5


def test_end_of_sequence_inside_an_accepted_path():
    complete = StaticTree(full(4, 3))
    for eos_at in range(2, 14):  # end-of-sequence at every depth of the accepted path
        rank = scrambled(eos_at)
        model = ScriptedModel(k=4, correct=lambda length: 1, eos_id=EOS, eos_at=eos_at, rank=rank)
        out, blocks, _ = decode_recorded(model, [[3, 4]], 40, complete, eos_id=EOS)
        assert out.tokens == greedy(model, [[3, 4]], 40, eos_id=EOS).tokens
        n = max(eos_at - 2, 0) + 1
        assert out.tokens[0][-1] == EOS and EOS not in out.tokens[0][:-1] and len(out.tokens[0]) == n
        assert blocks[0] == [4] * ((n - 1) // 4) + [(n - 1) % 4 + 1]


def test_length_limit_inside_an_accepted_path():
    complete = StaticTree(full(4, 3))
    model = ScriptedModel(k=4, correct=lambda length: 1, rank=scrambled(7))
    for max_new in range(1, 14):
        out, blocks, _ = decode_recorded(model, [[3], [4, 5]], max_new, complete)
        assert out.tokens == greedy(model, [[3], [4, 5]], max_new).tokens
        assert blocks == [[4] * ((max_new - 1) // 4) + [(max_new - 1) % 4 + 1]] * 2


def test_ragged_rows_finish_at_their_own_pace():
    model = ScriptedModel(k=4, correct=lambda length: 1, eos_id=EOS, eos_at=9, rank=scrambled(3))
    prefixes = [[3], [3, 4, 5, 6], [3, 4, 5, 6, 7, 8, 9, 10]]
    for tree in (StaticTree(full(4, 3)), DynamicTree(85, 3, top=4)):
        out, blocks, _ = decode_recorded(model, prefixes, 12, tree, eos_id=EOS)
        assert out.tokens == greedy(model, prefixes, 12, eos_id=EOS).tokens
        assert [len(t) for t in out.tokens] == [9, 6, 2]
        if isinstance(tree, StaticTree):
            assert blocks == [[4, 4, 1], [4, 2], [2]]


# -- 3. real models in float64: tree decoding is greedy ----------------------------------------------------------------
HEAD_KINDS = [("paper", "identity"), ("paper", "learned"), ("residual", "identity"), ("chain", "identity")]


def check_real(model, prefixes, max_new, tree, sources=None, eos_id=EOS, ref=None, every_token=False):
    """tree_decode == greedy. ``every_token``: the tree holds every token of the vocabulary below the root, so every
    block but a row's last is at least 2 tokens. Returns the output and the (depth, rank) of the accepted nodes (static
    trees)."""
    ref = ref or greedy(model, prefixes, max_new, eos_id=eos_id, sources=sources).tokens
    out, blocks, compacted = decode_recorded(model, prefixes, max_new, tree, eos_id=eos_id, sources=sources)
    assert out.tokens == ref, tree.describe()
    if every_token:
        assert all(j >= 2 for row in blocks for j in row[:-1]), blocks
    return out, (accepted_ranks(compacted, tree) if isinstance(tree, StaticTree) else None)


@pytest.mark.parametrize("kind", ["tiny", "tiny-encdec"])
@pytest.mark.parametrize("head_kind,p1", HEAD_KINDS)
def test_tree_equals_greedy_on_random_models(kind, head_kind, p1):
    for seed in (EOS_SEED[kind], 12):  # the first ends some rows with end-of-sequence, seed 12 runs them to the limit
        model = random_model(kind, k=4, seed=seed, head_kind=head_kind, p1=p1)
        sources = sources_for(model, 4)
        ref = greedy(model, PREFIXES, 25, eos_id=EOS, sources=sources).tokens
        _, ranks = check_real(model, PREFIXES, 25, StaticTree(WIDE_T), sources, ref=ref, every_token=True)
        assert any(r > 0 for d, r in ranks), ranks  # non-first children accepted
        check_real(model, PREFIXES, 25, StaticTree(SPARSE), sources, ref=ref)
        check_real(model, PREFIXES, 25, DynamicTree(16, 3, top=4), sources, ref=ref)
        out, _ = check_real(model, PREFIXES, 25, DynamicTree(V + 1, 1, top=V), sources, ref=ref, every_token=True)
        if seed == 12:
            assert out.stats.mean_accepted == 25 / 13  # 12 blocks of 2 and the last of 1 in every row


def test_a_tree_wider_than_the_model_positions():
    """A tree's nodes share positions (length + depth) but each takes a cache slot: 145 nodes after a prefix of 6
    with 25 new tokens need 175 slots but only 33 positions of the model's 128."""
    model = random_model("tiny", k=4, seed=12)
    assert model.max_positions == 128
    tree = StaticTree(wide(V, 5, V))
    assert tree.nodes == 145
    out, _ = check_real(model, PREFIXES, 25, tree, every_token=True)
    assert out.stats.mean_accepted >= 2


@pytest.mark.parametrize("fixture", ["trained_decoder", "trained_encdec"])
def test_tree_equals_greedy_on_trained_models(fixture, request):
    model = request.getfixturevalue(fixture)
    encdec = model.cfg.encoder_decoder
    g = torch.Generator().manual_seed(5)
    seq, src = pattern_batch(4, 4, g, encdec)
    learned = [row[: 2 + i % 3].tolist() for i, row in enumerate(seq)]  # the learned language: long blocks
    g = torch.Generator().manual_seed(3)
    off = [torch.randint(3, V, (n,), generator=g).tolist() for n in (2, 5, 3, 7)]  # off-pattern: heads unsure
    off_src = [torch.randint(3, V, (2,), generator=g).tolist() for _ in off] if encdec else None
    ranks = set()
    for prefixes, sources in ((learned, src.tolist() if encdec else None), (off, off_src)):
        ref = greedy(model, prefixes, 30, eos_id=EOS, sources=sources).tokens
        for tree in (StaticTree(SPARSE), StaticTree(WIDE_T), StaticTree(full(3, 3)), DynamicTree(12, 3, top=3)):
            out, r = check_real(model, prefixes, 30, tree, sources, ref=ref, every_token=tree.nodes == len(WIDE_T) + 1)
            ranks |= r or set()
            if prefixes is learned:  # nearly every path is accepted whole
                assert out.stats.mean_accepted > tree.depth + 0.5, (tree.describe(), out.stats.as_dict())
    assert any(r > 0 for d, r in ranks), ranks


LV = 48  # the tiny Llama's vocabulary
LLAMA_PROMPTS = [[5, 9, 3, 17], [2, 30], [11, 4, 6, 20, 8, 13, 7], [40, 41, 42]]
LLAMA_EOS = 28  # stands in for end-of-sequence: greedy produces it first at the 20th, 5th and 11th token of rows 1-3


def tiny_llama(transformers, dtype=torch.float64, hidden=32, intermediate=64, heads=4, kv=2, init=0.4):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=LV, hidden_size=hidden, intermediate_size=intermediate,
                                   num_hidden_layers=2, num_attention_heads=heads, num_key_value_heads=kv,
                                   max_position_embeddings=256, rope_theta=10000.0, tie_word_embeddings=True,
                                   bos_token_id=2, eos_token_id=EOS, pad_token_id=0, initializer_range=init)
    return transformers.LlamaForCausalLM(cfg).to(dtype).eval()


def llama_heads(d_model: int, kind: str, seed: int, dtype=torch.float64):
    from blockwise.model.heads import make_heads

    heads = make_heads(d_model, HeadsConfig(num_heads=4, d_hidden=16, kind=kind)).to(dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in heads.parameters():
            p.copy_((torch.randn(p.shape, generator=g) * 0.3).to(dtype))
    return heads.eval()


@pytest.fixture(scope="module")
def llama64():
    transformers = pytest.importorskip("transformers")
    from blockwise.tasks.llama import Llama

    return Llama.from_hf(tiny_llama(transformers))


@pytest.mark.parametrize("kind", ["paper", "residual", "chain"])
def test_tree_equals_greedy_on_the_native_llama(llama64, kind):
    from blockwise.tasks.llama import NativeLM

    lm = NativeLM(llama64, llama_heads(32, kind, seed=3))
    ref = greedy(lm, LLAMA_PROMPTS, 24, eos_id=LLAMA_EOS).tokens
    assert [len(t) for t in ref] == [24, 20, 5, 11]  # rows end at different times
    every = StaticTree(wide(LV, 3, 3))
    _, ranks = check_real(lm, LLAMA_PROMPTS, 24, every, eos_id=LLAMA_EOS, ref=ref, every_token=True)
    assert any(r > 0 for d, r in ranks), ranks
    check_real(lm, LLAMA_PROMPTS, 24, StaticTree(SPARSE), eos_id=LLAMA_EOS, ref=ref)
    check_real(lm, LLAMA_PROMPTS, 24, DynamicTree(20, 3, top=4), eos_id=LLAMA_EOS, ref=ref)
    check_real(lm, LLAMA_PROMPTS, 24, DynamicTree(LV + 1, 1, top=LV), eos_id=LLAMA_EOS, ref=ref, every_token=True)
    check_real(lm, LLAMA_PROMPTS, 24, DynamicTree(LV + 10, 2, top=LV), eos_id=LLAMA_EOS, ref=ref)
    ref = greedy(lm, LLAMA_PROMPTS, 24).tokens  # no end-of-sequence: every row runs to the limit
    out, _ = check_real(lm, LLAMA_PROMPTS, 24, every, eos_id=None, ref=ref, every_token=True)
    assert out.stats.mean_accepted >= 2


def random_tree(B: int, N: int, vocab: int, seed: int = 0) -> Tree:
    """A different random tree per row (node i's parent is one of the 4 nodes before it: deep and bushy), random
    tokens."""
    g = torch.Generator().manual_seed(seed)
    parents = torch.tensor([[-1] + [int(torch.randint(max(0, i - 4), i, (1,), generator=g)) for i in range(1, N)]
                            for _ in range(B)])
    return Tree.from_parents(torch.randint(3, vocab, (B, N), generator=g), parents)


def ancestors(tree: Tree, b: int, i: int) -> list[int]:
    """Node i's root path (node ids from the root down), from the parents alone."""
    path = [i]
    while int(tree.parents[b, path[0]]) >= 0:
        path.insert(0, int(tree.parents[b, path[0]]))
    return path


def node_states_and_compaction(model, vocab, prompts, sources, exact: bool):
    """Feed a random tree per row after ragged prompts, in one batch. Every node's state must be (the same bits if
    ``exact``, else to 1e-9) its state when its row's tree is fed alone, and when the root path to any leaf below it is
    fed alone as a one-path tree, as a plain block (blockwise's way) and one token per call (greedy's way). Then keep a
    path per row that is not the first nodes (``compact``: entries must move) and check the next token's state against
    a fresh session fed the prompt and the path."""
    def same(a, b, what):
        if exact:
            assert torch.equal(a, b), what
        else:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=what)

    B = len(prompts)
    tree = random_tree(B, 14, vocab)
    session, _ = prefill(model, prompts, 64, sources)
    start = session.lengths.clone()
    hidden = session.feed(tree.tokens, tree)
    for b in range(B):
        src = [sources[b]] if sources else None
        alone, _ = prefill(model, [prompts[b]], 64, src)
        same(alone.feed(tree.tokens[b:b + 1], Tree.from_parents(tree.tokens[b:b + 1], tree.parents[b:b + 1]))[0],
             hidden[b], f"row {b}: in a batch of {B} vs alone")
        leaves = sorted(set(range(tree.nodes)) - set(tree.parents[b].tolist()))
        for leaf in leaves:
            path = ancestors(tree, b, leaf)
            tokens = tree.tokens[b:b + 1, path]
            one_path = Tree.from_parents(tokens, torch.arange(-1, len(path) - 1)[None])
            fed, _ = prefill(model, [prompts[b]], 64, src)
            same(fed.feed(tokens, one_path)[0], hidden[b, path], f"row {b} leaf {leaf}: in the tree vs its path alone")
            fed, _ = prefill(model, [prompts[b]], 64, src)
            same(fed.feed(tokens)[0], hidden[b, path], f"row {b} leaf {leaf}: in the tree vs its path as a block")
            fed, _ = prefill(model, [prompts[b]], 64, src)
            stepped = torch.cat([fed.feed(tokens[:, j:j + 1])[0] for j in range(len(path))])
            same(stepped, hidden[b, path], f"row {b} leaf {leaf}: in the tree vs one token per call")
    # keep each row's path to its deepest last node (never the first nodes in order: entries must move)
    keep = [ancestors(tree, b, max(range(tree.nodes), key=lambda i: (int(tree.depth[b, i]), i))) for b in range(B)]
    width = int(tree.depth.max()) + 1
    path = torch.tensor([p + list(range(len(p), width)) for p in keep])
    assert bool((path != torch.arange(width)).any())
    k_hat = torch.tensor([len(p) for p in keep])
    session.compact(start, path, start + k_hat)
    nxt = torch.tensor([[7]] * B)
    after = session.feed(nxt)[:, 0]
    for b in range(B):
        fresh, _ = prefill(model, [prompts[b] + tree.tokens[b, keep[b]].tolist()], 64,
                           [sources[b]] if sources else None)
        same(fresh.feed(nxt[b:b + 1])[0, 0], after[b], f"row {b}: after compaction vs fresh")


@pytest.mark.parametrize("kind", ["tiny", "tiny-encdec", "llama"])
def test_node_states_are_their_root_paths_and_compaction_keeps_the_path(kind, request):
    if kind == "llama":
        from blockwise.tasks.llama import NativeLM

        model, vocab, sources = NativeLM(request.getfixturevalue("llama64"), llama_heads(32, "paper", 1)), LV, None
    else:
        model, vocab = random_model(kind, k=4, seed=5), V
        sources = sources_for(model, 3)
    node_states_and_compaction(model, vocab, [[2, 5, 9], [2], [2, 7, 3, 11, 4, 6]], sources, exact=False)


# -- 4. bfloat16: a node's bits do not depend on its tree or its batch -------------------------------------------------
@pytest.fixture(scope="module")
def bf16_llama():
    transformers = pytest.importorskip("transformers")
    from blockwise.model.heads import make_heads
    from blockwise.tasks.llama import Llama, NativeLM

    hf = tiny_llama(transformers, torch.float32, hidden=192, intermediate=1536, heads=6, kv=2, init=0.1)
    heads = make_heads(192, HeadsConfig(num_heads=4, d_hidden=16))  # zero-initialised: they repeat p1's ranking
    return NativeLM(Llama.from_hf(hf).cast(torch.bfloat16), heads.to(torch.bfloat16))


@pytest.fixture(scope="module")
def bf16_transformer():
    vocab = 4000
    cfg = preset("mt-small", vocab_size=vocab, d_ff=1536, n_layers=2, n_encoder_layers=2)
    model = chaotic(BlockwiseModel(cfg, HeadsConfig(num_heads=4, d_hidden=32)), seed=3, std=0.08)
    return model.to(torch.bfloat16).eval()


@needs_bf16
@pytest.mark.parametrize("kind", ["llama", "transformer"])
def test_bf16_node_state_bits_do_not_depend_on_the_tree_or_the_batch(kind, request):
    """A node's state in a batch of ragged rows, each with its own random tree (siblings' entries interleaved with the
    node's ancestors), has the bits of its root path fed alone as a plain block; after compaction the next token's
    bits are those of a fresh session."""
    if kind == "llama":
        model, vocab, sources = request.getfixturevalue("bf16_llama"), LV, None
    else:
        model, vocab = request.getfixturevalue("bf16_transformer"), 4000
        sources = [[5, 6, 7, 1], [9, 1], [12, 4, 8, 8, 30, 1]]
    node_states_and_compaction(model, vocab, [[2, 5, 9], [2], [2, 7, 3, 11, 4, 6]], sources, exact=True)


@needs_bf16
def test_bf16_tree_decoding_equals_bf16_greedy(bf16_llama, bf16_transformer):
    lm = bf16_llama
    ref = [greedy(lm, [p], 40).tokens[0] for p in LLAMA_PROMPTS]
    assert greedy(lm, LLAMA_PROMPTS, 40).tokens == ref
    for tree in (StaticTree(wide(LV, 4, 4)), StaticTree(SPARSE), DynamicTree(30, 3, top=4)):
        out = tree_decode(lm, LLAMA_PROMPTS, 40, tree)
        assert out.tokens == ref, tree.describe()
        assert [tree_decode(lm, [p], 40, tree).tokens[0] for p in LLAMA_PROMPTS] == ref, tree.describe()
        assert sum(out.stats.block_sizes[2:]) > 0, (tree.describe(), out.stats.as_dict())  # real blocks
        if tree.nodes > LV:  # every token below the root
            assert out.stats.mean_accepted > 1.9, (tree.describe(), out.stats.as_dict())
    model = bf16_transformer
    g = torch.Generator().manual_seed(0)
    sources = [torch.randint(3, 4000, (n,), generator=g).tolist() + [1] for n in (5, 2, 8, 4)]
    prefixes = [[2]] * len(sources)
    ref = [greedy(model, [p], 30, sources=[s]).tokens[0] for p, s in zip(prefixes, sources)]
    assert len({tuple(r) for r in ref}) > 1
    for tree in (StaticTree(SPARSE), DynamicTree(12, 3, top=3)):
        assert tree_decode(model, prefixes, 30, tree, sources=sources).tokens == ref, tree.describe()


# -- 5. the pieces ----------------------------------------------------------------------------------------------------
def test_from_parents_depth_and_ancestors():
    #        0
    #      1   2
    #     3 4   5
    #           6
    tokens = torch.zeros(2, 7, dtype=torch.long)
    parents = torch.tensor([[-1, 0, 0, 1, 1, 2, 5], [-1, 0, 1, 2, 3, 4, 5]])  # row 1: a chain
    tree = Tree.from_parents(tokens, parents)
    assert tree.depth.tolist() == [[0, 1, 1, 2, 2, 2, 3], [0, 1, 2, 3, 4, 5, 6]]
    seen = {0: {0}, 1: {0, 1}, 2: {0, 2}, 3: {0, 1, 3}, 4: {0, 1, 4}, 5: {0, 2, 5}, 6: {0, 2, 5, 6}}
    expected = [[j in seen[i] for j in range(7)] for i in range(7)]
    assert tree.visible[0].tolist() == expected
    assert tree.visible[1].tolist() == torch.ones(7, 7, dtype=torch.bool).tril().tolist()
    for n in range(1, 20):  # chains of every length: the doubling reaches the root from the deepest node
        chain = Tree.from_parents(torch.zeros(1, n, dtype=torch.long), torch.arange(-1, n - 1)[None])
        assert chain.depth[0].tolist() == list(range(n))
        assert torch.equal(chain.visible[0], torch.ones(n, n, dtype=torch.bool).tril())


def _scores(B, N, vocab, ranking):
    """Logits (B, N, vocab) where node (b, n) ranks tokens ranking[b][n] first, second, ..."""
    logits = torch.zeros(B, N, vocab)
    for b, row in enumerate(ranking):
        for n, order in enumerate(row):
            for r, t in enumerate(order):
                logits[b, n, t] = 10.0 - r
    return logits


#        0:5
#    1:3      2:4
#    3:7    4:8  5:9
#                6:2
HAND_TOKENS = torch.tensor([[5, 3, 4, 7, 8, 9, 2]])
HAND_PARENTS = torch.tensor([[-1, 0, 0, 1, 2, 2, 5]])


def test_accept_exact_keeps_the_longest_accepted_path():
    tree = Tree.from_parents(HAND_TOKENS, HAND_PARENTS)
    # p1 after node 0 says 4 (node 2, not node 1), after node 2 says 9 (node 5), after node 5 says 2 (node 6); after
    # node 1 it says 7: node 3 matches its parent's choice but node 1 itself was rejected
    ranking = [[[4, 3], [7], [9, 8], [0], [0], [2], [0]]]
    k_hat, path = tree.accept(_scores(1, 7, 10, ranking))
    assert k_hat.tolist() == [4] and path.tolist() == [[0, 2, 5, 6]]
    ranking[0][5] = [1, 2]  # node 6 rejected: three tokens, the last column holds its own index
    k_hat, path = tree.accept(_scores(1, 7, 10, ranking))
    assert k_hat.tolist() == [3] and path.tolist() == [[0, 2, 5, 3]]
    ranking[0][0] = [6]  # nothing below the root
    k_hat, path = tree.accept(_scores(1, 7, 10, ranking))
    assert k_hat.tolist() == [1] and path.tolist() == [[0, 1, 2, 3]]
    # two rows at once, and a tie between equally deep paths goes to the first node
    tokens = HAND_TOKENS.repeat(2, 1)
    tree = Tree.from_parents(tokens, HAND_PARENTS.repeat(2, 1))
    ranking = [[[4], [7], [9], [0], [0], [2], [0]], [[3], [7], [8], [0], [0], [0], [0]]]
    k_hat, path = tree.accept(_scores(2, 7, 10, ranking))
    assert k_hat.tolist() == [4, 3] and path.tolist() == [[0, 2, 5, 6], [0, 1, 3, 3]]
    tree = Tree.from_parents(torch.tensor([[5, 3, 4, 7, 8]]), torch.tensor([[-1, 0, 0, 1, 2]]))
    k_hat, path = tree.accept(_scores(1, 5, 10, [[[3, 4], [7], [8], [0], [0]]]), Acceptance("top_k", top_k=2))
    assert k_hat.tolist() == [3] and path.tolist() == [[0, 1, 3]]  # nodes 3 and 4 both pass: the first wins


def test_accept_top_k_and_distance():
    tree = Tree.from_parents(HAND_TOKENS, HAND_PARENTS)
    # after node 0: 3 first, 4 second; after node 1: 6 first (node 3's 7 is second); after node 2: 9 then 8;
    # after node 5: 3 then 0 (node 6's 2 is third)
    ranking = [[[3, 4], [6, 7], [9, 8], [0], [0], [3, 0, 2], [0]]]
    scores = _scores(1, 7, 10, ranking)
    assert tree.accept(scores)[0].tolist() == [2]  # exact: node 1 only
    k_hat, path = tree.accept(scores, Acceptance("top_k", top_k=2))
    assert k_hat.tolist() == [3] and path.tolist() == [[0, 1, 3, 3]]  # nodes 3 (via 1) and 5 (via 2): the first
    k_hat, path = tree.accept(scores, Acceptance("top_k", top_k=3))
    assert k_hat.tolist() == [4] and path.tolist() == [[0, 2, 5, 6]]
    # distance: |token - p1's argmax| <= ε. Node 1 (3 vs 3) ok, node 2 (4 vs 3) at ε >= 1, node 3 (7 vs 6) at ε >= 1,
    # node 5 (9 vs 9) ok, node 6 (2 vs 3) at ε >= 1
    assert tree.accept(scores, Acceptance("distance", eps=0))[0].tolist() == [2]
    k_hat, path = tree.accept(scores, Acceptance("distance", eps=1))
    assert k_hat.tolist() == [4] and path.tolist() == [[0, 2, 5, 6]]


def test_accept_min_block_follows_first_children():
    tree = Tree.from_parents(HAND_TOKENS, HAND_PARENTS)
    nothing = _scores(1, 7, 10, [[[0]] * 7])  # nothing below the root is accepted
    k_hat, path = tree.accept(nothing, Acceptance(min_block=3))
    assert k_hat.tolist() == [3] and path.tolist() == [[0, 1, 3, 3]]  # root -> first child 1 -> its first child 3
    k_hat, path = tree.accept(nothing, Acceptance(min_block=4))
    assert k_hat.tolist() == [3] and path.tolist() == [[0, 1, 3, 3]]  # node 3 is a leaf: stop there
    via_2 = _scores(1, 7, 10, [[[4], [0], [0], [0], [0], [0], [0]]])  # node 2 accepted, nothing below it
    k_hat, path = tree.accept(via_2, Acceptance(min_block=3))
    assert k_hat.tolist() == [3] and path.tolist() == [[0, 2, 4, 3]]  # 2's first child is 4, not 5
    k_hat, path = tree.accept(via_2, Acceptance(min_block=4))
    assert k_hat.tolist() == [3] and path.tolist() == [[0, 2, 4, 3]]
    k_hat, path = tree.accept(via_2, Acceptance(min_block=2))
    assert k_hat.tolist() == [2] and path.tolist() == [[0, 2, 2, 3]]  # already long enough


def test_static_tree_layout_and_validation():
    tree = StaticTree([(0, 1), (1,), (0,), (0,), (0, 0), (0, 0, 2)])  # any order, repeats dropped
    assert tree.paths == [(0,), (1,), (0, 0), (0, 1), (0, 0, 2)]
    assert tree.nodes == 6 and tree.depth == 3
    assert tree._template.parents.tolist() == [[-1, 0, 0, 1, 1, 3]]
    assert StaticTree.chain(1).nodes == 1 and StaticTree.chain(1).depth == 0
    assert StaticTree.chain(4).paths == [(0,), (0, 0), (0, 0, 0)]
    with pytest.raises(ValueError, match=r"path \(0, 1\) has no parent path \(0,\)"):
        StaticTree([(1,), (0, 1)])
    with pytest.raises(ValueError, match=r"path \(2, 0, 0\) has no parent path \(2, 0\)"):
        StaticTree([(0,), (2,), (2, 0, 0)])
    with pytest.raises(ValueError, match="non-empty"):
        StaticTree([()])
    with pytest.raises(ValueError, match=">= 0"):
        StaticTree([(-1,)])
    with pytest.raises(ValueError, match="dynamic tree needs"):
        DynamicTree(0, 2)
    with pytest.raises(ValueError, match="dynamic tree needs"):
        DynamicTree(4, 2, top=0)
    with pytest.raises(ValueError, match="larger than the 3 heads"):  # depth 3 needs heads p2..p4
        tree_decode(random_model("tiny", k=3), [[2]], 5, StaticTree.chain(4))


def test_static_tree_from_agreement():
    # p2's rank 0..2 is right 80/15/5 % of the time; p3's 50/30 % (after a right parent); p4's 70/20 %
    agreement = [[0.8, 0.15, 0.05], [0.5, 0.3], [0.7, 0.2]]
    # node chances: (0,) .8, (0,0) .4, (0,0,0) .28, (0,1) .24, (0,1,0) .168, (1,) .15, (0,0,1) .08, ...
    assert StaticTree.from_agreement(agreement, 6).paths == [(0,), (0, 0), (0, 1), (0, 0, 0), (0, 1, 0)]
    assert StaticTree.from_agreement(agreement, 7).paths == [(0,), (1,), (0, 0), (0, 1), (0, 0, 0), (0, 1, 0)]
    assert StaticTree.from_agreement(agreement, 2).paths == [(0,)]
    assert StaticTree.from_agreement(agreement, 1).nodes == 1
    assert StaticTree.from_agreement(agreement, 100).nodes == 1 + 3 + 6 + 12  # every path, budget unspent
    assert StaticTree.from_agreement([[1.0], [1.0], [1.0]], 10).paths == StaticTree.chain(4).paths


def test_dynamic_tree_keeps_the_most_likely_candidates():
    """On the scripted model a head's rank-r candidate has log-probability -r - c (c ~ 0.46): with top 2 and depth 2
    the candidates are (0,), (1,), (0, 0), (0, 1), (1, 0), (1, 1); keeping 4 nodes keeps the root, (0,), (0, 0),
    (1,)."""
    model = ScriptedModel(k=4, correct=lambda length: 1, rank=lambda length, i: 0)
    session = model.start(1, 16)
    hidden = session.feed(torch.tensor([[3, 4, 5]]))[:, -1]
    p1 = session.scores(hidden)
    root = int(p1.argmax())
    right1 = model.next_token(3 + 4 + 5 + root, 4)
    right2 = model.next_token(12 + root + right1, 5)
    for spine in (True, False):  # here the spine, the chain of best tokens, is what the probabilities keep anyway
        tree = DynamicTree(4, 2, top=2, spine=spine).build(session, p1, hidden)
        assert tree.parents.tolist() == [[-1, 0, 0, 1]]
        assert tree.tokens.tolist() == [[root, right1, (right1 + 1) % 50, right2]]
        tree = DynamicTree(3, 2, top=2, spine=spine).build(session, p1, hidden)
        assert tree.parents.tolist() == [[-1, 0, 1]] and tree.tokens[0, 1] == right1
        # depth 3: (0, 0, 0) (-3c) beats (1,) (-1 - c); the kept candidates 0, 1, 3, 7 are renumbered 0..3
        tree = DynamicTree(4, 3, top=2, spine=spine).build(session, p1, hidden)
        assert tree.parents.tolist() == [[-1, 0, 1, 2]]
        assert tree.tokens.tolist() == [[root, right1, right2, model.next_token(12 + root + right1 + right2, 6)]]
        assert DynamicTree(1, 2, spine=spine).build(session, p1, hidden).tokens.tolist() == [[root]]


def test_a_small_budget_drafts_a_shallow_tree_that_keeps_the_same_nodes():
    """A dynamic tree fed n nodes is at most n - 1 deep, so it drafts only that deep (cheaper): the nodes kept are
    those the whole draft keeps, and its prediction ``expected`` covers the budgets up to n; ``draft`` asks for more."""
    model = ScriptedModel(k=4, correct=lambda length: 1, rank=lambda length, i: 0)
    session = model.start(1, 16)
    hidden = session.feed(torch.tensor([[3, 4, 5]]))[:, -1]
    p1 = session.scores(hidden)
    shape = DynamicTree(16, 3, top=2)  # candidates: 1 + 2 + 4 + 4 = 11
    for n, drafted in ((2, 3), (3, 7), (4, 11)):
        small, whole = shape.build(session, p1, hidden, n), shape.build(session, p1, hidden, n, draft=16)
        assert small.tokens.tolist() == whole.tokens.tolist() and small.parents.tolist() == whole.parents.tolist()
        assert small.expected.shape[1] == drafted and whole.expected.shape[1] == 11
        assert torch.equal(small.expected[:, :n], whole.expected[:, :n])


def test_layout_masks_and_positions():
    cache = KVCache(1, 2, 1, 12, 2)
    cache.truncate(torch.tensor([2, 4]))
    slots, positions, mask = cache.layout(4)  # a block: causal
    assert slots.tolist() == positions.tolist() == [[2, 3, 4, 5], [4, 5, 6, 7]]
    assert mask.shape == (2, 1, 4, 8)
    assert mask[:, 0].tolist() == [[[j <= s for j in range(8)] for s in row] for row in slots.tolist()]
    tree = Tree.from_parents(torch.zeros(2, 4, dtype=torch.long), torch.tensor([[-1, 0, 0, 1], [-1, 0, 1, 1]]))
    slots, positions, mask = cache.layout(4, tree)
    assert slots.tolist() == [[2, 3, 4, 5], [4, 5, 6, 7]]
    assert positions.tolist() == [[2, 3, 3, 4], [4, 5, 6, 6]]  # length + depth
    assert mask[:, 0].int().tolist() == [
        [[1, 1, 1, 0, 0, 0, 0, 0],  # row 0: 2 cached tokens, then nodes 0..3 at slots 2..5, slots 6, 7 stale
         [1, 1, 1, 1, 0, 0, 0, 0],
         [1, 1, 1, 0, 1, 0, 0, 0],  # node 2 (parent 0) never sees its sibling 1
         [1, 1, 1, 1, 0, 1, 0, 0]],  # node 3 (parent 1): root, 1, itself
        [[1, 1, 1, 1, 1, 0, 0, 0],  # row 1: 4 cached tokens, nodes at slots 4..7
         [1, 1, 1, 1, 1, 1, 0, 0],
         [1, 1, 1, 1, 1, 1, 1, 0],
         [1, 1, 1, 1, 1, 1, 0, 1]]]  # node 3 (parent 1) never sees its sibling 2


def test_compact_moves_the_accepted_path():
    cache = KVCache(2, 2, 1, 10, 1)
    value = torch.arange(2 * 2 * 10, dtype=torch.float32).view(2, 2, 1, 10, 1)
    cache.k.copy_(value)
    cache.v.copy_(-value)
    start = torch.tensor([2, 4])
    cache.lengths = start + 5  # a tree of 5 nodes fed to both rows
    # row 0 keeps nodes 0, 2, 3, 4 (the move overlaps: slot 4 gets 5's entry, then 5 gets 6's), row 1 nodes 0, 1 (k̂ 2)
    cache.compact(start, torch.tensor([[0, 2, 3, 4], [0, 1, 2, 3]]), torch.tensor([6, 6]))
    assert cache.lengths.tolist() == [6, 6]
    expected = value.clone()
    expected[:, 0, :, 2:6] = value[:, 0][:, :, [2, 4, 5, 6]]
    assert torch.equal(cache.k, expected) and torch.equal(cache.v, -expected)
    # every row kept its first nodes: nothing moves, the rows are cut
    cache.compact(torch.tensor([1, 1]), torch.tensor([[0, 1, 2], [0, 1, 2]]), torch.tensor([3, 2]))
    assert cache.lengths.tolist() == [3, 2] and torch.equal(cache.k, expected)


# -- 6. teeth: the checks above fail for a wrong mask, wrong positions, a lost ancestor or no compaction ---------------
def _causal_mask(original):
    def layout(self, n_new, tree=None):
        slots, positions, _ = original(self, n_new, tree)
        return slots, positions, original(self, n_new, None)[2]  # the tree's positions, a block's mask
    return layout


def _slot_positions(original):
    def layout(self, n_new, tree=None):
        slots, _, mask = original(self, n_new, tree)
        return slots, slots, mask
    return layout


def _parent_only(original):
    def from_parents(cls, tokens, parents):
        tree = original.__func__(cls, tokens, parents)
        N = tokens.shape[1]
        own = torch.eye(N, dtype=torch.bool).expand_as(tree.visible)
        parent = torch.zeros_like(tree.visible)
        parent.scatter_(2, parents.clamp(min=0)[:, :, None], (parents >= 0)[:, :, None])
        return cls(tree.tokens, tree.parents, tree.depth, own | parent)  # the depth is right, the mask is not
    return classmethod(from_parents)


def _no_move(original):
    def compact(self, start, path, lengths):
        self.truncate(lengths)
    return compact


SABOTAGE = {
    "causal mask": (KVCache, "layout", _causal_mask),
    "positions = slots": (KVCache, "layout", _slot_positions),
    "ancestors beyond the parent hidden": (Tree, "from_parents", _parent_only),
    "no compaction": (KVCache, "compact", _no_move),
}


@pytest.mark.parametrize("sabotage", list(SABOTAGE))
def test_sabotage_breaks_tree_decoding(sabotage, monkeypatch, request):
    """Each fault makes tree decoding differ from greedy on the trained decoder (a complete 3-ary tree of depth 3, on
    its own language) and fails the node-state check; the three faults that touch depth 1 also break a random model
    with every token below the root. The same runs pass unsabotaged."""
    owner, name, fault = SABOTAGE[sabotage]
    trained = request.getfixturevalue("trained_decoder")
    g = torch.Generator().manual_seed(5)
    seq, _ = pattern_batch(4, 4, g, False)
    learned = [row[: 2 + i % 3].tolist() for i, row in enumerate(seq)]
    random12 = random_model("tiny", k=4, seed=12)
    cases = [(trained, learned, full(3, 3))]
    if sabotage != "ancestors beyond the parent hidden":  # depth-1 nodes see the root, their parent, either way
        cases.append((random12, PREFIXES, WIDE_T))
    refs = [greedy(model, prefixes, 25, eos_id=EOS).tokens for model, prefixes, _ in cases]
    for (model, prefixes, paths), ref in zip(cases, refs):
        assert tree_decode(model, prefixes, 25, StaticTree(paths), eos_id=EOS).tokens == ref
    monkeypatch.setattr(owner, name, fault(owner.__dict__[name]))
    for (model, prefixes, paths), ref in zip(cases, refs):
        tree = StaticTree(paths)  # built under the fault (a static tree makes its mask once)
        assert tree_decode(model, prefixes, 25, tree, eos_id=EOS).tokens != ref, (sabotage, tree.describe())
    with pytest.raises(AssertionError):
        node_states_and_compaction(random12, V, [[2, 5, 9], [2], [2, 7, 3, 11, 4, 6]], None, exact=False)


def test_sabotage_scripted_compaction_breaks_exactness(monkeypatch):
    model = ScriptedModel(k=4, correct=lambda length: 1, rank=scrambled(0))
    prefixes = [[3], [5, 6, 7], [9, 9]]
    ref = greedy(model, prefixes, 40).tokens
    assert tree_decode(model, prefixes, 40, StaticTree(full(4, 3))).tokens == ref
    monkeypatch.setattr(ScriptedSession, "compact", lambda self, start, path, lengths: self.truncate(lengths))
    assert tree_decode(model, prefixes, 40, StaticTree(full(4, 3))).tokens != ref


@needs_bf16  # without native bf16 instructions the bf16 kernels are others (seen failing on an AVX2-only CPU)
def test_bf16_attention_with_tree_holes_equals_the_path_alone():
    """A tree node's attention skips its siblings' keys (holes in the mask). Summing over keys with masked zeros
    between the visible ones can take another order (vector lanes, bf16 pairs) than the same keys side by side, as a
    greedy step or a block has them: on SmolLM2 at batch 8 that changed one answer of eight before the invariant
    attention packed each query's keys to the left. Its bits must equal the path's alone, at any span (without the
    packing, one node of these differs)."""
    from blockwise.model.invariant import attend

    g = torch.Generator().manual_seed(0)
    B, H, Hkv, Dh, n = 8, 9, 3, 64, 16  # SmolLM2's heads
    parents = [-1] + [int(torch.randint(i, (1,), generator=g)) for i in range(1, n)]
    tree = Tree.from_parents(torch.zeros(1, n, dtype=torch.long), torch.tensor([parents]))
    differing = []
    for prefix in [60, 150, 233, 300]:
        S = prefix + n + 9  # a masked tail too, as a batch's longer rows make
        q = torch.randn(B, H, n, Dh, generator=g).bfloat16()
        k = torch.randn(B, Hkv, S, Dh, generator=g).bfloat16()
        v = torch.randn(B, Hkv, S, Dh, generator=g).bfloat16()
        mask = torch.zeros(B, 1, n, S, dtype=torch.bool)
        mask[..., :prefix] = True
        mask[:, 0, :, prefix:prefix + n] = tree.visible[0]
        out = attend(q, k, v, mask)
        # the values copied per query from other memory layouts: a slice of a longer cache, a transposed one
        roomy = torch.zeros(B, Hkv, S + 40, Dh, dtype=v.dtype)
        roomy[:, :, :S] = v
        assert torch.equal(attend(q, k, roomy[:, :, :S], mask), out)
        assert torch.equal(attend(q, k, v.transpose(2, 3).contiguous().transpose(2, 3), mask), out)
        for node in range(n):
            keys = torch.cat([torch.arange(prefix), tree.visible[0, node].nonzero().squeeze(1) + prefix])
            alone = attend(q[:, :, node:node + 1], k[:, :, keys], v[:, :, keys],
                           torch.ones(B, 1, 1, len(keys), dtype=torch.bool))
            if not torch.equal(out[:, :, node:node + 1], alone):
                differing.append((prefix, node))
    assert differing == []


class ScriptedBudgets:
    """A node-budget policy that follows a script (cycled): greedy steps (1) between trees of several sizes."""

    costs = None

    def __init__(self, budgets):
        self.budgets, self.step = budgets, 0

    def choose(self, batch):
        self.step += 1
        return self.budgets[(self.step - 1) % len(self.budgets)]

    def draft_budget(self, n):
        return n

    def observe_tree(self, expected, k_hat, fed):
        pass

    def start(self):
        pass

    def fed(self, n):
        pass


@pytest.mark.parametrize("script", [[1], [1, 1, 8], [2, 1, 5, 1, 1, 16]])
def test_node_budgets_chosen_per_step_equal_greedy(script):
    """k = "auto" with a tree: any mix of greedy steps (budget 1, which take a light path) and trees of any budget
    gives greedy's output, rows ending at their own pace (EOS, length limit)."""
    model = ScriptedModel(k=4, correct=lambda length: length % 3, eos_id=EOS, eos_at=11, rank=scrambled(5))
    prefixes = [[3], [3, 4, 5, 6], [3, 4, 5, 6, 7, 8, 9, 10]]
    ref = greedy(model, prefixes, 14, eos_id=EOS)
    out = tree_decode(model, prefixes, 14, DynamicTree(16, 3, top=3), eos_id=EOS, policy=ScriptedBudgets(script))
    assert out.tokens == ref.tokens
    assert out.stats.k_chosen[1] > 0 and sum(out.stats.k_chosen) == out.stats.iterations
    real = random_model("tiny", 4, seed=2, head_kind="chain")
    prefixes = [[5, 6], [7], [8, 9, 10]]
    ref = greedy(real, prefixes, 20, eos_id=EOS)
    assert tree_decode(real, prefixes, 20, DynamicTree(16, 3, top=3), eos_id=EOS,
                       policy=ScriptedBudgets(script)).tokens == ref.tokens
