"""Weight-only int8/int4 decoding (model/quant.py, Llama.with_weights): the products are what they claim, every row's
bits are its own, and blockwise decoding (chains, trees, ragged batches) is token for token the quantized model's greedy
decoding."""

import pytest
import torch

from blockwise.decoding import blockwise, greedy
from blockwise.decoding.tree import DynamicTree, StaticTree
from blockwise.model.invariant import cpu_has_bf16
from blockwise.model.quant import QuantizedMatrix, SplitMatrix, check_weights, int4_problem

from test_tree import LLAMA_EOS, LLAMA_PROMPTS, llama_heads, tiny_llama

BITS = [8, 4]


def random_matrix(out: int, inp: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out, inp, generator=g) * torch.rand(out, 1, generator=g)  # rows of different ranges


@pytest.mark.parametrize("bits", BITS)
def test_a_quantized_product_multiplies_its_rounded_rows_by_the_dequantized_matrix(bits):
    w = random_matrix(48, 96, seed=bits)
    q = QuantizedMatrix(w, bits)
    deq = q.dequantize()
    if bits == 8:  # the nearest of 127 levels of its row
        assert (deq - w).abs().le(q.scales[:, None] * 0.51 + 1e-6).all()
    else:
        g = w.view(48, 3, 32)
        span = (g.amax(-1) - g.amin(-1))[..., None] / 15
        assert ((deq.view(48, 3, 32) - g).abs() <= span * 0.51 + 1e-6).all()  # 16 levels between a group's min and max
    x = torch.randn(5, 96, generator=torch.Generator().manual_seed(1)) * torch.tensor([[1.0], [30], [0.01], [3], [1]])
    y = q(x)
    assert y.dtype == x.dtype and y.shape == (5, 48)
    reference = q.rows(x).double() @ deq.double().t()
    scale = reference.abs().amax(-1, keepdim=True)  # rows of very different sizes: compare each to its own
    if bits == 8:  # integer products, a float32 scale at the end
        assert ((y.double() - reference).abs() <= 1e-5 * scale).all()
    else:  # bf16 output rounding
        assert ((y.double() - reference).abs() <= 1e-2 * scale).all()
    exact = x.double() @ w.double().t()
    assert (y.double() - reference).abs().max() < 0.5 * (exact - reference).abs().max()


def test_int8_rounds_each_row_to_its_own_255_levels():
    """Each row is rounded on a grid of its own peak magnitude / 127.5 (8-bit levels over [-peak, peak]), whatever the
    other rows are: a row 1000x smaller than its neighbour keeps its precision; weights take 127 levels."""
    q = QuantizedMatrix(random_matrix(16, 64, seed=3), 8)
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(4)) * torch.tensor([[1.0], [1000], [0.001]])
    rounded = q.rows(x)
    for i in range(3):
        peak = x[i].abs().max()
        assert torch.equal(rounded[i], q.rows(x[i:i + 1])[0])
        levels = rounded[i] / peak * 127.5  # levels at whole multiples of peak / 127.5 (zero is one)
        assert (levels - levels.round()).abs().max() < 1e-3 and levels.unique().numel() <= 256
        assert (rounded[i] - x[i]).abs().max() <= peak / 127.5 * 0.51
    assert q.q.abs().max() == 63 and q.q.unique().numel() <= 127


def test_int4_requantizes_its_own_matrix_unchanged():
    """A matrix already on int4's grid (16 levels per group of 32 with bf16 scale and zero, as llama.cpp's Q4_1 with
    such scales) is kept as it is: quantizing the dequantized matrix again changes nothing."""
    first = QuantizedMatrix(random_matrix(32, 64, seed=5), 4)
    again = QuantizedMatrix(first.dequantize(), 4)
    assert torch.equal(again.dequantize(), first.dequantize())
    assert torch.equal(again.q, first.q)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("bits", BITS)
def test_a_rows_product_has_the_same_bits_alone_in_a_block_and_in_a_batch(bits, threads):
    torch.set_num_threads(threads)  # conftest puts back one thread after the test
    q = QuantizedMatrix(random_matrix(64, 128, seed=7), bits)
    x = torch.randn(9, 128, generator=torch.Generator().manual_seed(2))
    full = q(x)
    for start, size in [(0, 1), (4, 1), (8, 1), (0, 2), (3, 4), (1, 8)]:
        assert torch.equal(q(x[start:start + size]), full[start:start + size]), (start, size)
    assert torch.equal(q(x.view(3, 3, 128)), full.view(3, 3, 64))


