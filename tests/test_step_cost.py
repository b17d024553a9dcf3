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


def test_interleaved_timing_alternates_methods_on_every_group():
    """The benchmark loop runs every method on a group before the next group, in reverse order every other group, and
    sums each method's time and tokens over the groups of a repeat; the outputs and stats are the last repeat's. Rates
    are each repeat's tokens over its own seconds (sampled lengths differ between repeats)."""
    from types import SimpleNamespace

    from blockwise.eval.timing import interleaved, paired_ratio, rates

    calls = []

    def method(name):
        def run(group, r, g):
            calls.append((r, g, name))
            if name == "theirs":
                return [[r, g]], None
            return SimpleNamespace(tokens=[[name, r, g]], stats=f"{name}{r}{g}")
        return run

    runs = {"a": method("a"), "b": method("b"), "theirs": method("theirs")}
    times, outputs, stats, counts = interleaved(runs, ["g0", "g1", "g2"], repeats=2)
    assert calls[:6] == [(0, 0, "a"), (0, 0, "b"), (0, 0, "theirs"), (0, 1, "theirs"), (0, 1, "b"), (0, 1, "a")]
    assert calls[9:12] == [(1, 0, "theirs"), (1, 0, "b"), (1, 0, "a")]
    assert len(calls) == 18 and all(len(t) == 2 and min(t) >= 0 for t in times.values())
    assert outputs["a"] == [["a", 1, 0], ["a", 1, 1], ["a", 1, 2]] and outputs["theirs"] == [[1, 0], [1, 1], [1, 2]]
    assert stats["b"] == ["b10", "b11", "b12"] and stats["theirs"] == [None] * 3
    assert counts["a"] == [9, 9] and counts["theirs"] == [6, 6]  # tokens per repeat: 3 rows of 3 / of 2
    rate = rates({"a": [2.0, 4.0], "b": [1.0, 1.0]}, {"a": [10, 10], "b": [4, 6]})
    assert rate == {"a": [5.0, 2.5], "b": [4.0, 6.0]}
    assert paired_ratio(rate["a"], rate["b"]) == (5.0 / 4.0 + 2.5 / 6.0) / 2  # the median of 2: their mean


def test_the_avx2_imitation_caps_fbgemm_too(monkeypatch):
    """int8 products run on FBGEMM, which reads its own variable: a timing under ``FBGEMM_ENABLE_INSTRUCTIONS`` alone
    is labelled imitated, and cached costs are keyed by it (where it is unset, keys stay as they were)."""
    from blockwise import diskcache
    from blockwise.eval.timing import IMITATION, cpu_label

    for name in IMITATION:
        monkeypatch.delenv(name, raising=False)
    plain = diskcache.machine()
    assert "(imitated)" not in cpu_label() and plain.endswith("isa=/")
    monkeypatch.setenv("FBGEMM_ENABLE_INSTRUCTIONS", "AVX2")
    assert cpu_label().endswith("(imitated)")
    assert diskcache.machine() == plain + "/AVX2"
