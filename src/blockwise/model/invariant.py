"""Batch-invariant arithmetic for bfloat16 decoding on the CPU.

Blockwise decoding is exactly greedy only if a token's hidden state has the same bits whether it is fed alone (greedy:
one token per call) or inside a block (verification: k tokens per call), in a batch of one or of many. float32 gets
there in practice (differences of 1e-7 almost never flip an argmax); bfloat16 does not, because oneDNN's kernels sum
in a different order for one row than for several, and the fused attention kernel for a different number of queries
or keys. The two functions here avoid both.

Whether a model decodes batch-invariantly is one setting, decided once when a decoding session starts
(``batch_invariant(dtype)``, stored as ``KVCache.invariant``) and passed down explicitly to every product and every
attention of that session. Training and uncached forwards never take these paths.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (AVX512-BF16 or AMX; Linux flags, False where unknown).
    There bf16 makes verifying a block nearly as cheap as one token, and the batch invariance below is tested."""
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()  # oneDNN capped below bf16 (e.g. imitating an AVX2 CPU)
    if isa and isa != "ALL" and "BF16" not in isa and "AMX" not in isa:
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def batch_invariant(dtype: torch.dtype) -> bool:
    """The one condition: a session decoding in ``dtype`` must make every token's bits independent of what is fed
    beside it. bfloat16 needs it (see above); float32 and float64 decode with the fast kernels."""
    return dtype == torch.bfloat16


def mm(x: Tensor, w: Tensor, out_in: bool = False, bias: Tensor | None = None, invariant: bool = False) -> Tensor:
    """``x @ w``; with ``invariant``, the same bits for a row whether it comes alone or among others.

    In bfloat16, oneDNN multiplies a lone row (M = 1) with a kernel that sums in another order than its multi-row one,
    so a token verified inside a block (blockwise) could differ in the last bit from the same token fed alone (greedy)
    and, after a near-tie, change the output. An invariant lone row therefore goes through the multi-row kernel beside
    a copy of itself; bf16 cost here is flat in M (2 rows cost what 1 does).
    """
    def product(a: Tensor) -> Tensor:
        if out_in:  # w is (out, in), as nn.Linear keeps it
            return F.linear(a, w, bias)
        return a @ w if bias is None else a @ w + bias  # w is (in, out)

    if invariant and x.numel() == x.shape[-1]:
        return product(torch.cat([x, x], dim=-2))[..., :1, :]
    return product(x)


WIDE = "wide"  # float32 ``attend``: every query in one call of the fused kernel, summing in float64 (``order``)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None,
           order: "KeyOrder | QueryKeys | None" = None) -> Tensor:
    """Attention (B, H, T, Dh) in which each query's result has the same bits whatever else is fed beside it and
    however long the (masked) key span is (the CPU's fused attention kernel sums in another order when T changes).

    q (B, H, T, Dh); k, v (B, Hkv, S, Dh); mask (B, 1, T or 1, S), True where a key is visible (None where every key
    is).

    bfloat16: for each key head, the T x G queries that use it (G = H / Hkv) are the rows of two plain matrix
    products, scores = rows @ kᵀ and y = softmax(scores) @ v, batched over (B, Hkv); a row's result does not depend
    on the other rows, one row alone included (unlike the 2-D one-row product of ``mm``; tests/test_hf_adapter.py
    checks it for grouped and single heads). Softmax in float32, as Hugging Face does. ``order``: ``key_order(mask)``,
    where the caller computed it once for every layer of a call; else computed here.

    float32 (a session over quantized weights), the fused kernel's float32 sums take another order for other numbers
    of queries and for masked keys after the visible ones. Two ways round that:
    - float32 keys (the native Llama): every query alone over exactly the keys it sees (``QueryKeys``), the call a
      lone token fed to a lone row makes, so a token's bits are those of greedy decoding at batch 1 by construction.
      ``order``: ``query_keys(mask)``, once per call; else computed here. A one-token step of SmolLM2 int4 costs
      ~1.3 ms less than in float64 (below; 2-3 tokens ~0.7 ms less, 4 the same), and the cache half the memory.
      With more than one thread the kernel's float32 sums depend on which thread takes a row, so there each call
      sums in float64 (``_attend_each``).
    - float64 keys (the in-house Transformer's, ``Attention.attend``), or ``order`` ``WIDE`` (the native Llama's first
      call of a session, its prompts: query by query, a 45-token prompt of SmolLM2 was 1350 calls of the kernel):
      attention in float64 (an exact product of two float32 numbers; sums whose order changes only bits far below
      float32's, masked holes included) by the fused kernel, rounded back to float32: one call per layer, where
      translating a batch of 8 rows x 4 queries a call per query cost ~20% more.
    """
    if q.dtype == torch.float32 and (k.dtype == torch.float64 or order is WIDE):
        return F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask,
                                              enable_gqa=q.shape[1] != k.shape[1]).float()
    if q.dtype == torch.float32:
        keys = order if isinstance(order, QueryKeys) else query_keys(mask, q.shape[2], k.shape[2])
        return _attend_each(q, k, v, keys)
    B, H, T, Dh = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    G = H // Hkv
    m = T * G
    rows = q.view(B, Hkv, G, T, Dh).transpose(2, 3).reshape(B, Hkv, m, Dh)  # query-major: row t * G + g
    scores = (rows * Dh ** -0.5) @ k.transpose(-1, -2)  # (B, Hkv, T*G, S)
    scores = scores.view(B, Hkv, T, G, S).to(torch.promote_types(scores.dtype, torch.float32))
    if mask is None:
        mask = torch.ones(1, 1, 1, S, dtype=torch.bool, device=q.device)
    mask = mask.expand(B, 1, T, S)
    if order is None:
        order = key_order(mask)
    if order.lead < S:  # holes: sum over each query's keys in the order of a block
        return _attend_packed(scores, v, order).transpose(2, 3).reshape(B, H, T, Dh)
    scores = scores.masked_fill(~mask[:, :, :, None, :], float("-inf"))
    weights = scores.softmax(-1).to(v.dtype).view(B, Hkv, m, S)
    y = (weights @ v).view(B, Hkv, T, G, Dh)
    return y.transpose(2, 3).reshape(B, H, T, Dh)


