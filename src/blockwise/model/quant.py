"""Quantized matrices for CPU decoding: int8 weights with int8 activations, and weight-only int4, on PyTorch's kernels.

Why: decoding one token streams every weight of the model once; in float32 SmolLM2's matrices are ~540 MB, in int8
~135 MB, in int4 ~70 MB.

- **int8** runs on FBGEMM, PyTorch's x86 int8 GEMM (the ``quantized`` ops): it rounds the input rows to 8-bit
  integers and sums integer products exactly. On an AVX2 CPU, SmolLM2's 120 layer matrices cost ~19 ms for one row
  in FBGEMM against ~36 ms in MKL's float32, but the per-row wrapper below brings that to ~32 ms; 4 rows 51 ms against
  83 (recipes/core/probes/quant_gemm.py, results/core/quant_gemm_avx2.json): the gain is in verifying blocks. The
  weights take 127 levels per output channel (-63..63, one scale each): AVX2 multiplies 8-bit pairs into 16-bit sums,
  which 8-bit inputs times 7-bit weights never overflow (2 * 255 * 63 < 2^15), where full 8-bit weights would
  saturate. FBGEMM's dynamic product takes one input scale for all rows fed together; a row's rounding would then
  depend on its neighbours, so each row is first divided by its own largest magnitude and rounded on the fixed grid
  of 255 steps over [-1, 1] (``quantized::linear_with_input_q_dq_qweight_dq_output_fp32``, the same FBGEMM product
  with the input's scale and zero point given): every row is rounded on its own grid, in 255 steps between minus and
  plus its peak, and its result has the same bits alone, in a verified block or in a batch. (Until 2026-12-05 the
  grid was pinned by appending two inputs -1 and +1 with zero weights to every row for the dynamic product: the same
  bits, two more operations per product: SmolLM2 int8 under the AVX2 imitation, one thread, a call of 1 / 3 tokens
  13.1 / 15.8 -> 12.6 / 15.3 ms; on the CPU as it is, 11.5 / 14.5 -> 11.0 / 14.0.) Rows with outlier channels lose
  the most; ``tasks.llama.Llama.smooth`` moves that difficulty into the weights before quantizing.
- **int4** (groups of ``group`` inputs, a scale and a zero per group: the layout of llama.cpp's Q4_1) runs on
  ``aten._weight_int4pack_mm_for_cpu``, weight-only: the input rows are rounded to bfloat16 (the kernel's only fast
  input; float32 takes a scalar path ~20x slower) and the product is float. Each output row comes from its own input
  row only. Its time grows with the rows (8 rows ~3x one), so where bf16 is native a prompt's rows may go through a
  bf16 copy of the dequantized matrix instead (``prompt_copy``; decoding's rows never do).

Exactness: a quantized model is a model of its own, and blockwise decoding is exactly its greedy decoding: a row's bits
never depend on the other rows (tests/test_quant.py), so a quantized session is batch-invariant once attention is too
(``KVCache.invariant``).

The glossary of the rest of the package applies; here ``bits`` is 8 or 4, ``group`` the int4 group size along the
input dimension (32, as Q4_1), and a matrix is given (out, in), as ``nn.Linear`` keeps it. FBGEMM's quantized tensors
are marked deprecated in PyTorch (the pinned 2.13 has them); ``int8_problem`` says when a build lacks them.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .invariant import pack, packed_mm

WEIGHTS = ("float32", "bfloat16", "int8", "int4")  # the weight precisions a native model can decode with
BITS = {"int8": 8, "int4": 4}
INT8_LEVEL = 63  # int8 weights take the levels -63..63 (see above: no 16-bit saturation with 8-bit inputs)
GROUP = 32  # int4 group size along the input dimension (llama.cpp's Q4_0/Q4_1 blocks are 32 wide)
APART = 16  # input channels of a quantized output projection rounded on a grid of their own (``SplitMatrix``)


class QuantizedMatrix:
    """A matrix (out, in) in int8 (127 levels per output channel, symmetric, float32 scales) or int4 (per group of
    ``group`` inputs, a scale and a zero, asymmetric, bfloat16 scales); ``self(x)`` is ``x @ wᵀ`` for rows x (..., in)
    of any float dtype, x rounded as the kernel rounds it (``rows``). ``dequantize()`` is the float matrix it multiplies
    by."""

    def __init__(self, w: Tensor, bits: int, group: int = GROUP, prompt_copy: bool = False) -> None:
        if bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, got {bits}")
        w = w.detach().float().contiguous()
        out, inp = w.shape
        self.prompt: Tensor | None = None  # int4 only: the bf16 copy for prompts (``prompt_copy``)
        self.bits, self.group, self.shape = bits, group, (out, inp)
        if bits == 8:
            problem = int8_problem()
            if problem:
                raise ValueError(problem)
            scale = (w.abs().amax(1) / INT8_LEVEL).clamp_min(1e-12)  # (out,)
            q = torch.round(w / scale[:, None]).clamp(-INT8_LEVEL, INT8_LEVEL).to(torch.int8)
            self.scales = scale
            # FBGEMM's packed copy (the only one kept: ``q`` reads it back)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PyTorch marks quantized tensors deprecated
                zeros = torch.zeros(out, dtype=torch.long)
                qw = torch._make_per_channel_quantized_tensor(q, scale.double(), zeros, 0)
                self.packed = torch.ops.quantized.linear_prepack(qw, None)
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
        self.levels = (q[:, 0::2] | (q[:, 1::2] << 4)).to(torch.uint8)
        self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
        self.scales = torch.stack([scale, zero], -1).transpose(0, 1).contiguous()  # (in/group, out, 2)
        # ``prompt_copy``: the dequantized matrix in bfloat16, oneDNN-packed, for the rows of a prompt (``__call__``)
        self.prompt = pack(self.dequantize().bfloat16(), out_in=True) if prompt_copy else None

    @property
    def q(self) -> Tensor:
        """The levels: int8 (out, in) for int8 (unpacked from FBGEMM's copy); for int4 uint8 (out, in/2), two per byte
        (even inputs low, odd high)."""
        if self.bits == 4:
            return self.levels
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.ops.quantized.linear_unpack(self.packed)[0].int_repr()

    def __call__(self, x: Tensor, prompt: bool = False) -> Tensor:
        """``x @ wᵀ``. ``prompt``: x are the rows of a prompt (a session's first call, the whole sequence at once);
        an int4 matrix with a ``prompt_copy`` multiplies them by its dequantized bf16 copy: the int4 kernel's time
        grows with the rows (8 rows ~3x one), oneDNN's bf16 one barely (SmolLM2's 40-50-token prompts: 164-184 ->
        78-88 ms on an AVX-512-BF16 CPU). Every row's bits still come from that row alone, on either path, so a
        prompt's states do not depend on the other prompts of a batch; the states decoding writes are the int4
        kernel's."""
        if prompt and self.prompt is not None:
            return packed_mm(x.to(torch.bfloat16), self.prompt).to(x.dtype)
        rows = x.reshape(-1, x.shape[-1])
        if self.bits == 8:
            unit, peak = _unit(rows)
            y = _INT8(unit, GRID_SCALE, GRID_ZERO, self.packed) * peak
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(rows.to(torch.bfloat16), self.packed, self.group,
                                                           self.scales)
        return y.to(x.dtype).view(*x.shape[:-1], self.shape[0])

    def rows(self, x: Tensor) -> Tensor:
        """The input rows (..., in) as the kernel multiplies them, in float32: int8 rounds each row to 255 levels
        between minus and plus its peak magnitude (the quantization PyTorch's dynamic int8 kernels apply, on the pinned
        range); int4 rounds to bfloat16."""
        if self.bits == 4:
            return x.to(torch.bfloat16).float()
        unit, peak = _unit(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            levels = torch.quantize_per_tensor(unit, GRID_SCALE, GRID_ZERO, torch.quint8).dequantize()
        return levels * peak

    def dequantize(self) -> Tensor:
        """The float32 matrix (out, in) that this one stands for."""
        if self.bits == 8:
            return self.q.float() * self.scales[:, None]
        out, inp = self.shape
        scale, zero = self.scales.float().transpose(0, 1).unbind(-1)  # (out, in/group) each
        q = torch.stack([self.levels & 15, self.levels >> 4], -1).float().view(out, inp // self.group, self.group)
        return ((q - 8) * scale[..., None] + zero[..., None]).view(out, inp)


class SplitMatrix:
    """An int8 matrix (out, in) whose input channels ``apart`` are rounded on a grid of their own: a row's few
    channels of outsized values (SmolLM2's final hidden states: 10-100x the row's median in a handful of channels)
    would otherwise set the grid of the whole row and leave the others a few levels. Two int8 matrices, the columns
    ``apart`` and the rest, each row rounded on its own grid in each (``QuantizedMatrix``), their products summed:
    every row's bits are still its own. SmolLM2's output projection with the 16 channels of largest calibration
    peaks apart: held-out perplexity +2.1% over float32 where the whole row on one grid gave +3.3% (int8 layers; int4
    layers +0.1% where they gave +1.6%), for one more product of 16 columns and the gathers (a greedy step's scoring
    0.85 -> 1.08 ms, int8, one thread). Same interface as ``QuantizedMatrix`` (``rows``, ``dequantize``)."""

    def __init__(self, w: Tensor, apart: Tensor) -> None:
        w = w.detach().float()
        out, inp = w.shape
        rest = torch.ones(inp, dtype=torch.bool)
        rest[apart] = False
        self.apart, self.rest = apart.sort().values, rest.nonzero()[:, 0]
        self.part, self.main = QuantizedMatrix(w[:, self.apart], 8), QuantizedMatrix(w[:, self.rest], 8)
        self.bits, self.shape = 8, (out, inp)

    def __call__(self, x: Tensor, prompt: bool = False) -> Tensor:
        return self.main(x.index_select(-1, self.rest)) + self.part(x.index_select(-1, self.apart))

    def rows(self, x: Tensor) -> Tensor:
        out = x.new_empty(x.shape, dtype=torch.float32)
        out[..., self.rest] = self.main.rows(x.index_select(-1, self.rest))
        out[..., self.apart] = self.part.rows(x.index_select(-1, self.apart))
        return out

    def dequantize(self) -> Tensor:
        w = torch.empty(self.shape)
        w[:, self.rest], w[:, self.apart] = self.main.dequantize(), self.part.dequantize()
        return w


# The grid every int8 product rounds its rows on, each row divided by its peak first: 255 steps over [-1, 1], as
# PyTorch chooses them for inputs spanning [-1, 1] (scale 2 / 255, zero point 128)
GRID_SCALE, GRID_ZERO = 2.0 / 255.0, 128
_INT8 = getattr(torch.ops.quantized, "linear_with_input_q_dq_qweight_dq_output_fp32", None)


def _unit(x: Tensor) -> tuple[Tensor, Tensor]:
    """Rows x (..., in) divided by their peak magnitude, and the peaks (..., 1)."""
    rows = x.float()
    peak = rows.abs().amax(-1, keepdim=True).clamp_min(1e-30)  # as vector_norm(inf), 1.5-2.5x faster for 4 rows
    return rows / peak, peak


def int8_problem() -> str | None:
    """Why this PyTorch cannot run int8 matrices (FBGEMM, x86 CPUs), or None."""
    engines = torch.backends.quantized.supported_engines
    if not ({"x86", "fbgemm"} & set(engines)) or _INT8 is None:
        return f"int8 weights need PyTorch's x86/FBGEMM quantized kernels; this build has {', '.join(engines)}"
    return None


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
