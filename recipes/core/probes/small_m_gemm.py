"""Probe: why does a call feeding T = 2..8 tokens cost so much more than T = 1 in float32, and which well-kept kernel
does better? Times the four matrix products of one SmolLM2 layer (576 -> 960 fused q/k/v, 576 -> 576 out,
576 -> 3072 fused gate/up, 1536 -> 576 down) at T = 1..8 rows, one thread, per kernel:

    matmul (in, out)     x @ W, the layout our float32 Llama uses (MKL's one-row GEMV at T = 1)
    linear (out, in)     F.linear(x, W), the bf16 layout
    mkl packed           torch.ops.mkl._mkl_linear with an MKL-packed weight (what inductor emits for fp32 on CPU)
    onednn packed        torch.ops.mkldnn._linear_pointwise with a oneDNN-reordered weight

Run it on the CPU as it is and under the AVX2 imitation:
    python recipes/core/probes/small_m_gemm.py
    ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2 python recipes/core/probes/small_m_gemm.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import blockwise  # noqa: F401  sets the OpenMP policy before torch loads
import torch
import torch.nn.functional as F

from blockwise.eval.timing import cpu_label

torch.set_num_threads(1)
SHAPES = [(576, 960), (576, 576), (576, 3072), (1536, 576)]
TS = range(1, 9)


def median_us(fn, repeats: int = 200) -> float:
    for _ in range(20):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e6 * statistics.median(times)


def kernels(w: torch.Tensor):
    """name -> (function of x, its weight kept alive); w is (in, out)."""
    w_t = w.t().contiguous()
    out = {"matmul (in, out)": lambda x: x @ w, "linear (out, in)": lambda x: F.linear(x, w_t)}
    try:
        mkl_packed = torch.ops.mkl._mkl_reorder_linear_weight(w_t, 8)
        out["mkl packed"] = lambda x: torch.ops.mkl._mkl_linear(x, mkl_packed, w_t, None, 8)
    except Exception as error:  # not in this build
        print(f"mkl packed: {type(error).__name__}: {str(error)[:120]}", file=sys.stderr)
    try:
        onednn = torch.ops.mkldnn._reorder_linear_weight(w_t, 8)
        out["onednn packed"] = lambda x: torch.ops.mkldnn._linear_pointwise(x, onednn, None, "none", [], "")
    except Exception as error:
        print(f"onednn packed: {type(error).__name__}: {str(error)[:120]}", file=sys.stderr)
    return out


def main() -> None:
    g = torch.Generator().manual_seed(0)
    table = {}
    for d_in, d_out in SHAPES:
        w = torch.randn(d_in, d_out, generator=g) * d_in ** -0.5
        for name, fn in kernels(w).items():
            row = {}
            for t in TS:
                x = torch.randn(t, d_in, generator=g)
                y = fn(x)
                if not torch.allclose(y, x @ w, atol=1e-4, rtol=1e-4):
                    row = None
                    print(f"{name} {d_in}x{d_out}: wrong result", file=sys.stderr)
                    break
                row[t] = median_us(lambda: fn(x))
            if row:
                table.setdefault(name, {}).setdefault(f"{d_in}x{d_out}", row)
    print(f"CPU kernels: {cpu_label()}; torch {torch.__version__}; one thread; microseconds per product, and the sum "
          f"of the layer's four products relative to T = 1 of the same kernel")
    print("| kernel | " + " | ".join(f"T={t}" for t in TS) + " | sum T=1 µs | T=4 / T=1 (layer) |")
    print("|---" * (len(TS) + 3) + "|")
    for name, shapes in table.items():
        total = {t: sum(shapes[s][t] for s in shapes) for t in TS}
        print(f"| {name} | " + " | ".join(f"{total[t]:.0f}" for t in TS) + f" | {total[1]:.0f} | "
              f"{total[4] / total[1]:.2f} |")
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump({"cpu": cpu_label(), "env": {k: os.environ.get(k) for k in
                                                   ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS",
                                                    "ONEDNN_MAX_CPU_ISA")}, "us": table}, f, indent=1)


if __name__ == "__main__":
    main()