@dataclass(frozen=True)
class QueryKeys:
    """For float32 ``attend``: the keys each query sees, read once per call from the mask (``query_keys``).

    spans[b][t]: the number n of keys query t of row b sees, the first n (a block, a greedy step, a right-padded
    source), or the slots it sees where they have holes (a candidate tree's node: the prefix and its ancestors, in slot
    order, which is the order its accepted path takes in the cache). ``aligned``: every row's spans are the same
    numbers (one call per query serves the whole batch). ``full``: every query sees every key."""

    spans: list[list[int | Tensor]]
    aligned: bool
    full: bool


def query_keys(mask: Tensor | None, T: int, S: int) -> QueryKeys:
    """``QueryKeys`` of a mask (B, 1, T or 1, S) over S keys (None: every one of T queries sees every key)."""
    if mask is None:
        return QueryKeys([[S] * T], aligned=True, full=True)
    B = mask.shape[0]
    seen = mask[:, 0].expand(B, T, S)
    n = seen.sum(-1)  # (B, T)
    prefix = (seen == (torch.arange(S, device=mask.device) < n[..., None])).all(-1)  # the first n keys, no holes
    counts, whole = n.tolist(), prefix.tolist()
    spans = [[counts[b][t] if whole[b][t] else seen[b, t].nonzero()[:, 0] for t in range(T)] for b in range(B)]
    aligned = all(all(whole[b]) and counts[b] == counts[0] for b in range(B))
    return QueryKeys(spans, aligned, aligned and all(c == S for c in counts[0]))


def _attend_each(q: Tensor, k: Tensor, v: Tensor, keys: QueryKeys) -> Tensor:
    """float32 ``attend``: each query over exactly its visible keys (``QueryKeys``), by the fused kernel, which
    computes each (row, head) on its own, so a batch of aligned rows goes query by query for every row at once."""
    gqa = q.shape[1] != k.shape[1]

    def one(qs: Tensor, ks: Tensor, vs: Tensor) -> Tensor:
        if torch.get_num_threads() > 1:
            # with more than one thread the kernel's float32 sums depend on which thread takes a row (seen with 2
            # threads from 60 keys on: the rows of a batch's second half differed in the last bit from the same rows
            # alone): there, float64 sums, rounded back (as the in-house Transformer's attention, ``attend``)
            return F.scaled_dot_product_attention(qs.double(), ks.double(), vs.double(), enable_gqa=gqa).float()
        return F.scaled_dot_product_attention(qs, ks, vs, enable_gqa=gqa)

    if keys.full and q.shape[2] == 1:  # one token per row, all rows at the same length (a greedy step): one call
        return one(q, k, v)
    groups = [(slice(None), keys.spans[0])] if keys.aligned else \
        [(slice(b, b + 1), spans) for b, spans in enumerate(keys.spans)]
    out = []
    for rows, spans in groups:
        qb, kb, vb = q[rows], k[rows], v[rows]
        seen = [slice(n) if isinstance(n, int) else n for n in spans]  # the first n keys, or the slots of a tree's node
        out.append(torch.cat([one(qb[:, :, t:t + 1], kb[:, :, at], vb[:, :, at]) for t, at in enumerate(seen)], 2))
    return torch.cat(out)


