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
