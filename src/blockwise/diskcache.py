"""Measurements cached on disk, once per machine: JSON files of key -> value in ``cache_dir()`` ($BLOCKWISE_CACHE, else
~/.cache/blockwise). A key names everything its value depends on (CPU, threads, torch, shapes...); written atomically,
so processes measuring side by side never leave a torn file."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Iterable


def cache_dir() -> Path:
    root = os.environ.get("BLOCKWISE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / \
        "blockwise"
    return Path(root)


def machine() -> str:
    """What a timing depends on besides the model: the machine (host name, CPU model, cores), thread count, torch, the
    CPU kernels it dispatches to, and the instruction sets oneDNN, MKL and FBGEMM were capped at
    (``ONEDNN_MAX_CPU_ISA``, ``MKL_ENABLE_INSTRUCTIONS``, ``FBGEMM_ENABLE_INSTRUCTIONS``). The host matters where a
    cache folder is shared (a home folder mounted on several machines of a cluster): two CPUs with the same
    instruction sets ran SmolLM2 at 32 and 19 tokens/s here."""
    import platform

    import torch

    isa = f"{os.environ.get('ONEDNN_MAX_CPU_ISA', '')}/{os.environ.get('MKL_ENABLE_INSTRUCTIONS', '')}"
    if os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS"):  # FBGEMM (int8 products) capped too; named only where set
        isa += f"/{os.environ['FBGEMM_ENABLE_INSTRUCTIONS']}"
    return "|".join([f"host={platform.node()}", f"model={cpu_model()}", f"cores={os.cpu_count()}",
                     f"threads={torch.get_num_threads()}", f"torch={torch.__version__}",
                     f"cpu={torch.backends.cpu.get_cpu_capability()}", f"isa={isa}"])


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (Linux), or the platform's processor string (read once)."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def shapes(tensors: Iterable) -> str:
    """A short digest of the tensors' shapes, in order: what tells one model's measurements from another's in a key."""
    return hashlib.sha1(repr([tuple(t.shape) for t in tensors]).encode()).hexdigest()[:10]


def read(name: str, key: str, default=None):
    """The value stored under ``key`` in the file ``name`` (``default`` where none, or the file is unreadable)."""
    path = cache_dir() / name
    try:
        return json.loads(path.read_text()).get(key, default) if path.exists() else default
    except (ValueError, OSError):
        return default


def write(name: str, key: str, value) -> None:
    """Store ``value`` (JSON) under ``key`` in the file ``name``, keeping its other keys."""
    path = cache_dir() / name
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
    except (ValueError, OSError):
        data = {}
    data[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)