@dataclass(frozen=True)
class KeyOrder:
    """For a mask with holes (a candidate tree: a node sees its ancestors, not the siblings between them), each query's
    visible keys packed to the left, in slot order: the layout a block or a greedy step has (masked keys only after
    the visible ones). Sums over keys take a different order when masked zeros sit between visible keys (vector lanes
    and bf16 pairs shift), so ``attend`` sums in this order. The same for every layer of a call (``key_order``).

    lead: the first keys (the cached prefix every query sees) keep their place in every query's order (all S keys: a
    mask without holes, nothing to reorder); slots (B, 1, T, S): each query's keys in its order (empty where lead = S);
    visible (B, 1, T, S): the mask in that order; ``rows``: ``_attend_packed``'s value rows per value layout, made at
    the call's first layer."""

    lead: int
    slots: Tensor
    visible: Tensor
    rows: dict = field(default_factory=dict, compare=False, repr=False)


def key_order(mask: Tensor) -> KeyOrder:
    """``KeyOrder`` of a mask (B, 1, T, S); ``lead`` = S where every query's visible keys come first already."""
    B, _, T, S = mask.shape
    if T == 1 or not bool((mask[..., 1:] & ~mask[..., :-1]).any()):
        return KeyOrder(S, mask.new_empty(B, 1, T, 0, dtype=torch.long), mask)
    order = torch.sort((~mask).to(torch.uint8), dim=-1, stable=True).indices  # visible keys first
    same = (order == torch.arange(S, device=order.device)).flatten(0, 2).all(0)  # (S,)
    lead = int(same.int().cumprod(0).sum())
    return KeyOrder(lead, order, mask.gather(-1, order))


