"""Weight-only int8 and int4 matrices for CPU decoding, on PyTorch's own kernels.

Why: decoding one token streams every weight of the model once; in float32 SmolLM2's matrices are ~540 MB, in int4
~70 MB. PyTorch ships CPU kernels that multiply activations by such weights without materialising them in float:
``aten._weight_int8pack_mm`` (int8, one scale per output channel) and ``aten._weight_int4pack_mm_for_cpu`` (int4 in
groups of ``group`` inputs, a scale and a zero per group: the layout of llama.cpp's Q4_1). Both are vectorised only for
bfloat16 activations (float32 and float16 activations take a scalar path ~20x slower, measured on an AVX2 CPU:
recipes/core/probes/quant_gemm.py), so a product rounds its input rows to bfloat16 and returns float32; everything
else (residual stream, norms, attention, the cache) stays in the model's dtype.

Exactness: a quantized model is a model of its own, and blockwise decoding is exactly its greedy decoding. Both kernels
compute each output row from its own input row only (a row's bits are the same alone, in a verified block or in a
batch: tests/test_quant.py), so a quantized session is batch-invariant once attention is too (``KVCache.invariant``).

The glossary of the rest of the package applies; here ``bits`` is 8 or 4, ``group`` the int4 group size along the
input dimension (32, as Q4_1), and a matrix is given (out, in), as ``nn.Linear`` keeps it.
"""

from __future__ import annotations

import torch
from torch import Tensor

WEIGHTS = ("float32", "bfloat16", "int8", "int4")  # the weight precisions a native model can decode with
BITS = {"int8": 8, "int4": 4}
GROUP = 32  # int4 group size along the input dimension (llama.cpp's Q4_0/Q4_1 blocks are 32 wide)


class QuantizedMatrix:
    """A matrix (out, in) in int8 (per output channel, symmetric) or int4 (per group of ``group`` inputs, a scale and
    a zero, asymmetric), with bfloat16 scales; ``self(x)`` is ``x @ wᵀ`` for rows x (..., in) of any float dtype.
    ``dequantize()`` is the float matrix it multiplies by."""

    def __init__(self, w: Tensor, bits: int, group: int = GROUP) -> None:
        if bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, got {bits}")
        w = w.detach().float().contiguous()
        out, inp = w.shape
        self.bits, self.group, self.shape = bits, group, (out, inp)
        if bits == 8:
            scale = (w.abs().amax(1) / 127).clamp_min(1e-12).bfloat16()  # (out,)
            self.q = torch.round(w / scale.float()[:, None]).clamp(-128, 127).to(torch.int8).contiguous()
            self.scales = scale
            return
        problem = int4_problem(out, inp, group)
        if problem:
            raise ValueError(problem)
        g = w.view(out, inp // group, group)
        low, high = g.amin(-1), g.amax(-1)
        scale = ((high - low) / 15).clamp_min(1e-12).bfloat16()  # (out, in/group)
        zero = (low + 8 * scale.float()).bfloat16()  # the kernel's dequantization: (q - 8) * scale + zero
        q = torch.round((g - (zero.float() - 8 * scale.float())[..., None]) / scale.float()[..., None])
        q = q.clamp(0, 15).to(torch.int32).view(out, inp)
        # two levels per byte (even inputs low, odd high) for dequantize(); the kernel reads its own packed copy, whose
        # layout depends on the CPU's vector width
        self.q = (q[:, 0::2] | (q[:, 1::2] << 4)).to(torch.uint8)
        self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
        self.scales = torch.stack([scale, zero], -1).transpose(0, 1).contiguous()  # (in/group, out, 2)

    def __call__(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
        if self.bits == 8:
            y = torch.ops.aten._weight_int8pack_mm(rows, self.q, self.scales)
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, self.packed, self.group, self.scales)
        return y.to(x.dtype).view(*x.shape[:-1], self.shape[0])

    def dequantize(self) -> Tensor:
        """The float32 matrix (out, in) that this one stands for."""
        if self.bits == 8:
            return self.q.float() * self.scales.float()[:, None]
        out, inp = self.shape
        scale, zero = self.scales.float().transpose(0, 1).unbind(-1)  # (out, in/group) each
        q = torch.stack([self.q & 15, self.q >> 4], -1).float().view(out, inp // self.group, self.group)
        return ((q - 8) * scale[..., None] + zero[..., None]).view(out, inp)


def int4_problem(out: int, inp: int, group: int = GROUP) -> str | None:
    """Why a matrix (out, in) cannot be int4 on PyTorch's CPU kernel, or None."""
    if group not in (32, 64, 128, 256):
        return f"the int4 group size must be 32, 64, 128 or 256, got {group}"
    if inp % group:
        return f"int4 needs the input size ({inp}) to be a multiple of the group size {group}"
    if out % 16:
        return f"int4 needs the output size ({out}) to be a multiple of 16"
    return None


def check_weights(weights: str) -> str:
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}; got {weights!r}")
    return weights
