"""Chained heads (kind="chain"): each head sees the token proposed before it. Teacher-forced training and sequential
proposing compute the same thing; decoding with them stays exactly greedy; trained, they accept long blocks."""

import pytest
import torch

from blockwise import BlockwiseModel, HeadsConfig, blockwise, greedy, preset
from blockwise.training import TrainConfig, proposal_loss, train
from conftest import EOS, V, pattern_batch, random_model


def test_teacher_forced_states_equal_the_sequential_proposals():
    """forward(h, given=the proposed tokens) reproduces propose(): training sees what decoding will do."""
    model = random_model("tiny", k=5, seed=3, head_kind="chain")
    heads, base = model.heads, model.base
    h = torch.randn(2, 3, model.cfg.d_model, dtype=torch.float64)
    first = model.scores(h).argmax(-1)  # ŷ1: p1's choice
    logits = heads.propose(h, first, 5)  # (2, 3, 4, V): p2..p5
    chosen = torch.cat([first[..., None], logits.argmax(-1)], dim=-1)  # ŷ1..ŷ5
    states = heads(h, 5, given=chosen[..., :4])  # (2, 3, 5, D): p1..p5
    torch.testing.assert_close(base.project(states[..., 1:, :]), logits)
    torch.testing.assert_close(states[..., 0, :], h)  # p1 is the base itself
    for some in ((2,), (3, 5), (1, 2, 4)):
        torch.testing.assert_close(heads.states(h, some, given=chosen[..., :4]), states[..., [i - 1 for i in some], :])
    assert len(set(chosen[0, 0].tolist())) > 1  # the heads propose different tokens: the comparison has teeth
    # the proposal depends on the token given: a head that ignored it would not be chained
    other = heads.propose(h, (first + 1) % V, 2)
    assert not torch.allclose(other, logits[..., :1, :])


def test_chained_heads_need_their_tokens():
    model = random_model("tiny", k=3, seed=0, head_kind="chain")
    h = torch.randn(4, model.cfg.d_model, dtype=torch.float64)
    with pytest.raises(ValueError, match="need the 2 tokens"):
        model.heads(h, 3)
    with pytest.raises(ValueError, match="need the 1 tokens"):
        model.heads.states(h, (2,))
    with pytest.raises(ValueError, match="p1='identity'"):
        HeadsConfig(num_heads=3, kind="chain", p1="learned")


@torch.no_grad()
def test_chained_random_loss_is_one_of_the_head_losses():
    model = random_model("tiny", k=4, seed=2, head_kind="chain")
    seq, _ = pattern_batch(3, 12, torch.Generator().manual_seed(1), False)
    hidden = model(seq[:, :-1])
    single = [float(proposal_loss(model, hidden, seq[:, 1:], 4, heads=(i,), pad_id=-100)) for i in range(1, 5)]
    assert len(set(round(x, 9) for x in single)) == 4
    mean = float(proposal_loss(model, hidden, seq[:, 1:], 4, pad_id=-100))
    assert mean == pytest.approx(sum(single) / 4)
    for seed in range(6):
        pick = float(proposal_loss(model, hidden, seq[:, 1:], 4, mode="random", pad_id=-100,
                                   generator=torch.Generator().manual_seed(seed)))
        assert min(abs(pick - x) for x in single) < 1e-9


@pytest.mark.parametrize("head_kind", ["paper", "chain"])
@torch.no_grad()  # losses compared as numbers: no graph needed
def test_p1_weight_splits_the_loss_between_p1_and_the_other_heads(head_kind):
    model = random_model("tiny", k=4, seed=2, head_kind=head_kind)
    seq, _ = pattern_batch(3, 12, torch.Generator().manual_seed(1), False)
    hidden = model(seq[:, :-1])
    single = [float(proposal_loss(model, hidden, seq[:, 1:], 4, heads=(i,), pad_id=-100)) for i in range(1, 5)]
    weighted = float(proposal_loss(model, hidden, seq[:, 1:], 4, pad_id=-100, p1_weight=0.3))
    assert weighted == pytest.approx(0.3 * single[0] + 0.7 * sum(single[1:]) / 3)
    for seed in range(4):  # random mode: p1 weighted, one of p2..p4 drawn for the rest
        pick = float(proposal_loss(model, hidden, seq[:, 1:], 4, mode="random", pad_id=-100, p1_weight=0.3,
                                   generator=torch.Generator().manual_seed(seed)))
        assert min(abs(pick - (0.3 * single[0] + 0.7 * x)) for x in single[1:]) < 1e-5  # float32 sums
    # without p1 among the heads (a frozen base) the weight has nothing to weigh
    frozen = float(proposal_loss(model, hidden, seq[:, 1:], 4, pad_id=-100, heads=(2, 3, 4), p1_weight=0.3))
    assert frozen == pytest.approx(sum(single[1:]) / 3)


def test_chained_heads_learn_the_language_and_decode_exactly():
    """Base and heads p2..p4 trained together (mean loss, teacher-forced): long blocks accepted, output greedy's."""
    torch.manual_seed(0)
    cfg = preset("tiny", vocab_size=V)
    model = BlockwiseModel(cfg, HeadsConfig(num_heads=4, d_hidden=32, kind="chain")).double()
    g = torch.Generator().manual_seed(0)

    def batches():
        while True:
            yield pattern_batch(16, 34, g, False)

    def loss_fn(batch):
        seq, _ = batch
        return proposal_loss(model, model(seq[:, :-1]), seq[:, 1:], 4, mode="mean", pad_id=-100)

    train(model, loss_fn, batches(), TrainConfig(steps=250, lr=3e-3, warmup=10), progress=False)
    model.eval()
    seq, _ = pattern_batch(4, 4, torch.Generator().manual_seed(5), False)
    prefixes = [row[: 2 + i % 3].tolist() for i, row in enumerate(seq)]
    ref = greedy(model, prefixes, 30, eos_id=EOS)
    out = blockwise(model, prefixes, 30, k=4, eos_id=EOS)
    assert out.tokens == ref.tokens
    assert out.stats.mean_accepted > 2.5, out.stats.as_dict()


@torch.no_grad()
def test_chained_loss_is_finite_when_a_head_has_no_target():
    """Sentences shorter than k: the far heads have nothing to predict and add 0, not NaN."""
    model = random_model("tiny", k=6, seed=1, head_kind="chain")
    seq, _ = pattern_batch(2, 4, torch.Generator().manual_seed(0), False)  # 3 targets per row, heads up to p6
    loss = proposal_loss(model, model(seq[:, :-1]), seq[:, 1:], 6, pad_id=-100)
    assert torch.isfinite(loss)
