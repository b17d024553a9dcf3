"""The matrix products of SmolLM2's 30 layers (q/k/v, out, gate/up, down; random weights of its shapes) at 1..8 rows,
one kernel at a time: MKL float32 (``x @ w``), oneDNN packed float32, bfloat16 ``F.linear``, our int8 matrices
(FBGEMM's int8 GEMM with each row rounded on its own grid, model/quant.py), and PyTorch's weight-only int8 / int4
kernels with float32 and with bfloat16 inputs. Why model/quant.py runs int8 on FBGEMM and int4 on bf16 rows, and how
much faster than float32 each is on this CPU. Prints a table; writes JSON to the path given.

    OMP_WAIT_POLICY=PASSIVE python recipes/core/probes/quant_gemm.py results/core/quant_gemm_avx2.json [THREADS]
"""

import json
import statistics
import sys
import time

import torch

from blockwise.eval.timing import cpu_label, environment
from blockwise.model.quant import QuantizedMatrix

D, F, L = 576, 1536, 30
SHAPES = [(960, D), (D, D), (2 * F, D), (D, F)]  # (out, in)
ROWS = [1, 2, 4, 8]


def main(out: str | None, threads: int = 1, repeats: int = 7) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    weights = [[torch.randn(o, i) * 0.05 for (o, i) in SHAPES] for _ in range(L)]
    int8 = [[QuantizedMatrix(w, 8) for w in ws] for ws in weights]
    int4 = [[QuantizedMatrix(w, 4) for w in ws] for ws in weights]
    levels = [[(q.q.contiguous(), q.scales) for q in qs] for qs in int8]  # the same int8 levels, for ATen's kernel
    kernels = {
        "float32 MKL": ([[w.t().contiguous() for w in ws] for ws in weights], lambda x, w: x @ w, torch.float32),
        "float32 oneDNN packed": ([[torch.ops.mkldnn._reorder_linear_weight(w, 8) for w in ws] for ws in weights],
                                  lambda x, w: torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], ""),
                                  torch.float32),
        "bfloat16 linear": ([[w.bfloat16() for w in ws] for ws in weights], torch.nn.functional.linear, torch.bfloat16),
        "int8 (ours: FBGEMM)": (int8, lambda x, q: q(x), torch.float32),
        "int8 weight-only, bf16 rows": (
            levels, lambda x, q: torch.ops.aten._weight_int8pack_mm(x, q[0], q[1].bfloat16()), torch.bfloat16),
        "int4 (ours), bf16 rows": (int4, lambda x, q: q(x), torch.bfloat16),
        "int8 weight-only, fp32 rows": (levels, lambda x, q: torch.ops.aten._weight_int8pack_mm(x, q[0], q[1]),
                                        torch.float32),
        "int4, float32 rows": (int4, lambda x, q: torch.ops.aten._weight_int4pack_mm_for_cpu(
            x, q.packed, q.group, q.scales.float()), torch.float32),
    }
    result = {"environment": environment(), "cpu": cpu_label(), "threads": threads, "rows": ROWS, "ms": {}}
    for name, (ws, f, dtype) in kernels.items():
        ms = []
        for rows in ROWS:
            xs = [torch.randn(rows, i).to(dtype) for (o, i) in SHAPES]
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                for layer in ws:
                    for x, w in zip(xs, layer):
                        f(x, w)
                times.append(time.perf_counter() - start)
            ms.append(round(statistics.median(times) * 1000, 2))
        result["ms"][name] = ms
        print(f"{name:28s}", "  ".join(f"{r} rows {t:7.1f} ms" for r, t in zip(ROWS, ms)),
              f"  4 rows / 1 row {ms[2] / ms[0]:.2f}", flush=True)
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None, int(sys.argv[2]) if len(sys.argv) > 2 else 1)
