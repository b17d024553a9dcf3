"""blockwise.eval.step_cost: one timing per T through the session protocol, and the session left as it was."""

import torch
from conftest import random_model

from blockwise.eval.step_cost import StepCost, step_cost


def test_step_cost_times_every_t_and_rolls_the_session_back():
    model = random_model(k=3)
    session = model.start(2, 16)
    session.feed(torch.tensor([[3, 4, 5, 6], [7, 8, 9, 10]]))
    session.truncate(torch.tensor([4, 2]))  # ragged rows: each must come back to its own length
    seen = []
    cost = step_cost(session, torch.tensor([[5, 6, 7], [8, 9, 10]]), [2, 3], repeats=3, warmup=1,
                     then=lambda h, best: seen.append((h.shape[1], tuple(best.shape))))
    assert isinstance(cost, StepCost)
    assert sorted(cost.ms) == [1, 2, 3] and all(v > 0 for v in cost.ms.values())
    assert cost.ratio[1] == 1.0 and all(v > 0 for v in cost.ratio.values())
    assert session.lengths.tolist() == [4, 2]
    # ``then`` in every call with T > 1 (warm-up included), never in the 1-token one; p1's argmax at every fed position
    assert seen == [(2, (2, 2))] * 4 + [(3, (2, 3))] * 4
    # the rolled-back session decodes on as if nothing had been measured
    fresh = model.start(2, 16)
    fresh.feed(torch.tensor([[3, 4, 5, 6], [7, 8, 9, 10]]))
    fresh.truncate(torch.tensor([4, 2]))
    torch.testing.assert_close(session.feed(torch.tensor([[11], [12]])), fresh.feed(torch.tensor([[11], [12]])))