def test_bad_quantization_settings_are_refused():
    with pytest.raises(ValueError, match="one of float32, bfloat16, int8, int4"):
        check_weights("int3")
    with pytest.raises(ValueError, match="bits must be 4 or 8"):
        QuantizedMatrix(torch.zeros(16, 32), 2)
    assert int4_problem(16, 48) and "multiple of the group size 32" in int4_problem(16, 48)
    assert int4_problem(8, 64) and "multiple of 16" in int4_problem(8, 64)
    assert int4_problem(16, 64) is None
    with pytest.raises(ValueError, match="multiple of 16"):
        QuantizedMatrix(torch.zeros(8, 64), 4)


def test_channels_apart_are_rounded_on_their_own_grid():
    """``SplitMatrix``: the input channels ``apart`` and the rest are each rounded on a grid of their own per row, so
    one outsized channel no longer coarsens the others; the product is still rounded rows times the dequantized matrix,
    and each row's bits are its own."""
    w = random_matrix(48, 96, seed=11)
    apart = torch.tensor([17, 5])
    split, whole = SplitMatrix(w, apart), QuantizedMatrix(w, 8)
    x = torch.randn(4, 96, generator=torch.Generator().manual_seed(2))
    x[:, 5] *= 1000  # an outlier channel, as the final hidden states of SmolLM2 have
    x[1] *= 0.01
    rounded = split.rows(x)
    rest = torch.ones(96, dtype=torch.bool)
    rest[apart] = False
    for i in range(4):
        peak_rest, peak_apart = x[i, rest].abs().max(), x[i, apart].abs().max()
        assert (rounded[i, rest] - x[i, rest]).abs().max() <= peak_rest / 127.5 * 0.51
        assert (rounded[i, apart] - x[i, apart]).abs().max() <= peak_apart / 127.5 * 0.51
        assert torch.equal(split(x[i:i + 1])[0], split(x)[i])  # a row alone = in a block
    deq = split.dequantize()
    assert deq.shape == w.shape and torch.equal(deq[:, rest], QuantizedMatrix(w[:, rest], 8).dequantize())
    y, reference = split(x).double(), rounded.double() @ deq.double().t()
    assert ((y - reference).abs() <= 1e-5 * reference.abs().amax(-1, keepdim=True)).all()
    # the other channels keep their precision: on one grid per row the outlier's peak sets their rounding
    assert (rounded - x)[:, rest].abs().max() < 0.05 * (whole.rows(x) - x)[:, rest].abs().max()


@pytest.fixture(scope="module")
def hf64():
    transformers = pytest.importorskip("transformers")
    return tiny_llama(transformers, torch.float32, hidden=64, intermediate=128)


def quantized(hf, weights):
    from blockwise.tasks.llama import Llama

    return Llama.from_hf(hf).with_weights(weights)


class Definition:
    """A quantized matrix's product as its definition says: the rows rounded as the kernel rounds them, times the
    dequantized matrix, in float64."""

    def __init__(self, q: QuantizedMatrix) -> None:
        self.q, self.w = q, q.dequantize().double()

    def __call__(self, x: torch.Tensor, prompt: bool = False) -> torch.Tensor:
        return (self.q.rows(x).double() @ self.w.t()).to(x.dtype)


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_quantized_llama_is_the_float_model_with_dequantized_matrices(hf64, weights):
    """float32 activations; the logits are those of the float model whose products are the quantized matrices'
    definition (rounded rows times dequantized matrices, ``Definition``) to the kernels' float rounding; quantization
    moves the logits much more than that rounding, and int8 less than int4."""
    from blockwise.tasks.llama import MATRICES, Llama

    base = quantized(hf64, weights)
    assert base.weights == weights and base.embed.weight.dtype == torch.float32
    assert all(set(layer.quantized) == set(MATRICES) for layer in base.layers)
    assert all(layer.w_qkv.numel() == 0 for layer in base.layers)  # the float matrices are dropped
    with pytest.raises(ValueError, match="quantize"):
        base.cast(torch.bfloat16)
    float_model = Llama.from_hf(hf64).cast(torch.float32, packed=False)
    same = Llama.from_hf(hf64).cast(torch.float32, packed=False)
    for layer, q in zip(same.layers, base.layers):
        layer.quantized = {name: Definition(q.quantized[name]) for name in MATRICES}
    same.quantized_head = Definition(base.quantized_head)
    tokens = torch.tensor([LLAMA_PROMPTS[2] + LLAMA_PROMPTS[0]])
    with torch.no_grad():
        low, high, defined = (m.lm_head(m(tokens)) for m in (base, float_model, same))
    scale = high.abs().max()
    error = {"int8": 1e-5, "int4": 0.05}[weights]  # int8: exact integer sums; int4: bf16 rounding of products
    assert low.dtype == torch.float32 and (low - defined).abs().max() < error * scale
    assert (low - defined).abs().max() < 0.25 * (low - high).abs().max()
    assert 0 < (low - high).abs().max() < {"int8": 0.2, "int4": 0.5}[weights] * scale


