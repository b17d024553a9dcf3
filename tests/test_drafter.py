"""The feature-level drafter: its session state drafts what a recomputation from scratch drafts, decoding with it is
exactly greedy, and training it on cached states teaches it the base's continuations (tiny Llama, float64)."""

from __future__ import annotations

import pytest
import torch

from blockwise.config import HeadsConfig
from blockwise.decoding.blockwise import blockwise
from blockwise.decoding.common import prefill
from blockwise.decoding.greedy import greedy
from test_tree import LLAMA_EOS, LLAMA_PROMPTS, LV, tiny_llama

transformers = pytest.importorskip("transformers")


def drafter(seed: int = 3, num_heads: int = 4, scale: float = 0.3):
    from blockwise.model.heads import make_heads

    heads = make_heads(32, HeadsConfig(num_heads=num_heads, d_hidden=48, kind="feature")).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in heads.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * scale)
    return heads.eval()


@pytest.fixture(scope="module")
def base():
    from blockwise.tasks.llama import Llama

    return Llama.from_hf(tiny_llama(transformers))


def reference_drafts(lm, accepted: list[int], given: int, k: int) -> torch.Tensor:
    """Logits (k-1, V) of ŷ2..ŷk recomputed from scratch: the base's states over the accepted tokens, then the
    drafter over the whole sequence, uncached, once per drafted token."""
    d = lm.heads
    states = lm.base(torch.tensor([accepted]))[0]  # (L, D): f_0..f_{L-1}
    nxt = accepted[1:] + [given]
    out = []
    for _ in range(k - 1):
        f_hat = d.step(states[None], torch.tensor([nxt]))[0, -1]
        out.append(d.project(f_hat))
        states = torch.cat([states, f_hat[None]])
        nxt = nxt + [int(out[-1].argmax())]
    return torch.stack(out)


def test_session_drafts_equal_recomputation(base):
    from blockwise.tasks.llama import NativeLM

    lm = NativeLM(base, drafter())
    k = 4
    session, hidden = prefill(lm, LLAMA_PROMPTS, 40, None)
    given = session.scores(hidden).argmax(-1)
    got = session.proposals(hidden, given, k)  # the first draft reads each row's whole prompt
    for b, prompt in enumerate(LLAMA_PROMPTS):
        torch.testing.assert_close(got[b], reference_drafts(lm, prompt, int(given[b]), k))
    # a block per row, accepted to different lengths, then a draft: the drafter reads only the new entries
    seqs = [list(p) for p in LLAMA_PROMPTS]
    g = torch.Generator().manual_seed(0)
    for accept in ([1, 3, 2, 4], [2, 1, 4, 1]):
        block = torch.cat([given[:, None], torch.randint(1, LV, (len(seqs), 3), generator=g)], 1)
        start = session.lengths.clone()
        session.feed(block)
        session.truncate(start + torch.tensor(accept))
        for b, a in enumerate(accept):
            seqs[b] += block[b, :a].tolist()
        given = torch.randint(1, LV, (len(seqs),), generator=g)
        got = session.proposals(None, given, k)
        for b in range(len(seqs)):
            torch.testing.assert_close(got[b], reference_drafts(lm, seqs[b], int(given[b]), k))
    # a greedy step (k = 1) between drafts, then a row drops out
    start = session.lengths.clone()
    session.feed(given[:, None])
    for b in range(len(seqs)):
        seqs[b].append(int(given[b]))
    session.select(torch.tensor([0, 2, 3]))
    seqs = [seqs[0], seqs[2], seqs[3]]
    given = torch.tensor([5, 6, 7])
    got = session.proposals(None, given, 3)
    for b in range(3):
        torch.testing.assert_close(got[b], reference_drafts(lm, seqs[b], int(given[b]), 3))


@pytest.mark.parametrize("k", [2, 4])
def test_blockwise_with_a_drafter_equals_greedy(base, k):
    from blockwise.tasks.llama import NativeLM

    lm = NativeLM(base, drafter())
    for eos in (LLAMA_EOS, None):
        ref = greedy(lm, LLAMA_PROMPTS, 24, eos_id=eos).tokens
        out = blockwise(lm, LLAMA_PROMPTS, 24, k=k, eos_id=eos)
        assert out.tokens == ref


