"""What the result recipes share when they write a run: its folder per CPU, its rows merged into a task's
summary.json (which ../shared/tools/check-results reads), how the choices of k = auto are shown, and matplotlib."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or None (with a line on stderr) without the plots extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install 'blockwise[plots]')", file=sys.stderr)
        return None
    return plt


def format_k_chosen(counts: Sequence[int]) -> str:
    """'k=1 ×12, k=3 ×40' from ``DecodeStats.k_chosen`` (index k: iterations at block size k)."""
    return ", ".join(f"k={k} ×{n}" for k, n in enumerate(counts) if n)


def cpu_folder(out: str | Path, cpu: str) -> Path:
    """``out``/<a folder name for ``eval.timing.cpu_label()``>, created: e.g. avx512+avx512_bf16, avx2-imitated."""
    folder = Path(out) / cpu.replace(" (imitated)", "-imitated").replace(",", "+")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def merge_rows(summary: str | Path, records: list[dict], run: str, cpu: str) -> None:
    """Put ``records`` into ``summary`` (a JSON list of rows), replacing earlier rows of the same ``run`` on ``cpu``."""
    summary = Path(summary)
    rows = json.loads(summary.read_text()) if summary.exists() else []
    kept = [r for r in rows if not (r.get("run") == run and r.get("cpu") == cpu)]
    summary.write_text(json.dumps(kept + records, indent=1) + "\n")


def method_spec(spec: str, num_heads: int):
    """A recipe's method entry as (k, tree): "3" (a block of 3), "auto" (k chosen per step), "tree16" (a dynamic tree
    of 16 nodes over every head, 4 guesses per expanded node), "tree64x8" (64 nodes, 8 guesses per expanded node),
    "treeauto64" (its node budget chosen per step, up to 64)."""
    from ..decoding.tree import DynamicTree

    spec = spec.strip()
    if spec.startswith("tree"):
        nodes, _, top = spec[len("tree"):].partition("x")
        auto = nodes.startswith("auto")
        return ("auto" if auto else None), DynamicTree(int(nodes.removeprefix("auto") or 64), num_heads - 1,
                                                       top=int(top or 4))
    return (spec if spec == "auto" else int(spec)), None


def lookup_spec(spec: str):
    """A method entry with a lookup suffix, "auto+L6" (a chain of 6 copied tokens per call), as (the entry without
    it, a ``Lookup`` or None)."""
    from ..decoding.lookup import Lookup

    base, _, tokens = spec.partition("+L")
    return base, (Lookup(tokens=int(tokens)) if tokens else None)


def spec_fields(k, tree) -> dict:
    """The record fields k, nodes, tree and policy of a method from ``method_spec``."""
    auto = k == "auto"
    if tree is not None:
        return {"k": None if auto else tree.depth + 1, "nodes": None if auto else tree.nodes, "tree": "dynamic",
                "policy": "auto" if auto else "fixed"}
    return {"k": None if auto else k, "nodes": None if auto else k, "tree": "chain",
            "policy": "auto" if auto else "fixed"}