@pytest.fixture(scope="module")
def hf192():
    """Wider heads (Dh = 64, grouped): there float32 attention through MKL gives a token other bits in a block than
    alone (seen: 2e-6), which the invariant session's attention must not."""
    transformers = pytest.importorskip("transformers")
    return tiny_llama(transformers, torch.float32, hidden=192, intermediate=128, heads=3, kv=1)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_quantized_hidden_states_do_not_depend_on_what_is_fed_beside_them(hf192, weights, threads):
    """The bits of a token's state are the same fed one at a time (greedy), in blocks (verification) and in a batch
    beside a row of another length: the condition for blockwise == greedy to hold token for token. On 2 threads too
    (the fused attention kernel's float32 sums depend on which thread takes a row there: ``invariant._attend_each``)."""
    torch.set_num_threads(threads)  # conftest puts back one thread after the test
    base = quantized(hf192, weights)
    tokens = torch.randint(0, 48, (2, 80), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cache = base.new_cache(1, 96)
        assert cache.invariant
        base(tokens[:1, :70], cache)
        one = torch.cat([base(tokens[:1, t:t + 1], cache) for t in range(70, 80)], dim=1)
        cache = base.new_cache(1, 96)
        base(tokens[:1, :70], cache)
        block = torch.cat([base(tokens[:1, 70:74], cache), base(tokens[:1, 74:80], cache)], dim=1)
        cache = base.new_cache(2, 96)
        base(tokens[:, :70], cache)
        cache.truncate(torch.tensor([70, 63]))
        batch = base(torch.stack([tokens[0, 70:80], tokens[1, 63:73]]), cache)
    assert torch.equal(one, block)
    assert torch.equal(one, batch[:1])


@pytest.mark.parametrize("weights", ["int8", "int4"])
@pytest.mark.parametrize("kind", ["paper", "chain"])
def test_quantized_blockwise_and_trees_equal_its_greedy(hf64, weights, kind):
    from blockwise.tasks.llama import NativeLM

    lm = NativeLM(quantized(hf64, weights), llama_heads(64, kind, seed=3, dtype=torch.float32))
    ref = [greedy(lm, [p], 30, eos_id=LLAMA_EOS).tokens[0] for p in LLAMA_PROMPTS]
    assert greedy(lm, LLAMA_PROMPTS, 30, eos_id=LLAMA_EOS).tokens == ref
    for k in (2, 4):
        assert blockwise(lm, LLAMA_PROMPTS, 30, k=k, eos_id=LLAMA_EOS).tokens == ref, k
        assert [blockwise(lm, [p], 30, k=k, eos_id=LLAMA_EOS).tokens[0] for p in LLAMA_PROMPTS] == ref, k
    for tree in (StaticTree([(0,), (1,), (0, 0), (0, 1), (0, 0, 0)]), DynamicTree(8, 3, top=3)):
        assert blockwise(lm, LLAMA_PROMPTS, 30, eos_id=LLAMA_EOS, tree=tree).tokens == ref, tree.describe()


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_calibrated_quantized_model_rounds_its_head_apart_and_stays_exact(hf64, weights):
    """With calibration text the output projection rounds the channels of largest calibration magnitude apart
    (``SplitMatrix``, int8 and int4 alike): closer to the float model's logits than one grid per row, and blockwise
    decoding is still its greedy decoding."""
    from blockwise.tasks.llama import APART, Llama, NativeLM

    calibration = torch.tensor([LLAMA_PROMPTS[1] + LLAMA_PROMPTS[3] + LLAMA_PROMPTS[0]])
    calibrated = Llama.from_hf(hf64).with_weights(weights, calibration)
    assert isinstance(calibrated.quantized_head, SplitMatrix) and calibrated.quantized_head.apart.numel() == APART
    assert isinstance(quantized(hf64, weights).quantized_head, QuantizedMatrix)  # no calibration, one grid
    lm = NativeLM(calibrated, llama_heads(64, "chain", seed=3, dtype=torch.float32))
    ref = [greedy(lm, [p], 30, eos_id=LLAMA_EOS).tokens[0] for p in LLAMA_PROMPTS]
    assert greedy(lm, LLAMA_PROMPTS, 30, eos_id=LLAMA_EOS).tokens == ref
    for k in (2, 4):
        assert blockwise(lm, LLAMA_PROMPTS, 30, k=k, eos_id=LLAMA_EOS).tokens == ref, k
    assert blockwise(lm, LLAMA_PROMPTS, 30, eos_id=LLAMA_EOS, tree=DynamicTree(8, 3, top=3)).tokens == ref


@pytest.mark.skipif(not cpu_has_bf16(), reason="CPU without native bfloat16: int4 prompts take no bf16 copies there")
def test_int4_prompts_through_bf16_copies_keep_decoding_exact_and_batch_invariant(hf64):
    """Prompts go through bf16 copies of the dequantized int4 matrices (faster for many rows), decoding through the
    int4 kernel: a prompt's states differ from the kernel's only by rounding, and greedy alone, greedy in a ragged
    batch, blockwise and trees still give the same tokens."""
    from blockwise.tasks.llama import Llama, NativeLM

    copies = Llama.from_hf(hf64).with_weights("int4", prompt_copies=True)
    plain = Llama.from_hf(hf64).with_weights("int4", prompt_copies=False)
    assert copies.prompt_copies and not plain.prompt_copies
    assert all(q.prompt is not None for layer in copies.layers for q in layer.quantized.values())
    assert Llama.from_hf(hf64).with_weights("int8", prompt_copies=True).prompt_copies is False  # int4 only
    tokens = torch.tensor([LLAMA_PROMPTS[2] + LLAMA_PROMPTS[0]])
    with torch.no_grad():
        a, b = copies(tokens), plain(tokens)
    assert not torch.equal(a, b) and (a - b).abs().max() < 0.05 * b.abs().max()
    lm = NativeLM(copies, llama_heads(64, "chain", seed=3, dtype=torch.float32))
    ref = [greedy(lm, [p], 30, eos_id=LLAMA_EOS).tokens[0] for p in LLAMA_PROMPTS]
    assert len({len(p) for p in LLAMA_PROMPTS}) > 1  # a ragged batch: short prompts padded in the prompt's call
    assert greedy(lm, LLAMA_PROMPTS, 30, eos_id=LLAMA_EOS).tokens == ref
    for k in (2, 4):
        assert blockwise(lm, LLAMA_PROMPTS, 30, k=k, eos_id=LLAMA_EOS).tokens == ref, k
    assert blockwise(lm, LLAMA_PROMPTS, 30, eos_id=LLAMA_EOS, tree=DynamicTree(8, 3, top=3)).tokens == ref


def test_quantized_proposals_use_the_quantized_projection(hf64):
    """With a proposal vocabulary the heads' tokens come from an int8 copy of those columns, still only those tokens."""
    from blockwise.tasks.llama import NativeLM

    vocab = torch.arange(0, 48, 3)
    lm = NativeLM(quantized(hf64, "int4"), llama_heads(64, "paper", seed=3, dtype=torch.float32), proposal_vocab=vocab)
    assert lm.q_proposal is not None and lm.q_proposal.shape == (16, 64)
    logits = lm.score_proposals(torch.randn(2, 64))
    assert torch.isfinite(logits[:, vocab]).all() and torch.isinf(logits).sum() == 2 * (48 - 16)
    ref = [greedy(lm, [p], 20, eos_id=None).tokens[0] for p in LLAMA_PROMPTS]
    assert blockwise(lm, LLAMA_PROMPTS, 20, k=3, eos_id=None).tokens == ref


@pytest.mark.parametrize("weights", ["int8", "int4"])
@pytest.mark.parametrize("kind", ["tiny", "tiny-encdec"])
def test_quantized_transformer_blockwise_and_trees_equal_its_greedy(weights, kind):
    """The in-house Transformer quantized (decoder-only and encoder-decoder): blockwise, trees and batches give its
    own greedy output token for token; the float matrices are gone and the logits moved."""
    from conftest import random_model

    model = random_model(kind, k=4, seed=2).float()
    float_logits = model.base.project(torch.randn(3, 32, generator=torch.Generator().manual_seed(0)))
    model.with_weights(weights)
    assert model.weights == weights and model.base.decoder[0].ff.up.weight.numel() == 0
    assert not torch.equal(model.base.project(torch.randn(3, 32, generator=torch.Generator().manual_seed(0))),
                           float_logits)
    with pytest.raises(ValueError, match="already"):
        model.with_weights("int8")
    prefixes = [[2, 5, 9], [2], [2, 7, 7, 3, 11]]
    sources = [[4, 6, 8], [9, 3], [5, 5, 5, 12, 7]] if kind == "tiny-encdec" else None
    ref = [greedy(model, [p], 24, eos_id=1, sources=None if sources is None else [s]).tokens[0]
           for p, s in zip(prefixes, sources or [None] * 3)]
    assert greedy(model, prefixes, 24, eos_id=1, sources=sources).tokens == ref
    for k in (2, 4):
        assert blockwise(model, prefixes, 24, k=k, eos_id=1, sources=sources).tokens == ref, k
    assert blockwise(model, prefixes, 24, eos_id=1, sources=sources, tree=DynamicTree(8, 3, top=3)).tokens == ref


def test_smoothing_keeps_the_function_with_grouped_heads(hf192):
    """With grouped heads (3 query heads share each key-value head) the attention output's channels sharing a value
    channel share its factor: the smoothed float model still computes the same logits."""
    from blockwise.tasks.llama import Llama

    tokens = torch.tensor([LLAMA_PROMPTS[2] + LLAMA_PROMPTS[0]])
    with torch.no_grad():
        reference = Llama.from_hf(hf192).cast(torch.float32, packed=False)
        smoothed = Llama.from_hf(hf192).cast(torch.float32, packed=False).smooth(torch.tensor([LLAMA_PROMPTS[1]]))
        assert not torch.equal(smoothed.layers[0].attn_norm, reference.layers[0].attn_norm)
        assert not torch.equal(smoothed.layers[0].w_out, reference.layers[0].w_out)
        torch.testing.assert_close(smoothed.lm_head(smoothed(tokens)), reference.lm_head(reference(tokens)),
                                   rtol=1e-4, atol=1e-4)


def test_smoothing_keeps_the_function_and_rescues_int8_from_outlier_channels(hf64):
    """``Llama.smooth`` moves outlier input channels into the weights: the float model computes the same logits (to
    float rounding), and its int8 model is much closer to float than the int8 model of the unsmoothed one. The outlier
    is made by hand: channel 5 of every norm weight x40, the rows it meets /40 (the same function in float)."""
    from blockwise.tasks.llama import Llama

    def outlier_model():
        m = Llama.from_hf(hf64).cast(torch.float32, packed=False)
        with torch.no_grad():
            for layer in m.layers:
                for norm, w in ((layer.attn_norm, layer.w_qkv), (layer.mlp_norm, layer.w_gate_up)):
                    norm[5] *= 40
                    w[5] /= 40
        return m

    tokens = torch.tensor([LLAMA_PROMPTS[2] + LLAMA_PROMPTS[0]])
    calibration = torch.tensor([LLAMA_PROMPTS[1] + LLAMA_PROMPTS[3]])
    with torch.no_grad():
        reference = Llama.from_hf(hf64).cast(torch.float32, packed=False)
        want = reference.lm_head(reference(tokens))
        smoothed = outlier_model().smooth(calibration)
        torch.testing.assert_close(smoothed.lm_head(smoothed(tokens)), want, rtol=1e-4, atol=1e-4)
        plain_int8 = outlier_model().with_weights("int8")
        smooth_int8 = outlier_model().with_weights("int8", calibration)
        plain_error = (plain_int8.lm_head(plain_int8(tokens)) - want).abs().max()
        smooth_error = (smooth_int8.lm_head(smooth_int8(tokens)) - want).abs().max()
    assert smooth_error < 0.5 * plain_error, (float(smooth_error), float(plain_error))
    with pytest.raises(ValueError, match="float32"):
        Llama.from_hf(hf64).cast(torch.bfloat16).smooth(calibration)


def test_calibration_text_is_shipped_and_tokenizes():
    from blockwise.tasks.llama import CALIBRATION, calibration_ids

    class Chars:  # a stand-in tokenizer: one id per character
        def encode(self, text):
            return [ord(c) % 64 for c in text]

    assert CALIBRATION.exists() and len(CALIBRATION.read_text().split()) > 200
    ids = calibration_ids(Chars(), limit=300)
    assert ids.shape == (1, 300) and ids.dtype == torch.long