def test_trained_drafter_learns_the_base_and_decodes_exactly(base, tmp_path):
    """Sequences with states from the tiny base, a short training, then: the drafter's chains (judged as decoding
    drafts them) agree with the base's greedy answers, decoding accepts more tokens per call, and the output stays
    greedy's. A random tiny base's continuations cannot be generalised, so it is judged on answers it trained on:
    this checks that training, judging and decoding agree, not how well it generalises (recipes/lm measures that)."""
    from blockwise.tasks.llama import NativeLM
    from blockwise.tasks.lm.distill import sequences_with_features, write_sequences
    from blockwise.tasks.lm.drafter import (chain_agreement, drafter_loss, load_sequences, restricted_projection,
                                            row_batches)

    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(1, LV, (int(n),), generator=g).tolist() for n in torch.randint(2, 8, (32,), generator=g)]
    rows = sequences_with_features(NativeLM(base), prompts, 24, None)
    assert all(h.shape == (len(t) - 1, 32) for t, _, h in rows)
    write_sequences(tmp_path / "shard_00000.safetensors", rows, ["test"] * len(rows))
    data = load_sequences([tmp_path / "shard_00000.safetensors"])
    assert data.answer_positions() == 32 * 24 and data.tokens[0].tolist() == rows[0][0]
    d = drafter(scale=0.1).float()
    weight = base.w_lm_head.detach().t().float()  # (V, D)
    d.bind(torch.nn.Embedding.from_pretrained(base.embed.weight.detach().float()),
           restricted_projection(weight, torch.arange(LV)))
    judged = list(range(16))
    before = chain_agreement(d, data, judged, 4)
    opt = torch.optim.AdamW(d.parameters(), lr=3e-3)
    batches = row_batches(range(32), [len(t) for t in data.tokens], 20 * 32, seed=0)
    torch.manual_seed(0)
    d.train()
    for _ in range(200):
        states, tokens, lengths, prompt = data.batch(next(batches))
        loss, _ = drafter_loss(d, weight, torch.arange(LV), states, tokens, lengths, prompt, noise=0.01, depth=1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    d.eval()
    after = chain_agreement(d, data, judged, 4)
    assert after["top1"]["p2"] > before["top1"]["p2"] + 0.5, (before, after)
    assert after["expected_accepted"]["k4"] > 1.7, after
    lm = NativeLM(base, d.double())
    ref = greedy(lm, prompts[:16], 24).tokens
    out = blockwise(lm, prompts[:16], 24, k=4)
    assert out.tokens == ref
    assert out.stats.mean_accepted > 1.6, out.stats.as_dict()


def test_unrolled_training_pass_equals_drafting(base):
    """Training-time test: depth d of ``unrolled`` at position j is what decoding drafts d steps after the accepted
    position j - d when the drafts before it were right (the true tokens fed), recomputed from scratch."""
    from blockwise.tasks.llama import NativeLM

    lm = NativeLM(base, drafter())
    d = lm.heads
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(1, LV, (2, 14), generator=g)
    states = lm.base(tokens)[:, :-1]  # (B, T-1, D): f_0..f_{T-2}
    outs = d.unrolled(states, tokens, 3)
    torch.testing.assert_close(outs[0], d.sequence(states, tokens))
    for b in range(2):
        for a in (3, 7, 9):  # accepted positions 0..a; drafts at depth 1..3
            feats, nxt = states[b, : a + 1], tokens[b, 1: a + 2].tolist()
            for depth in range(4):
                f_hat = d.step(feats[None], torch.tensor([nxt]))[0, -1]  # predicts f_{a+depth+1}
                torch.testing.assert_close(outs[depth][b, a + depth], f_hat)
                if depth < 3:
                    feats = torch.cat([feats, f_hat[None]])
                    nxt = nxt + [int(tokens[b, a + depth + 2])]  # the true token: the drafts before were right


def test_speculative_sampling_with_a_drafter(base):
    """Sampling drafts each token from the drafter given the one drawn before (DrafterState.begin/extend): with top-k 1
    the model's distribution is a point mass, so the output must be greedy's; at temperature 1 a seed repeats the
    same draws, batch or not, and the tokens follow plain sampling's distribution (first token, two-sample check)."""
    from blockwise.decoding.sampling import Sampling, sample
    from blockwise.tasks.llama import NativeLM

    lm = NativeLM(base, drafter())
    ref = greedy(lm, LLAMA_PROMPTS, 16, eos_id=LLAMA_EOS).tokens
    out = blockwise(lm, LLAMA_PROMPTS, 16, k=4, eos_id=LLAMA_EOS, sampling=Sampling(1.0, top_k=1, seed=0))
    assert out.tokens == ref
    a = blockwise(lm, LLAMA_PROMPTS, 16, k=3, sampling=Sampling(1.0, seed=(5, 6, 7, 8))).tokens
    b = blockwise(lm, LLAMA_PROMPTS[1:2], 16, k=3, sampling=Sampling(1.0, seed=(6,))).tokens
    assert a[1] == b[0] and a != ref
    # the second token of a row after prompt 0, over many seeds: speculative vs plain sampling
    n = 300
    prompts = [LLAMA_PROMPTS[0]] * n
    spec = blockwise(lm, prompts, 3, k=3, sampling=Sampling(1.0, seed=tuple(range(n)))).tokens
    plain = sample(lm, prompts, 3, Sampling(1.0, seed=tuple(range(n, 2 * n)))).tokens
    count = torch.zeros(2, LV)
    for i, rows in enumerate((spec, plain)):
        for r in rows:
            count[i, r[1]] += 1
    expected = count.sum(0, keepdim=True) / 2
    keep = expected[0] >= 5
    chi2 = float(((count[:, keep] - expected[:, keep]) ** 2 / expected[:, keep]).sum())
    assert chi2 < 3 * int(keep.sum()) + 10, chi2  # loose: a broken draft/accept rule is far off


def test_tree_speculative_sampling_with_a_drafter(base, monkeypatch):
    """A dynamic tree drafted by the drafter, judged by recursive rejection: with top-k 1 the output is greedy's; a
    row's draws are its own (batch or alone); the first two tokens after a prompt follow plain sampling's joint
    distribution (two-sample chi-square over 600 seeded rows each), and a rule that keeps a tree's first child
    whenever its token has any mass fails that check."""
    import blockwise.decoding.sampling as sampling_module
    from blockwise.decoding.sampling import Sampling, sample
    from blockwise.decoding.tree import DynamicTree
    from blockwise.tasks.llama import NativeLM

    lm = NativeLM(base, drafter(scale=0.5))
    tree = DynamicTree(8, 3, top=2)
    ref = greedy(lm, LLAMA_PROMPTS, 16, eos_id=LLAMA_EOS).tokens
    out = blockwise(lm, LLAMA_PROMPTS, 16, eos_id=LLAMA_EOS, tree=tree, sampling=Sampling(1.0, top_k=1, seed=0))
    assert out.tokens == ref
    a = blockwise(lm, LLAMA_PROMPTS, 16, tree=tree, sampling=Sampling(1.0, seed=(5, 6, 7, 8))).tokens
    b = blockwise(lm, LLAMA_PROMPTS[1:2], 16, tree=tree, sampling=Sampling(1.0, seed=(6,))).tokens
    assert a[1] == b[0] and a != ref

    n, T = 600, 0.5
    prompts = [LLAMA_PROMPTS[0]] * n
    plain = sample(lm, prompts, 2, Sampling(T, seed=tuple(range(n, 2 * n)))).tokens

    def chi2_against_plain() -> tuple[float, float]:
        """(statistic, bound): the two-sample chi-square of the first two tokens, and a bound it exceeds only when
        the distributions differ (mean + 4 sd of a chi-square with as many cells)."""
        spec = blockwise(lm, prompts, 2, tree=tree, sampling=Sampling(T, seed=tuple(range(n)))).tokens
        pairs = sorted({tuple(r[:2]) for r in spec + plain})
        count = torch.zeros(2, len(pairs))
        for i, rows in enumerate((spec, plain)):
            for r in rows:
                count[i, pairs.index(tuple(r[:2]))] += 1
        expected = count.sum(0, keepdim=True) / 2
        keep = expected[0] >= 5
        cells = int(keep.sum())
        stat = float(((count[:, keep] - expected[:, keep]) ** 2 / expected[:, keep]).sum())
        return stat, cells + 4 * (2 * cells) ** 0.5 + 10

    stat, bound = chi2_against_plain()
    assert stat < bound, (stat, bound)
    monkeypatch.setattr(sampling_module, "accept_draft", lambda p, q, u: p > 0)  # broken: keeps any child with mass
    stat, bound = chi2_against_plain()
    assert stat > bound, (stat, bound)


def test_tree_drafts_equal_recomputation_and_tree_decoding_is_exact(base):
    """A dynamic tree drafted by the feature drafter: every node's children are what drafting that node's path from
    scratch proposes (the node's entry sees the true entries, its ancestors and itself, never a sibling's branch); and
    tree decoding with the drafter (static and dynamic trees, EOS) equals greedy."""
    from blockwise.decoding.tree import DynamicTree, StaticTree
    from blockwise.tasks.llama import NativeLM

    lm = NativeLM(base, drafter(num_heads=5))
    session, hidden = prefill(lm, LLAMA_PROMPTS, 60, None)
    B = len(LLAMA_PROMPTS)
    root = session.scores(hidden).argmax(-1)[:, None]  # (B, 1)
    h = hidden[:, None]
    # a tree drafted depth by depth as the tree builders do: root; two children; three grandchildren under them
    s2, l2 = session.draft(h, h, root, 2)
    children = torch.tensor([[5, 9]]).expand(B, 2)
    s3, l3 = session.draft(h, s2.expand(B, 2, -1), children, 3)
    under = [0, 0, 1]
    grand = torch.tensor([[7, 11, 13]]).expand(B, 3)
    s4, l4 = session.draft(h, s3[:, under], grand, 4)
    for b, prompt in enumerate(LLAMA_PROMPTS):
        r = int(root[b, 0])
        torch.testing.assert_close(l2[b, 0], reference_drafts_forced(lm, prompt, [r]))
        for j in range(2):
            torch.testing.assert_close(l3[b, j], reference_drafts_forced(lm, prompt, [r, int(children[b, j])]))
        for j, p in enumerate(under):
            path = [r, int(children[b, p]), int(grand[b, j])]
            torch.testing.assert_close(l4[b, j], reference_drafts_forced(lm, prompt, path))
    # a dynamic tree, and tree decoding = greedy
    t = DynamicTree(12, 3, top=3).build(session, session.scores(hidden), hidden)
    assert t.tokens.shape == (B, 12)
    for eos in (LLAMA_EOS, None):
        ref = greedy(lm, LLAMA_PROMPTS, 20, eos_id=eos).tokens
        for shape in (DynamicTree(10, 4, top=3), StaticTree([(0,), (1,), (0, 0), (1, 0), (0, 0, 0)])):
            assert blockwise(lm, LLAMA_PROMPTS, 20, eos_id=eos, tree=shape).tokens == ref


def reference_drafts_forced(lm, accepted: list[int], path: list[int]) -> torch.Tensor:
    """Logits (V,) the drafter gives for the children of the last node of ``path`` (root ŷ1 first), drafting along
    the path from scratch."""
    d = lm.heads
    states = lm.base(torch.tensor([accepted]))[0]
    nxt = accepted[1:] + [path[0]]
    for token in path[1:] + [None]:
        f_hat = d.step(states[None], torch.tensor([nxt]))[0, -1]
        if token is None:
            return d.project(f_hat)
        states = torch.cat([states, f_hat[None]])
        nxt = nxt + [token]


@pytest.mark.skipif(not __import__("blockwise.model.invariant", fromlist=["x"]).cpu_has_bf16(),
                    reason="CPU without native bfloat16: batch invariance not claimed")
def test_drafter_in_bfloat16_equals_greedy():
    """In batch-invariant bfloat16 the drafter (in bfloat16 too) changes nothing but the calls: chains and trees."""
    from blockwise.decoding.tree import DynamicTree
    from blockwise.model.heads import make_heads
    from blockwise.tasks.llama import Llama, NativeLM

    hf = tiny_llama(transformers, torch.float32, hidden=192, intermediate=1536, heads=6, kv=2, init=0.1)
    d = make_heads(192, HeadsConfig(num_heads=4, d_hidden=64, kind="feature"))
    lm = NativeLM(Llama.from_hf(hf).cast(torch.bfloat16), d.to(torch.bfloat16))
    ref = greedy(lm, LLAMA_PROMPTS, 24, eos_id=LLAMA_EOS).tokens
    assert blockwise(lm, LLAMA_PROMPTS, 24, k=4, eos_id=LLAMA_EOS).tokens == ref
    assert blockwise(lm, LLAMA_PROMPTS, 24, eos_id=LLAMA_EOS, tree=DynamicTree(8, 3, top=2)).tokens == ref


@pytest.mark.skipif(not __import__("blockwise.model.invariant", fromlist=["x"]).cpu_has_bf16(),
                    reason="CPU without native bfloat16: no packed bf16 kernel, batch invariance not claimed")
def test_bfloat16_drafter_packs_its_matrices_and_drafts_each_row_alone_or_batched_alike(monkeypatch):
    """A bf16 session packs the drafter's matrices for oneDNN (``FeatureDrafter.open``); a row's drafts then have the
    same bits alone as beside other rows, and stay close to the plain kernels' drafts."""
    from blockwise.model.heads import make_heads
    from blockwise.tasks.llama import MATRICES, Llama, NativeLM

    hf = tiny_llama(transformers, torch.float32, hidden=192, intermediate=1536, heads=6, kv=2, init=0.1)
    d = make_heads(192, HeadsConfig(num_heads=4, d_hidden=64, kind="feature"))
    lm = NativeLM(Llama.from_hf(hf).cast(torch.bfloat16), d.to(torch.bfloat16))

    def drafts(prompts):
        session, hidden = prefill(lm, prompts, 40, None)
        return session.proposals(hidden, session.scores(hidden).argmax(-1), 4)

    together = drafts(LLAMA_PROMPTS)
    assert set(lm.heads.packed) == {*MATRICES, "fuse"}
    for b, prompt in enumerate(LLAMA_PROMPTS):
        assert torch.equal(drafts([prompt])[0], together[b])
    monkeypatch.setattr("blockwise.model.heads.drafter.pack", lambda w, out_in: None)  # no oneDNN: F.linear
    plain = drafts(LLAMA_PROMPTS)
    assert not lm.heads.packed
    finite = together.isfinite()
    assert torch.equal(finite, plain.isfinite())
    torch.testing.assert_close(together[finite], plain[finite], atol=0.1, rtol=0.05)


def test_float32_drafter_decodes_with_packed_copies_and_trains_without(monkeypatch):
    """A float32 session packs the drafter's matrices too (``FeatureDrafter.open``) and its cached steps multiply by
    them: its drafts stay close to the plain kernels', and decoding stays exact. Training passes (no cache) never read
    the copies, which hold the weights as they were at ``open``: changing the weights after a decode changes what
    ``sequence`` computes at once."""
    from blockwise.model.heads import make_heads
    from blockwise.tasks.llama import MATRICES, Llama, NativeLM

    hf = tiny_llama(transformers, torch.float32, hidden=192, intermediate=1536, heads=6, kv=2, init=0.1)
    torch.manual_seed(0)
    d = make_heads(192, HeadsConfig(num_heads=4, d_hidden=64, kind="feature"))
    lm = NativeLM(Llama.from_hf(hf).cast(torch.float32), d)

    def drafts():
        session, hidden = prefill(lm, LLAMA_PROMPTS, 40, None)
        return session.proposals(hidden, session.scores(hidden).argmax(-1), 4)

    if not torch.backends.mkldnn.is_available():
        pytest.skip("this PyTorch build has no oneDNN: nothing to pack")
    packed = drafts()
    assert set(lm.heads.packed) == {*MATRICES, "fuse"}
    assert blockwise(lm, LLAMA_PROMPTS, 24, k=4, eos_id=LLAMA_EOS).tokens == \
        greedy(lm, LLAMA_PROMPTS, 24, eos_id=LLAMA_EOS).tokens
    features, tokens = torch.randn(2, 5, 192), torch.randint(0, LV, (2, 6))
    with torch.no_grad():
        before = lm.heads.sequence(features, tokens)
        lm.heads.layer.w_down.mul_(2.0)  # a training update after the decode
        after = lm.heads.sequence(features, tokens)
        lm.heads.layer.w_down.div_(2.0)
    assert not torch.allclose(before, after)  # the training pass reads the weights, not the stale packed copies
    monkeypatch.setattr("blockwise.model.heads.drafter.pack", lambda w, out_in: None)  # no oneDNN: the plain kernels
    plain = drafts()
    assert not lm.heads.packed
    finite = packed.isfinite()
    assert torch.equal(finite, plain.isfinite())
    torch.testing.assert_close(packed[finite], plain[finite], atol=1e-3, rtol=1e-3)


def test_the_shipped_drafter_is_the_default_and_the_chained_heads_stay_loadable():
    """generate's default heads for SmolLM2 are the shipped feature-level drafter; 'chain' and 'drafter' name the two
    shipped files wherever a heads path is taken (the CLI's --heads, ``blockwise.lm.load(heads=…)``)."""
    from blockwise.cli_generate import SMOLLM2_D_MODEL, checked_heads
    from blockwise.tasks.lm import heads_io

    assert heads_io.DEFAULT_HEADS == heads_io.heads_file("drafter") == heads_io.DRAFTER_ASSET
    assert heads_io.heads_file("chain") == heads_io.ASSET
    drafter, vocab = checked_heads("drafter", "auto", smollm2=True)
    assert drafter.cfg.kind == "feature" and drafter.d_model == SMOLLM2_D_MODEL and len(vocab) == 4096
    meta = heads_io.read_meta(heads_io.DRAFTER_ASSET)
    expected = meta["metrics"]["expected_accepted"]  # k = auto's prior: held-out E[k̂], rising with k
    assert [expected[f"k{k}"] for k in range(1, 7)] == sorted(expected[f"k{k}"] for k in range(1, 7))
    assert expected["k4"] > 2.5
    chain, _ = checked_heads("chain", 4, smollm2=True)
    assert chain.cfg.kind == "chain" and chain.num_heads == 6


def test_split_rows_and_proposal_classes():
    """The npz layout (rows end to end + lengths) splits back exactly; the proposal classes are the most frequent
    answer tokens (prompt tokens not counted), sorted, with a remap that inverts them and their projection rows."""
    import numpy as np

    from blockwise.tasks.lm import drafter as dt

    rows = [[5, 6, 7], [], [1], [9, 9]]
    ids = np.array([t for r in rows for t in r], dtype=np.uint16)
    assert dt.split_rows(ids, np.array([len(r) for r in rows])) == rows
    # prompts of length 2; answers: [3, 3, 4] and [4, 3, 8]; token 7 appears in a prompt only
    data = dt.Sequences([torch.tensor([7, 7, 3, 3, 4]), torch.tensor([7, 1, 4, 3, 8])], [None, None], [2, 2])
    weight = torch.arange(10 * 2, dtype=torch.float32).view(10, 2)
    vocab, remap, classes_w, coverage = dt.proposal_classes(weight, data, [0, 1], size=2)
    assert vocab.tolist() == [3, 4] and coverage == pytest.approx(5 / 6)  # float32 counts
    assert remap.tolist() == [-1, -1, -1, 0, 1, -1, -1, -1, -1, -1]
    assert torch.equal(classes_w, weight[[3, 4]])
    vocab, _, _, coverage = dt.proposal_classes(weight, data, [0, 1], size=100)  # no more classes than tokens seen
    assert vocab.tolist() == [3, 4, 8] and coverage == 1.0


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_drafter_of_a_quantized_base_is_quantized_and_decoding_stays_exact(weights):
    """A quantized base gets a quantized copy of the drafter (its layer's four matrices at the base's bits, int8
    where int4 does not take a shape; the heads passed in untouched): drafts close to the float drafter's, and
    chains and trees still give the quantized base's greedy output."""
    from blockwise.decoding.tree import DynamicTree
    from blockwise.model.heads import make_heads
    from blockwise.model.quant import BITS
    from blockwise.tasks.llama import MATRICES, Llama, NativeLM

    hf = tiny_llama(transformers, torch.float32, hidden=64, intermediate=128, heads=2, kv=1, init=0.1)
    d = make_heads(64, HeadsConfig(num_heads=4, d_hidden=64, kind="feature"))
    with torch.no_grad():
        for p in d.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    lm = NativeLM(Llama.from_hf(hf).with_weights(weights), d)
    layer = lm.heads.layer
    assert lm.heads is not d and not d.layer.quantized and set(layer.quantized) == set(MATRICES)
    assert {q.bits for q in layer.quantized.values()} == {BITS[weights]}
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(2))
    for name in MATRICES:
        exact, got = x @ getattr(d.layer, name).detach(), layer.quantized[name](x)
        assert not torch.equal(got, exact) and (got - exact).abs().max() < 0.1 * exact.abs().max()
    ref = greedy(lm, LLAMA_PROMPTS, 24, eos_id=LLAMA_EOS).tokens
    assert blockwise(lm, LLAMA_PROMPTS, 24, k=4, eos_id=LLAMA_EOS).tokens == ref
    assert blockwise(lm, LLAMA_PROMPTS, 24, eos_id=LLAMA_EOS, tree=DynamicTree(8, 3, top=2)).tokens == ref
