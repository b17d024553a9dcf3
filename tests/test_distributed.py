"""Data-parallel training: the loop under ``torchrun --nproc_per_node 2`` (gloo, two CPU processes) ends with the
weights that one process reaches on the whole batches (training/loop.py)."""

import os
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).parent


def test_two_processes_train_as_one(tmp_path):
    sys.path.insert(0, str(HERE))
    from ddp_train import run

    run(str(tmp_path / "one.pt"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(HERE / "ddp_train.py"), str(tmp_path / "two.pt"), str(tmp_path / "run")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    for name, weight in one["end"].items():
        assert torch.allclose(weight, two["end"][name], rtol=0, atol=1e-12), name
        assert torch.equal(one["start"][name], two["start"][name])
    moved = max(float((w - one["start"][n]).abs().max()) for n, w in one["end"].items())
    assert moved > 1e-3  # it trained: the weights are not the initial ones
    assert (tmp_path / "run" / "checkpoint.pt").exists() and (tmp_path / "run" / "log.jsonl").exists()


def test_a_batch_that_does_not_split_evenly_is_refused():
    from blockwise.training.loop import shard

    assert shard(torch.arange(8), 1, 2).tolist() == [4, 5, 6, 7]
    assert [t.tolist() for t in shard((torch.arange(4), torch.arange(4) * 10), 0, 2)] == [[0, 1], [0, 10]]
    try:
        shard(torch.arange(7), 0, 2)
    except ValueError as error:
        assert "evenly" in str(error)
    else:
        raise AssertionError("an uneven batch was split")
