"""Greedy decoding's hidden states (the self-distillation inputs) equal an uncached forward's at the same positions."""

import pytest
import torch

from blockwise import greedy
from conftest import random_model

PREFIXES = [[2, 5, 9], [2, 7], [2, 3, 11, 4, 6], [2, 15, 8, 8]]


def early_eos(model, prefixes, max_new, sources) -> int:
    """A token that ends some rows after a step or more and never comes in another: rows leave at different times."""
    rows = greedy(model, prefixes, max_new, sources=sources).tokens
    for t in sorted({t for row in rows for t in row}):
        stops = [row.index(t) if t in row else None for row in rows]
        if None in stops and any(s is not None and s >= 1 for s in stops):
            return t
    raise AssertionError(f"no such token in {rows}: choose another seed")


@pytest.mark.parametrize("kind,seed", [("tiny", 7), ("tiny-encdec", 4)])
def test_greedy_hidden_states_equal_the_uncached_forward(kind, seed):
    model = random_model(kind, k=2, seed=seed)
    sources = [[3 + i, 9, 4 + i, 1] for i in range(len(PREFIXES))] if model.cfg.encoder_decoder else None
    eos = early_eos(model, PREFIXES, 12, sources)
    ref = greedy(model, PREFIXES, 12, eos_id=eos, sources=sources)
    out = greedy(model, PREFIXES, 12, eos_id=eos, sources=sources, return_hidden=True)
    assert out.tokens == ref.tokens and out.stats.as_dict() == ref.stats.as_dict() and ref.hidden is None
    lengths = [len(t) for t in out.tokens]
    assert min(lengths) < max(lengths) == 12  # some rows stopped early, so rows left the batch mid-way
    for row, (prefix, tokens) in enumerate(zip(PREFIXES, out.tokens)):
        seq = torch.tensor([prefix + tokens])
        src = torch.tensor([sources[row]]) if sources else None
        full = model(seq, src)[0]  # (T, D), no cache
        # the state at position t chose token t+1: the answer's j-th token came from position len(prefix) - 1 + j
        expected = full[len(prefix) - 1: len(prefix) - 1 + len(tokens)]
        assert out.hidden[row].dtype == torch.float64 and out.hidden[row].shape == expected.shape
        torch.testing.assert_close(out.hidden[row], expected, rtol=0, atol=1e-10)
        assert model.scores(out.hidden[row]).argmax(-1).tolist() == tokens


def test_distillation_rows_are_greedy_rows_in_float16():
    from blockwise.tasks.lm.distill import greedy_with_hidden

    model = random_model("tiny", k=2, seed=7)
    eos = early_eos(model, PREFIXES, 10, None)
    out = greedy(model, PREFIXES, 10, eos_id=eos, return_hidden=True)
    rows = greedy_with_hidden(model, PREFIXES, 10, eos)
    assert [tokens for tokens, _ in rows] == out.tokens
    for (_, hidden), ref in zip(rows, out.hidden):
        assert hidden.dtype == torch.float16 and torch.equal(hidden, ref.half())