def _attend_packed(scores: Tensor, v: Tensor, keys: KeyOrder) -> Tensor:
    """``attend`` over each query's visible keys packed to the left (``KeyOrder``): every query's G rows times its own
    copy of the values in its key order. scores (B, Hkv, T, G, S) float32; returns (B, Hkv, T, G, Dh).
    The copies are one ``index_select`` of whole value rows (Dh numbers) from the cache's memory where its layout
    allows (a value row at slot s of (b, h) is row b·B' + h·H' + s of it), 3x faster than gathering number by number
    (SmolLM2, bf16, a 16-node tree after 80 tokens: 100 vs 280 us a layer)."""
    B, Hkv, T, G, S = scores.shape
    Dh = v.shape[-1]
    scores = scores.gather(-1, keys.slots[:, :, :, None, :].expand(B, Hkv, T, G, S))
    scores = scores.masked_fill(~keys.visible[:, :, :, None, :], float("-inf"))
    weights = scores.softmax(-1).to(v.dtype)  # (B, Hkv, T, G, S)
    sb, sh, ss, sd = v.stride()
    if ss == Dh and sd == 1 and sb % Dh == 0 and sh % Dh == 0:
        if (sb, sh, Hkv) not in keys.rows:  # the same for every layer of a call: one cache
            base = (torch.arange(B, device=v.device) * (sb // Dh))[:, None] + torch.arange(Hkv, device=v.device) * (
                sh // Dh)
            rows = (base[:, :, None, None] + keys.slots).flatten()  # (B * Hkv * T * S,) value rows
            keys.rows[sb, sh, Hkv] = rows, int(rows.max()) + 1
        rows, size = keys.rows[sb, sh, Hkv]
        packed = v.as_strided((size, Dh), (Dh, 1)).index_select(0, rows).view(B, Hkv, T, S, Dh)
    else:
        packed = v[torch.arange(B, device=v.device)[:, None, None, None],
                   torch.arange(Hkv, device=v.device)[None, :, None, None], keys.slots]
    return weights @ packed  # (B, Hkv, T, G, Dh): per query, G rows over its own packed keys


def pack(w: Tensor, out_in: bool) -> Tensor | None:
    """``w`` as oneDNN's packed float32 weight (an opaque tensor for ``packed_mm``), or None where oneDNN is missing.

    Why: in float32 MKL multiplies one row fast (a GEMV) but 2-8 rows ~3x slower per call on the CPUs here, which is
    what made verifying a block cost 2-3 greedy steps; oneDNN's packed kernel costs about the same for 1 to 4 rows
    (recipes/core/probes/small_m_gemm.py: a SmolLM2 layer's products at 4 rows 1.4x (AVX-512) / 1.6x (AVX2) of 1 row,
    MKL 3.5x / 2.7x). Its result for a row does not depend on the other rows (2 to 8), so with a lone row fed beside a
    copy of itself (as ``mm`` does in bf16) float32 decoding is batch-invariant too.

    bfloat16 (a CPU with native bf16): ``F.linear`` re-lays the weight out for oneDNN at every call; the packed copy
    gives the same bits (checked for 1 to 32 rows on SmolLM2's shapes) ~1.5x faster for 1 to 8 rows."""
    if w.dtype not in (torch.float32, torch.bfloat16) or not w.is_cpu or not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._reorder_linear_weight(w if out_in else w.t().contiguous(), 8)
    except (RuntimeError, AttributeError):  # a build without these ops
        return None


def packed_suits(x: Tensor, plan: Sequence[int] | None = None) -> bool:
    """Whether ``packed_mm`` is the faster way to multiply ``x`` (..., in) by a packed weight: always in bfloat16; in
    float32 for two rows or more, and for a lone row where the ``plan`` (``row_plan``) runs one row as more: where
    MKL's one-row kernel (a GEMV) measured slower than the packed kernel on two rows. It was faster on the AVX2-only
    EPYC of the first sessions (50 against 70 ms a SmolLM2 step), slower on an AVX-512 EPYC (the whole step 23.3
    against 19.2 ms, 2026-12-05): hence measured per machine."""
    if x.dtype != torch.float32 or x.numel() > x.shape[-1]:
        return True
    return plan is not None and len(plan) > 1 and plan[1] > 1


def packed_mm(x: Tensor, packed: Tensor, plan: Sequence[int] | None = None) -> Tensor:
    """``x @ w`` (..., in) -> (..., out) with a weight from ``pack``; every row's bits independent of the others.
    ``plan`` (``row_plan``): m rows run as ``plan[m]`` >= m, padded with copies of the last, where that is cheaper."""
    rows = x.reshape(-1, x.shape[-1])
    m = rows.shape[0]
    run = rows_to_run(m, plan)
    if run > m:
        rows = torch.cat([rows, rows[-1:].expand(run - m, -1)])
    y = torch.ops.mkldnn._linear_pointwise(rows, packed, None, "none", [], "")
    return (y[:m] if run > m else y).reshape(*x.shape[:-1], y.shape[-1])


def rows_to_run(m: int, plan: Sequence[int] | None) -> int:
    """How many rows ``packed_mm`` runs m rows as: ``plan[m]``, and a lone row as two are run (beside copies of
    itself: the one-row kernel sums in another order; bf16 on an AVX-512 EPYC runs 2 rows as 3, 15% faster)."""
    least = max(m, 2)
    return plan[least] if plan is not None and least < len(plan) else least


def row_plan(times: dict[int, float], gain: float = 0.1) -> list[int]:
    """plan[m], m = 0..max(times): how many rows to run m rows as, from ``times`` (row count -> ms of the same
    products; 1: one row through MKL's one-row kernel, if measured, so that plan[1] > 1 runs a lone float32 row
    packed beside a copy of itself where that is cheaper: ``packed_suits``).
    oneDNN's packed float32 kernel picks its register blocking by the number of rows, and some counts cost more than
    larger ones (``measure_rows`` on an AVX-512 EPYC, one thread, SmolLM2's layer products: 2 rows 50 ms, 3-6 rows
    33-36 ms, 7-8 rows 42 ms); a row's bits do not depend on the rows beside it, so m rows may run as the cheapest
    count r >= m, padded, where that saves more than ``gain`` of m's time."""
    most = max(times)
    plan = list(range(most + 1))
    for m in sorted(times):
        best = min((r for r in times if r >= m), key=lambda r: (times[r], r))
        if times[best] < (1 - gain) * times[m]:
            plan[m] = best
    return plan


def measure_rows(weights: Sequence[tuple[Tensor, int]], most: int = 8, repeats: int = 3,
                 lone: Sequence[tuple[Tensor, bool]] = ()) -> dict[int, float]:
    """Row count (2..most) -> ms of multiplying that many rows by every packed weight (``pack``, with its input width)
    in ``weights``: the fastest of ``repeats``, each count's turn interleaved with the others'. With ``lone`` (the same
    matrices unpacked, each with its ``out_in`` layout), also 1 -> ms of one row by each through ``mm`` (MKL's
    one-row kernel in float32), for ``row_plan`` to weigh against the packed kernel on two rows."""
    gen = torch.Generator().manual_seed(0)
    dtype = weights[0][0].dtype
    widths = {w for _, w in weights}
    inputs = {m: {w: torch.randn(m, w, generator=gen).to(dtype) for w in widths} for m in range(2, most + 1)}
    if lone:
        inputs[1] = {w: torch.randn(1, w, generator=gen).to(dtype) for w in widths}
    times: dict[int, float] = {}
    for round_ in range(repeats + 1):  # round 0 warms the kernels up
        for m, xs in inputs.items():
            start = time.perf_counter()
            if m == 1:
                for w, out_in in lone:
                    mm(xs[w.shape[int(out_in)]], w, out_in)
            else:
                for packed, width in weights:
                    packed_mm(xs[width], packed)
            if round_:
                times[m] = min(times.get(m, float("inf")), 1e3 * (time.perf_counter() - start))
    return times
