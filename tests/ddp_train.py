"""Trains a tiny float64 regression with ``blockwise.training.train`` and saves its final weights: run alone, or under
``torchrun --nproc_per_node 2`` (tests/test_distributed.py compares the two). Usage: ddp_train.py OUT.pt [RUN_DIR]"""

import sys

import torch

from blockwise.training import TrainConfig, train


def run(out: str, run_dir: str | None = None) -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 5, dtype=torch.float64)
    y = x @ torch.randn(5, 3, dtype=torch.float64) + 0.1 * torch.randn(64, 3, dtype=torch.float64)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    start = {n: t.clone() for n, t in model.state_dict().items()}

    def batches():
        g = torch.Generator().manual_seed(1)
        while True:
            yield torch.randperm(64, generator=g)[:16]  # every process draws the same indices; each keeps half

    def loss_fn(index):
        return ((model(x[index]) - y[index]) ** 2).mean()  # a per-example mean: halves average to the whole

    cfg = TrainConfig(steps=12, lr=3e-2, warmup=2, weight_decay=0.01, save_every=5, seed=0)
    train(model, loss_fn, batches(), cfg, run_dir=run_dir, progress=False)
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        torch.save({"start": start, "end": model.state_dict()}, out)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
