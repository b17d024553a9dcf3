"""Cached decoding equals the uncached forward, through ragged rows, rollbacks and row selection."""

import pytest
import torch

from blockwise.model import KVCache
from conftest import random_model


@pytest.mark.parametrize("kind", ["tiny", "tiny-encdec"])
def test_cached_equals_uncached_with_rollbacks(kind):
    model = random_model(kind, seed=3)
    g = torch.Generator().manual_seed(0)
    B, T = 3, 14
    seq = torch.randint(2, 24, (B, T), generator=g)
    src = [[5, 6, 7], [8, 9], [3, 4, 5, 6, 7]]
    session = model.start(B, 32, src if model.cfg.encoder_decoder else None)
    # feed in blocks; after each block roll each row back by a different amount and refeed the true tokens
    lengths = torch.zeros(B, dtype=torch.long)
    junk = torch.randint(2, 24, (B, 4), generator=g)
    hidden_at = torch.zeros(B, T, model.cfg.d_model, dtype=torch.float64)
    while int(lengths.min()) < T:
        width = 4
        block = torch.stack([seq[b, lengths[b]:lengths[b] + width] if lengths[b] + width <= T
                             else torch.cat([seq[b, lengths[b]:], junk[b, : lengths[b] + width - T]])
                             for b in range(B)])
        h = session.feed(block)
        keep = torch.tensor([1, 3, 2]).clamp(max=T - lengths)  # ragged acceptance
        for b in range(B):
            hidden_at[b, lengths[b]:lengths[b] + keep[b]] = h[b, : keep[b]]
        lengths = lengths + keep
        session.truncate(lengths)
    if model.cfg.encoder_decoder:
        from blockwise.batching import pad
        ref = torch.cat([model(seq[b:b + 1], pad([src[b]])) for b in range(B)])
    else:
        ref = model(seq)
    torch.testing.assert_close(hidden_at, ref, rtol=1e-9, atol=1e-9)


def test_truncate_is_absolute_and_checked():
    cache = KVCache(n_layers=1, batch_size=2, n_heads=1, capacity=8, head_dim=2)
    cache.advance(5)
    cache.truncate(torch.tensor([2, 4]))
    assert cache.lengths.tolist() == [2, 4]
    cache.truncate(torch.tensor([2, 4]))  # absolute: the same call twice changes nothing
    assert cache.lengths.tolist() == [2, 4]
    with pytest.raises(ValueError, match="one length per row"):
        cache.truncate(torch.tensor([1]))
    with pytest.raises(ValueError, match=r"\[0, 8\]"):
        cache.truncate(torch.tensor([1, 9]))


def test_select_keeps_and_reorders_rows():
    model = random_model("tiny", seed=4)
    seq = torch.randint(2, 24, (3, 6), generator=torch.Generator().manual_seed(1))
    session = model.start(3, 16)
    session.feed(seq[:, :4])
    session.select(torch.tensor([2, 0]))
    h = session.feed(seq[[2, 0], 4:])
    torch.testing.assert_close(h, model(seq[[2, 0]])[:, 4:], rtol=1e-9, atol=1e-9)


def test_empty_batch_is_a_clear_error():
    with pytest.raises(ValueError, match="empty"):
        KVCache(n_layers=1, batch_size=0, n_heads=1, capacity=8, head_dim=2)


def test_bfloat16_spans_are_rounded_up_and_masked():
    """A bfloat16 cache hands out key spans in steps of SPAN_STEP (fewer shapes for oneDNN to build kernels for): the
    mask covers the whole span and hides every key past the ones written, for blocks and for trees."""
    from blockwise.model.cache import SPAN_STEP

    cache = KVCache(1, 2, 1, 200, 4, dtype=torch.bfloat16)
    cache.truncate(torch.tensor([70, 3]))
    slots, _, mask = cache.layout(3)
    assert mask.shape[-1] == 2 * SPAN_STEP
    assert mask.sum(-1)[:, 0].tolist() == [[71, 72, 73], [4, 5, 6]]
    k, _ = cache.write(0, slots, torch.ones(2, 1, 3, 4, dtype=torch.bfloat16), torch.ones(2, 1, 3, 4,
                                                                                        dtype=torch.bfloat16))
    assert k.shape[2] == 2 * SPAN_STEP
    cache.truncate(torch.tensor([198, 3]))
    assert cache.layout(2)[2].shape[-1] == 200  # never past the capacity
    assert KVCache(1, 1, 1, 200, 4).layout(3)[2].shape[-1] == 3  # float32: exact spans (its kernels sum otherwise)


