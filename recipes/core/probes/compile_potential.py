"""How much of a decoding call is PyTorch's per-operation overhead, and what ``torch.compile`` would win (bf16, CPU).

A SmolLM2 call at batch 1 is ~2,800 small operations (~92 per layer: norms, rotary, views, the lone-row padding of the
invariant products, attention), which cost about as much as the matrix products themselves. This probe times, on
SmolLM2-135M's shapes in bfloat16, one thread:

1. our native Llama (``tasks.llama``: oneDNN-packed products, batch-invariant attention) feeding T tokens after ~110;
2. the same layer arithmetic written as plain PyTorch (``F.linear`` on unpacked weights, a KV cache written in place,
   the same two-product attention), eager;
3. that plain model under ``torch.compile(dynamic=True)`` with inductor's weight freezing (prepacked products).

Compiled code does not give eager's bits, so it could serve decoding only if greedy and blockwise both ran it and a
row's bits stayed independent of the rows beside it (to be tested), and the compile (~1 minute for 30 layers here, then
cached on disk) happened once per machine. Piecewise compilation of our own layer (graph breaks at the packed products)
was slower than eager: 19.5 ms against 16 ms at T = 1 (2026-12-05).

    OMP_WAIT_POLICY=PASSIVE python recipes/core/probes/compile_potential.py results/core/compile_potential.json
"""

import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from blockwise.decoding.common import prefill
from blockwise.eval.timing import cpu_label, environment
from blockwise.tasks.hf import load_smollm2
from blockwise.tasks.llama import Llama, NativeLM

D, H, HKV, DH, FF, L = 576, 9, 3, 64, 1536, 30
TOKENS = (1, 4, 8)


def median_ms(f, repeats: int = 30) -> float:
    for _ in range(3):
        f()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 2)


def ours() -> dict[int, float]:
    tokenizer, hf = load_smollm2()
    lm = NativeLM(Llama.from_hf(hf).cast(torch.bfloat16))
    prompt = list(range(1000, 1110))
    out = {}
    for T in TOKENS:
        session, _ = prefill(lm, [prompt], len(prompt) + 64, None)
        block = torch.arange(500, 500 + T)[None]

        def call():
            start = session.lengths.clone()
            session.feed(block)
            session.truncate(start)
        out[T] = median_ms(call)
    return out


class Plain(torch.nn.Module):
    """SmolLM2's decoder stack as plain PyTorch: RMSNorm, fused q/k/v, rotary, a cache written in place, attention as
    two products with a float32 softmax, SiLU-gated MLP (random weights: only the time matters)."""

    def __init__(self) -> None:
        super().__init__()
        lin = lambda i, o: torch.nn.Linear(i, o, bias=False)  # noqa: E731
        self.qkv = torch.nn.ModuleList(lin(D, (H + 2 * HKV) * DH) for _ in range(L))
        self.out = torch.nn.ModuleList(lin(H * DH, D) for _ in range(L))
        self.gate_up = torch.nn.ModuleList(lin(D, 2 * FF) for _ in range(L))
        self.down = torch.nn.ModuleList(lin(FF, D) for _ in range(L))
        self.norms = torch.nn.Parameter(torch.ones(L, 2, D))

    @staticmethod
    def rms(x, w):
        x32 = x.float()
        return w * (x32 * (x32 * x32).mean(-1, keepdim=True).add(1e-5).rsqrt()).to(x.dtype)

    def forward(self, x, cos, sin, keys, values, pos: int):
        B, T, _ = x.shape
        for i in range(L):
            qk, v = self.qkv[i](self.rms(x, self.norms[i, 0])).split([(H + HKV) * DH, HKV * DH], -1)
            qk = qk.view(B, T, H + HKV, DH).transpose(1, 2)
            qk = qk * cos + qk.roll(DH // 2, -1) * sin
            q, k = qk[:, :H], qk[:, H:]
            keys[i][:, :, pos:pos + T] = k
            values[i][:, :, pos:pos + T] = v.view(B, T, HKV, DH).transpose(1, 2)
            kk, vv = keys[i][:, :, :pos + T], values[i][:, :, :pos + T]
            rows = q.view(B, HKV, H // HKV, T, DH).transpose(2, 3).reshape(B, HKV, -1, DH)
            weights = ((rows * DH ** -0.5) @ kk.transpose(-1, -2)).float().softmax(-1).to(x.dtype)
            y = (weights @ vv).view(B, HKV, T, H // HKV, DH).transpose(2, 3).reshape(B, H, T, DH)
            x = x + self.out[i](y.transpose(1, 2).reshape(B, T, -1))
            gate, up = self.gate_up[i](self.rms(x, self.norms[i, 1])).chunk(2, -1)
            x = x + self.down[i](F.silu(gate) * up)
        return x


def plain(compiled: bool) -> tuple[dict[int, float], float | None]:
    torch.manual_seed(0)
    model = Plain().bfloat16().eval()
    keys = [torch.zeros(1, HKV, 512, DH, dtype=torch.bfloat16) for _ in range(L)]
    values = [torch.zeros(1, HKV, 512, DH, dtype=torch.bfloat16) for _ in range(L)]

    def inputs(T):
        return (torch.randn(1, T, D, dtype=torch.bfloat16), torch.randn(1, 1, T, DH, dtype=torch.bfloat16),
                torch.randn(1, 1, T, DH, dtype=torch.bfloat16), keys, values, 110)
    seconds = None
    if compiled:
        import torch._inductor.config as inductor

        inductor.freezing = True
        start = time.perf_counter()
        model = torch.compile(model, dynamic=True)
        with torch.no_grad():
            model(*inputs(1))
        seconds = round(time.perf_counter() - start, 1)
    out = {}
    with torch.no_grad():
        for T in TOKENS:
            args = inputs(T)
            out[T] = median_ms(lambda: model(*args))
    return out, seconds


def main(path: str | None) -> None:
    torch.set_num_threads(1)
    result = {"environment": environment(), "cpu": cpu_label(), "tokens": list(TOKENS), "ms": {}}
    result["ms"]["ours (native Llama, eager)"] = ours()
    result["ms"]["plain PyTorch, eager"] = plain(False)[0]
    result["ms"]["plain PyTorch, torch.compile"], result["compile_seconds"] = plain(True)
    for name, ms in result["ms"].items():
        print(f"{name:32s}", "  ".join(f"T={t}: {v:6.2f} ms" for t, v in ms.items()))
    print("first compile:", result["compile_seconds"], "s")
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
