"""The learning-rate schedule (warm-up, cosine to 10% over the steps, or over the time when a run is time-bounded), and
resuming from a checkpoint."""

import pytest
import torch

from blockwise import BlockwiseModel, HeadsConfig, preset
from blockwise.training import TrainConfig, proposal_loss, train
from blockwise.training.loop import lr_at
from conftest import V


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


# -- checkpoints and resume ----------------------------------------------------------------------------------------
class Interrupted(Exception):
    pass


def _tiny_run(run_dir, steps: int, interrupt_at: int | None = None, init_seed: int = 0):
    """A float64 tiny model trained for ``steps`` steps (a checkpoint every 4). The batches are drawn from the global
    torch RNG, which the checkpoint saves and restores, so the data order continues across a resume. With
    ``interrupt_at`` the run dies when it asks for that step's batch (1-based), as if killed. Returns the model, the
    optimiser state the loop checkpointed last, and the batches the run consumed."""
    torch.manual_seed(init_seed)  # a different initialisation: a resumed run must take the weights from the checkpoint
    model = BlockwiseModel(preset("tiny", vocab_size=V), HeadsConfig(num_heads=3, d_hidden=16, p1="learned")).double()
    consumed = []

    def batches():
        while True:
            if len(consumed) + 1 == interrupt_at:
                raise Interrupted
            seq = torch.randint(3, V, (4, 12))
            consumed.append(seq)
            yield seq

    def loss_fn(seq):  # "random" draws one head per step from the same global RNG
        return proposal_loss(model, model(seq[:, :-1]), seq[:, 1:], 3, mode="random", pad_id=-100)

    cfg = TrainConfig(steps=steps, lr=3e-3, warmup=3, save_every=4, seed=5)
    try:
        last = train(model, loss_fn, batches(), cfg, run_dir=run_dir, progress=False)
    except Interrupted:
        last = None
    return model, last, consumed


def test_resume_continues_where_the_checkpoint_stopped(tmp_path):
    """8 steps in one go == a run killed during step 6 (checkpoint at step 4), then rerun with the same run_dir:
    the rerun loads weights, optimiser state, step and RNG state, consumes only steps 5..8, and ends bit-identical."""
    steps = 8
    whole, whole_last, whole_batches = _tiny_run(tmp_path / "whole", steps)
    assert whole_last["step"] == steps and len(whole_batches) == steps

    _, last, first_batches = _tiny_run(tmp_path / "split", steps, interrupt_at=6)
    assert last is None and len(first_batches) == 5
    checkpoint = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)
    assert checkpoint["step"] == 4  # steps 5 (done) and 6 (killed) since the checkpoint are lost
    resumed, resumed_last, resumed_batches = _tiny_run(tmp_path / "split", steps, init_seed=1)

    assert resumed_last["step"] == steps and resumed_last["lr"] == whole_last["lr"]
    assert len(resumed_batches) == steps - 4  # resumed at step 5, not restarted
    assert all(torch.equal(a, b) for a, b in zip(resumed_batches, whole_batches[4:]))  # the data order continues
    assert resumed_last["loss"] == whole_last["loss"]
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert a.dtype == torch.float64 and torch.equal(a, b), name
    saved = [torch.load(tmp_path / d / "checkpoint.pt", weights_only=False) for d in ("whole", "split")]
    assert saved[0]["step"] == saved[1]["step"] == steps
    for a, b in zip(saved[0]["optimiser"]["state"].values(), saved[1]["optimiser"]["state"].values()):
        assert a["step"] == b["step"] == steps
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
