"""The learning-rate schedule: warm-up, cosine to 10% over the steps, or over the time when a run is time-bounded."""

import pytest

from blockwise.training import TrainConfig
from blockwise.training.loop import lr_at


def test_warmup_then_cosine_to_a_tenth():
    cfg = TrainConfig(steps=1100, lr=1.0, warmup=100)
    assert lr_at(0, cfg) == pytest.approx(0.01)
    assert lr_at(99, cfg) == pytest.approx(1.0)
    assert lr_at(100, cfg) == pytest.approx(1.0)
    assert lr_at(600, cfg) == pytest.approx(0.55)
    assert lr_at(1100, cfg) == pytest.approx(0.1)
    assert lr_at(5000, cfg) == pytest.approx(0.1)


def test_time_fraction_ends_the_cosine_when_time_is_up():
    cfg = TrainConfig(steps=100_000, lr=1.0, warmup=100)
    assert lr_at(200, cfg, time_fraction=0.5) == pytest.approx(0.55)
    assert lr_at(200, cfg, time_fraction=1.0) == pytest.approx(0.1)
    # the further of the two progresses wins; the warm-up is never cut short
    assert lr_at(99_000, TrainConfig(steps=100_000, lr=1.0, warmup=0), time_fraction=0.0) < 0.11
    assert lr_at(50, cfg, time_fraction=0.9) == pytest.approx(0.51)
