"""A small training loop with checkpoints and resume, shared by every task.

The loop owns the optimiser, the schedule, bf16 autocast on the CPU, the checkpoint (model, optimiser, step, RNG
state) written atomically every ``save_every`` steps, and a JSON-lines log of the learning curve. A rerun with the same
``run_dir`` resumes from the last checkpoint and loses at most the steps since it.

Data parallel, unchanged code: started by ``torchrun --nproc_per_node N`` (WORLD_SIZE > 1 in the environment), the loop
joins the process group (gloo on CPUs, NCCL on GPUs), every process draws the same batches from the same seed and
keeps its 1/N slice of each (the leading dimension of a tensor batch, or of every tensor in a tuple/list batch), and
after each backward pass the gradients are averaged across processes with ``all_reduce``, as DDP does, so every
process takes the same optimiser step: with a per-example mean loss and a batch that splits evenly the result is that
of one process on the whole batch (tests/test_distributed.py). Process 0 alone prints, logs and writes checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    clip: float = 1.0
    bf16: bool = False  # autocast to bfloat16 on the CPU (~1.45x faster here)
    save_every: int = 200
    eval_every: int = 200
    seed: int = 0
    time_schedule: bool = False  # with a time limit: the cosine also ends when the run's time is up (fresh runs)


def distributed() -> tuple[int, int]:
    """(rank, world size): joins the process group when started by torchrun (WORLD_SIZE > 1), else (0, 1)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def shard(batch, rank: int, world: int):
    """This process's slice of a batch: a tensor's rows, or every tensor's rows in a tuple/list."""
    if world == 1:
        return batch
    if isinstance(batch, torch.Tensor):
        if batch.shape[0] % world:
            raise ValueError(f"a batch of {batch.shape[0]} does not split evenly over {world} processes")
        return batch.chunk(world)[rank]
    if isinstance(batch, (tuple, list)):
        return type(batch)(shard(b, rank, world) for b in batch)
    raise TypeError(f"cannot split a batch of type {type(batch).__name__} across processes")


def average_gradients(params: list[nn.Parameter], world: int) -> None:
    """Every process's gradients replaced by their mean over the processes (one all_reduce of a flat buffer)."""
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    for p, piece in zip(params, flat.split([g.numel() for g in grads])):
        p.grad = piece.view_as(p).clone()


def agreed(value: float, world: int) -> float:
    """``value`` as process 0 has it (every process then decides alike, e.g. to stop on time)."""
    if world == 1:
        return value
    import torch.distributed as dist

    box = torch.tensor([value], dtype=torch.float64)
    dist.broadcast(box, 0)
    return float(box)


def lr_at(step: int, cfg: TrainConfig, time_fraction: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak, over the steps or (if further) the time spent."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, max((step - cfg.warmup) / max(1, cfg.steps - cfg.warmup), time_fraction))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(model: nn.Module, loss_fn: Callable[[object], torch.Tensor], batches: Iterator, cfg: TrainConfig,
          run_dir: str | Path | None = None, evaluate: Callable[[], dict] | None = None,
          params: list[nn.Parameter] | None = None, progress: bool = True, time_limit: float | None = None,
          initial_step: int = 0) -> dict:
    """Train ``params`` (default: every parameter needing a gradient) for ``cfg.steps`` steps.

    ``loss_fn(batch)`` returns a scalar loss. ``evaluate()`` returns metrics logged every ``eval_every`` steps.
    ``time_limit`` (seconds) stops early after a checkpoint, for runs split across sessions. ``initial_step`` places
    the schedule when there is no checkpoint but the model's weights come from an earlier run (a fresh machine that only
    has the committed float16 weights; the optimiser state starts anew). Returns the last metrics.
    """
    rank, world = distributed()
    progress = progress and rank == 0
    params = [p for p in (params or model.parameters()) if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    step, run_dir = initial_step, Path(run_dir) if run_dir else None
    ckpt = run_dir / "checkpoint.pt" if run_dir else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        step = state["step"]
        torch.set_rng_state(state["rng"])
    else:
        torch.manual_seed(cfg.seed)
    if rank != 0:  # process 0 alone writes
        run_dir = ckpt = None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "train_config.json").write_text(json.dumps(asdict(cfg), indent=1))
    log = open(run_dir / "log.jsonl", "a") if run_dir else None
    started, last = time.time(), {}
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc="train", dynamic_ncols=True)
    model.train()
    while step < cfg.steps:
        batch = next(batches)
        spent = agreed((time.time() - started) / time_limit if time_limit else 0.0, world)  # process 0's clock
        for group in optimiser.param_groups:
            group["lr"] = lr_at(step, cfg, spent if cfg.time_schedule else 0.0)
        with torch.autocast(params[0].device.type, dtype=torch.bfloat16, enabled=cfg.bf16):  # cpu or cuda
            loss = loss_fn(shard(batch, rank, world))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        loss = loss.detach()
        if world > 1:
            average_gradients(params, world)
        nn.utils.clip_grad_norm_(params, cfg.clip)
        optimiser.step()
        step += 1
        last = {"step": step, "loss": loss.item(), "lr": optimiser.param_groups[0]["lr"], "elapsed_s": time.time() - started}
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss):.3f}")
        if evaluate is not None and rank == 0 and (step % cfg.eval_every == 0 or step == cfg.steps):
            model.eval()
            last.update(evaluate())
            model.train()
        if log is not None and (step % 10 == 0 or "eval_loss" in last or step == cfg.steps):
            log.write(json.dumps(last) + "\n")
            log.flush()
        out_of_time = time_limit is not None and spent > 1.0
        if ckpt is not None and (step % cfg.save_every == 0 or step == cfg.steps or out_of_time):
            save_checkpoint(ckpt, model, optimiser, step)
        if out_of_time:
            break
    bar.close()
    model.eval()
    if log is not None:
        log.close()
    return last


def save_checkpoint(path: Path, model: nn.Module, optimiser: torch.optim.Optimizer, step: int) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(), "step": step,
                "rng": torch.get_rng_state()}, tmp)
    os.replace(tmp, path)  # atomic: an interruption never leaves a half-written checkpoint
