"""Candidate trees through the Hugging Face adapter: a node's hidden state is its root path's, fed as a plain block
(so the 4-D mask hides siblings, other rows' slots and holes, and position_ids follow the depth); compaction leaves the
cache as if the accepted path had been fed as a block; tree_decode equals greedy; the native Llama agrees; models that
cannot apply a custom 4-D mask refuse. Tiny random LlamaConfig models in float64, so equality holds to ~1e-12."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from blockwise import HeadsConfig, greedy  # noqa: E402
from blockwise.decoding.common import prefill  # noqa: E402
from blockwise.decoding.tree import DynamicTree, StaticTree, Tree, tree_decode  # noqa: E402
from blockwise.model.heads import Heads, make_heads as new_heads  # noqa: E402
from blockwise.tasks.hf import HFCausalLM, HFSession  # noqa: E402
from blockwise.tasks.llama import Llama, NativeLM  # noqa: E402

V, EOS, PAD = 48, 1, 0
PROMPTS = [[5, 9, 3, 17], [2, 30], [11, 4, 6, 20, 8, 13, 7], [40, 41, 42]]  # ragged: short rows hold holes
CAPACITY = 64
TREES = [StaticTree([(0,), (1,), (2,), (0, 0), (1, 0), (0, 1), (0, 0, 0)]), DynamicTree(10, 3, top=3)]


def tiny_llama(attn: str = "sdpa", config=transformers.LlamaConfig, model=transformers.LlamaForCausalLM, **extra):
    torch.manual_seed(0)
    cfg = config(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=128, rope_theta=10000.0, tie_word_embeddings=True,
                 bos_token_id=2, eos_token_id=EOS, pad_token_id=PAD, initializer_range=0.4,
                 attn_implementation=attn, **extra)
    return model(cfg).double().eval()


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def hf_model(request):
    return tiny_llama(request.param)


def make_heads(kind: str, seed: int) -> Heads:
    """Zero-initialised heads (seed 0) repeat p1's ranking, which this model's greedy output often follows; random
    ones wander."""
    heads = new_heads(32, HeadsConfig(num_heads=4, d_hidden=16, kind=kind)).double()
    if seed:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in heads.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    return heads.eval()


def random_tree(B: int, N: int, seed: int) -> Tree:
    """A different random tree per row (node i's parent is any earlier node), random tokens."""
    g = torch.Generator().manual_seed(seed)
    parents = [[-1] + [int(torch.randint(0, i, (1,), generator=g)) for i in range(1, N)] for _ in range(B)]
    return Tree.from_parents(torch.randint(3, V, (B, N), generator=g), torch.tensor(parents))


def root_path(tree: Tree, b: int, i: int) -> list[int]:
    """Node i's tokens from the root down (its ancestors by depth, then itself)."""
    nodes = tree.visible[b, i].nonzero()[:, 0].tolist()
    return [int(tree.tokens[b, n]) for n in sorted(nodes, key=lambda n: int(tree.depth[b, n]))]


def fresh_hidden(lm, tokens: list[int]) -> torch.Tensor:
    """The last hidden state of ``tokens`` fed as one plain block to a new one-row session."""
    return lm.start(1, CAPACITY).feed(torch.tensor([tokens]))[0, -1]


def tree_error(lm, tree: Tree) -> float:
    """Largest difference between each node's hidden state, fed in a tree after the ragged prompts, and its root path
    fed as a plain block after its own prompt."""
    session, _ = prefill(lm, PROMPTS, CAPACITY, None)
    hidden = session.feed(tree.tokens, tree)
    return max(float((hidden[b, i] - fresh_hidden(lm, PROMPTS[b] + root_path(tree, b, i))).abs().max())
               for b in range(len(PROMPTS)) for i in range(tree.nodes))


def tolerance(hf_model) -> float:
    """sdpa: float64 throughout. Eager attention takes its softmax in float32 (``eager_attention_forward``), and over
    rows of another length (masked slots add exact zeros, but regroup the sum): float32 rounding."""
    return 1e-12 if hf_model.config._attn_implementation == "sdpa" else 1e-5


def test_a_node_sees_its_root_path_only(hf_model):
    lm = HFCausalLM(hf_model)
    assert tree_error(lm, random_tree(len(PROMPTS), 9, seed=1)) < tolerance(hf_model)


def test_a_causal_mask_fails_the_node_test(hf_model, monkeypatch):
    """Teeth for the test above: with a plain causal block mask (siblings visible) nodes off the first chain differ."""
    def causal(self, tree):
        T = tree.tokens.shape[1]
        sees = torch.cat([(self.slot_pos >= 0)[:, None, :].expand(-1, T, -1),
                          torch.ones(T, T, dtype=torch.bool).tril().expand(len(self.lengths), T, T)], dim=2)
        return torch.zeros(sees.shape, dtype=torch.float64).masked_fill(~sees, torch.finfo(torch.float64).min)[:, None]

    monkeypatch.setattr(HFSession, "tree_mask", causal)
    assert tree_error(HFCausalLM(hf_model), random_tree(len(PROMPTS), 9, seed=1)) > 1e-3


def test_compact_leaves_the_path_as_a_block(hf_model):
    """Keep a different path of different length per row, then feed on: the same hidden states as a fresh feed of
    prompt + path + new tokens. Slots nobody owns any more are cropped."""
    lm = HFCausalLM(hf_model)
    tree = Tree.from_parents(torch.arange(10, 16).repeat(4, 1), torch.tensor([[-1, 0, 0, 1, 2, 4]] * 4))
    # paths in node ids (depth 0..3): 0-2-4-5, 0-1-3 (+ pad), 0-2-4-5 cut to 2, the root alone
    path = torch.tensor([[0, 2, 4, 5], [0, 1, 3, 3], [0, 2, 4, 5], [0, 1, 2, 3]])
    keep = torch.tensor([4, 3, 2, 1])
    session, _ = prefill(lm, PROMPTS, CAPACITY, None)
    start = session.lengths.clone()
    session.feed(tree.tokens, tree)
    session.compact(start, path, start + keep)
    assert session.lengths.tolist() == (start + keep).tolist()
    assert session.cache.get_seq_length() == session.slot_pos.shape[1] == max(map(len, PROMPTS)) + 4
    new = torch.tensor([[20, 21]] * 4)
    hidden = session.feed(new)
    for b in range(4):
        kept = tree.tokens[b, path[b, :keep[b]]].tolist()
        ref = lm.start(1, CAPACITY).feed(torch.tensor([PROMPTS[b] + kept + [20, 21]]))[0, -2:]
        torch.testing.assert_close(hidden[b], ref, rtol=0, atol=tolerance(hf_model))


@pytest.mark.parametrize("tree", TREES, ids=["static", "dynamic"])
@pytest.mark.parametrize("kind,seed", [("paper", 0), ("chain", 7)])
def test_tree_decode_equals_greedy(hf_model, tree, kind, seed, monkeypatch):
    lm = HFCausalLM(hf_model, make_heads(kind, seed))
    moved = []  # rows whose accepted path left the first chain: compact really moved entries
    compact = HFSession.compact

    def counting(self, start, path, lengths):
        moved.extend(bool((path[b, :k] != torch.arange(k)).any()) for b, k in enumerate((lengths - start).tolist()))
        compact(self, start, path, lengths)

    monkeypatch.setattr(HFSession, "compact", counting)
    ref = greedy(lm, PROMPTS, 40, eos_id=EOS).tokens
    out = tree_decode(lm, PROMPTS, 40, tree, eos_id=EOS)
    assert out.tokens == ref
    if seed == 0:  # heads that get accepted, off the first branch too
        assert sum(out.stats.block_sizes[2:]) > 0 and any(moved), (out.stats.as_dict(), sum(moved))


def test_tree_hidden_states_equal_the_native_llama():
    hf = tiny_llama("sdpa")
    tree = random_tree(len(PROMPTS), 9, seed=2)
    hidden = []
    for lm in (HFCausalLM(hf), NativeLM(Llama.from_hf(hf))):
        session, _ = prefill(lm, PROMPTS, CAPACITY, None)
        hidden.append(session.feed(tree.tokens, tree))
    torch.testing.assert_close(hidden[0], hidden[1], rtol=0, atol=1e-12)


def test_models_that_cannot_apply_a_tree_mask_refuse(monkeypatch):
    tree = random_tree(1, 3, seed=3)
    hf = tiny_llama("sdpa")
    monkeypatch.setattr(hf.config, "_attn_implementation", "flash_attention_2")
    session = HFCausalLM(hf).start(1, CAPACITY)
    with pytest.raises(ValueError, match="attention implementation 'flash_attention_2'"):
        session.feed(tree.tokens, tree)
    mistral = tiny_llama("sdpa", transformers.MistralConfig, transformers.MistralForCausalLM, sliding_window=16)
    session = HFCausalLM(mistral).start(1, CAPACITY)
    with pytest.raises(ValueError, match="sliding_window=16"):
        session.feed(tree.tokens, tree)