def test_bf16_cache_grows_with_its_spans_and_hands_out_whole_buffers():
    """A bfloat16 cache holds only the slots its spans reached, grown a SPAN_STEP at a time: each layer's keys and
    values over the span are then the whole of that layer's buffer (contiguous: oneDNN's batched product copies them
    otherwise), and growing keeps every written entry."""
    from blockwise.model.cache import SPAN_STEP

    g = torch.Generator().manual_seed(0)
    L, B, H, Dh = 2, 3, 2, 4
    cache = KVCache(L, B, H, 3 * SPAN_STEP + 5, Dh, dtype=torch.bfloat16)
    assert cache.held == SPAN_STEP
    written = {}
    for n in (SPAN_STEP - 2, 5, SPAN_STEP + 10, 55):  # tokens fed per call: spans 64, 128, 192, then the capacity
        slots, _, mask = cache.layout(n)
        for layer in range(L):
            k, v = (torch.randn(B, H, n, Dh, generator=g).bfloat16() for _ in range(2))
            keys, values = cache.write(layer, slots, k, v)
            assert keys.is_contiguous() and values.is_contiguous()
            assert keys.shape[2] == values.shape[2] == mask.shape[-1] == cache.held
            for j, s in enumerate(slots[0].tolist()):
                written[layer, s] = (k[:, :, j], v[:, :, j])
        cache.advance(n)
    assert cache.held == 3 * SPAN_STEP + 5  # the capacity, not past it
    for (layer, s), (k, v) in written.items():
        assert torch.equal(cache.k[layer, :, :, s], k) and torch.equal(cache.v[layer, :, :, s], v)
    assert KVCache(L, B, H, 500, Dh).held == 500  # float32: the whole capacity from the start


@pytest.mark.skipif(not __import__("blockwise.model.invariant", fromlist=["x"]).cpu_has_bf16(),
                    reason="CPU without native bfloat16: batch invariance not claimed")
def test_rounded_spans_keep_every_bit(monkeypatch):
    """Keys past the written ones are masked out, and their zero weights change no bit: a bfloat16 Llama's hidden
    states across spans 1..150 (blocks and single tokens) are the same with exact spans as with rounded ones."""
    import transformers

    from blockwise.model import cache as cache_module
    from blockwise.tasks.llama import Llama

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    model = Llama.from_hf(transformers.LlamaForCausalLM(cfg).eval()).cast(torch.bfloat16)
    tokens = torch.randint(0, 64, (2, 150), generator=torch.Generator().manual_seed(1))

    def states(step: int) -> torch.Tensor:
        monkeypatch.setattr(cache_module, "SPAN_STEP", step)
        cache = model.new_cache(2, 160)
        out, at = [], 0
        with torch.no_grad():
            for width in [5, 1, 3, 1, 1, 4] * 10:  # prompt-free: blocks and single tokens, spans crossing 64 and 128
                if at + width > tokens.shape[1]:
                    break
                out.append(model(tokens[:, at:at + width], cache))
                at += width
        return torch.cat(out, 1)

    step = cache_module.SPAN_STEP
    assert step > 1
    rounded, exact = states(step), states(1)
    assert torch.equal(exact, rounded)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ragged_writes_and_compaction_move_whole_entries(dtype):
    """``write`` at each row's own slots and ``compact`` move entries by indexing (not ``scatter_``, slow in bf16):
    every layer, head and channel of an entry lands where a per-row loop would put it, and nothing else changes."""
    g = torch.Generator().manual_seed(0)
    L, B, H, cap, Dh = 2, 3, 2, 12, 4
    cache = KVCache(L, B, H, cap, Dh, dtype=dtype)
    cache.k.copy_(torch.randn(cache.k.shape, generator=g))
    cache.v.copy_(torch.randn(cache.v.shape, generator=g))
    k_ref, v_ref = cache.k.clone(), cache.v.clone()
    slots = torch.tensor([[2, 3], [5, 6], [0, 1]])  # rows at their own lengths
    for layer in range(L):
        k, v = torch.randn(B, H, 2, Dh, generator=g).to(dtype), torch.randn(B, H, 2, Dh, generator=g).to(dtype)
        cache.write(layer, slots, k, v)
        for b in range(B):
            k_ref[layer, b, :, slots[b]] = k[b]
            v_ref[layer, b, :, slots[b]] = v[b]
    assert torch.equal(cache.k, k_ref) and torch.equal(cache.v, v_ref)
    start, path = torch.tensor([4, 1, 6]), torch.tensor([[0, 2, 3], [0, 1, 2], [0, 3, 5]])  # row 1 keeps its chain
    cache.compact(start, path, start + 3)
    for ref in (k_ref, v_ref):
        for b in range(B):
            ref[:, b, :, start[b] + torch.arange(3)] = ref[:, b, :, start[b] + path[b]].clone()
    assert torch.equal(cache.k, k_ref) and torch.equal(cache.v, v_ref)
    assert cache.lengths.tolist() == [7, 4, 9]


@pytest.mark.parametrize("rows", [[2, 0], [1], [3, 3, 0], [0, 1, 2, 3, 1]])
def test_select_moves_every_kept_rows_entries(rows):
    """``select`` keeps rows in place (moved to the front of the buffers) or, given more rows than it holds, in new
    buffers: either way every kept row's entries up to its length are the old row's, in every layer and head."""
    g = torch.Generator().manual_seed(1)
    cache = KVCache(2, 4, 2, 10, 3, dtype=torch.bfloat16)
    cache.k.copy_(torch.randn(cache.k.shape, generator=g))
    cache.v.copy_(torch.randn(cache.v.shape, generator=g))
    cache.truncate(torch.tensor([5, 7, 3, 6]))
    k, v, lengths = cache.k.clone(), cache.v.clone(), cache.lengths.clone()
    cache.select(torch.tensor(rows))
    assert cache.batch_size == len(rows) and cache.lengths.tolist() == lengths[rows].tolist()
    for new, old in enumerate(rows):
        n = int(lengths[old])
        assert torch.equal(cache.k[:, new, :, :n], k[:, old, :, :n])
        assert torch.equal(cache.v[:, new, :, :n], v[:, old, :, :n])
