"""Honest wall-clock measurement: warm-up runs excluded, medians of repeats, and the machine state recorded."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from typing import Callable

import torch


def median_ms(fn: Callable[[], object], repeats: int = 10, warmup: int = 2) -> float:
    """Median wall-clock milliseconds of ``fn()`` over ``repeats`` runs after ``warmup`` unmeasured ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def interleaved(runs: dict, groups: list, repeats: int, desc: str = "") -> tuple[dict, dict, dict, dict]:
    """Time every ``runs[i](group, repeat, g)`` over all ``groups`` (a method's decode of one batch), the methods
    alternating on every group, in reverse order every other group: a slow spell of the machine (seconds long on a
    shared host) hits all methods alike instead of the one running then. Returns seconds per repeat {i: [...]} (the sum
    over groups), the last repeat's output rows {i: [...]}, its stats per group {i: [...]} (the ``DecodeOutput.stats``
    of ours, None for others, whose runs return (rows, None)) and the tokens produced per repeat {i: [...]} (sampled
    runs draw other lengths in other repeats: a rate is a repeat's tokens over its own seconds, ``rates``)."""
    from tqdm.auto import tqdm

    times, counts = {i: [] for i in runs}, {i: [] for i in runs}
    outputs, stats = {}, {}
    bar = tqdm(total=repeats * len(groups), desc=desc, dynamic_ncols=True)
    for r in range(repeats):
        spent = {i: 0.0 for i in runs}
        rows, st = {i: [] for i in runs}, {i: [] for i in runs}
        for g, group in enumerate(groups):
            for i in (list(runs) if (r + g) % 2 == 0 else list(runs)[::-1]):
                start = time.perf_counter()
                got = runs[i](group, r, g)
                spent[i] += time.perf_counter() - start
                rows[i] += got.tokens if hasattr(got, "tokens") else got[0]
                st[i].append(got.stats if hasattr(got, "stats") else None)
            bar.update(1)
        for i in runs:
            times[i].append(spent[i])
            counts[i].append(sum(len(row) for row in rows[i]))
        outputs, stats = rows, st
    bar.close()
    return times, outputs, stats, counts


def rates(times: dict, counts: dict) -> dict:
    """Tokens per second of every repeat {i: [...]}, each repeat's tokens over its own seconds."""
    return {i: [c / t for c, t in zip(counts[i], times[i])] for i in times}


def paired_ratio(rate: list[float], ref: list[float]) -> float:
    """The median over repeats of a method's rate over the reference's in the same repeat: the machine's drift
    between repeats (30% over one run here) cancels, where a ratio of medians keeps it."""
    return statistics.median(a / b for a, b in zip(rate, ref))


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# The variables that cap PyTorch's CPU kernels below what the CPU has (imitating an AVX2-only CPU): ATen's own kernels,
# MKL, oneDNN, and FBGEMM (the int8 products of model/quant.py): without the last, int8 ran its AVX-512 kernels under
# the other three (SmolLM2's 60 layer products, one row: 4.1 ms, against 4.7 ms with FBGEMM capped too)
IMITATION = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "FBGEMM_ENABLE_INSTRUCTIONS")


def imitated() -> bool:
    """Whether the environment caps PyTorch's CPU kernels below what the CPU has (any of ``IMITATION`` set)."""
    return any(os.environ.get(name) for name in IMITATION)


def cpu_label() -> str:
    """The instruction sets that decide our kernels, as results record them (``cpu``): what PyTorch's own kernels use
    ("avx2", "avx512"), then the native bf16 ones the CPU has ("avx512_bf16", "amx"); "(imitated)" when the
    environment caps the kernels below what the CPU has (``IMITATION``), in which case the native bf16 instructions
    are not used either."""
    capped = imitated()
    parts = [torch.backends.cpu.get_cpu_capability().lower()]
    if not capped:
        try:
            flags = set(open("/proc/cpuinfo").read().split())
        except OSError:
            flags = set()
        parts += [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return ",".join(parts) + (" (imitated)" if capped else "")


def environment() -> dict:
    """What a reader needs to judge a timing: where, on what, how loaded."""
    return {"commit": git_commit(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": cpu_name(), "isa": cpu_label(), "cores": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "python": platform.python_version()}
