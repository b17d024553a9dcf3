"""A preallocated key/value cache addressed by position, with a length per batch row.

Rollback only moves the per-row lengths: entries past a row's length are never attended to (the attention mask only
lets a query at position p see keys at positions <= p, and a row's keys past its length are rewritten before any query
reaches them). ``truncate`` is the one function that owns rollback, and it takes absolute lengths.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .invariant import batch_invariant

# A bfloat16 cache hands out key spans rounded up to a multiple of SPAN_STEP (the keys past the last written slot are
# masked out). Its attention (``invariant.attend``) is two oneDNN matrix products per layer whose shapes include the
# span, and oneDNN builds a kernel for every shape it has not seen (~0.3-0.4 ms per product on the AVX-512 CPU here,
# against ~20 us once built): with the span growing by a token or a block at every call, every blockwise call paid
# that for the base's attention and again for each draft step of the feature drafter (one-query greedy steps hardly
# did; ``recipes/lm/07_drafter_benchmark.py``: one k = 3 draft 4.8 ms on spans first seen, 2.9 ms on spans seen
# before; SmolLM2 k = 4 in a fresh process 52 -> 69 tokens/s).
# Trailing masked keys change no bit of a query's result (checked for spans 1..700 and up to 24 query rows; the
# blocks of blockwise decoding relied on it already), so outputs stay as they were.
# Such a cache also holds only the slots its spans have reached, grown SPAN_STEP slots at a time (``span``), so that a
# layer's keys and values over the span are the whole of that layer's buffer: oneDNN's batched product copies every
# operand whose matrices do not follow one another in memory, and a span cut out of a longer buffer made it copy the
# layer's keys and values at every call (SmolLM2, 8 rows x 192 keys: 196 -> 74 us a layer; same bits, the copy had
# the same layout).
SPAN_STEP = 64


class KVCache:
    """Self-attention K/V of every decoder layer, shape (L, B, H, T_max, Dh), plus the encoder's cross-attention K/V.

    ``lengths[b]`` is the number of tokens of row b held in the cache; the next token fed to row b sits at that position.
    ``invariant``: whether the session decoding over this cache is batch-invariant (``invariant.batch_invariant``,
    decided by the dtype when the cache is made, unless the model says otherwise: quantized weights); the model reads it
    on every call that uses the cache.
    """

    def __init__(self, n_layers: int, batch_size: int, n_heads: int, capacity: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                 invariant: bool | None = None) -> None:
        if batch_size < 1:
            raise ValueError("the batch is empty: a cache needs at least one row")
        self.invariant = batch_invariant(dtype) if invariant is None else invariant
        self.capacity = capacity
        self.span_step = SPAN_STEP if dtype == torch.bfloat16 else 1  # float32 kernels sum masked keys in another order
        # slots held: a bf16 cache grows with its spans (``span``); others hold the whole capacity from the start
        held = min(capacity, self.span_step) if self.span_step > 1 else capacity
        shape = (n_layers, batch_size, n_heads, held, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=device)
        self._where: tuple[Tensor, int | None, Tensor, int] | None = None  # ``write``'s reading of a call's slots
        # Encoder-decoder only: per layer (k, v) of the encoder memory, each (B, H, S, Dh), and its padding mask (B, S).
        self.cross: list[tuple[Tensor, Tensor]] | None = None
        self.memory_mask: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.lengths.shape[0]

    @property
    def held(self) -> int:
        """Slots the buffers hold now (``span``): the capacity, or for a growing bf16 cache those its spans reached."""
        return self.k.shape[3]

    def span(self, keys: int) -> int:
        """The key span handed out for ``keys`` keys: rounded up to ``span_step`` (at most the capacity). A bf16 cache
        hands out every slot it holds, growing its buffers to the span first (above: a layer's span is then its whole
        buffer, which oneDNN multiplies without a copy); the keys past the written ones are masked out."""
        span = min(-(-keys // self.span_step) * self.span_step, self.capacity)
        if self.span_step == 1:
            return span
        if span > self.held:  # grow: the written slots move into buffers holding the span
            for name in ("k", "v"):
                old = getattr(self, name)
                new = old.new_zeros(old.shape[:3] + (span,) + old.shape[4:])
                new[:, :, :, :old.shape[3]] = old
                setattr(self, name, new)
        return self.held

    def positions(self, n_new: int) -> Tensor:
        """Positions (B, T) that ``n_new`` tokens fed to every row will occupy."""
        pos = self.lengths[:, None] + torch.arange(n_new, device=self.lengths.device)
        if int(pos.max()) >= self.capacity:
            raise ValueError(f"cache overflow: position {int(pos.max())} >= capacity {self.capacity}")
        return pos

    def layout(self, n_new: int, tree=None) -> tuple[Tensor, Tensor, Tensor]:
        """Where ``n_new`` tokens fed to every row go: their cache slots (B, T), right after each row's length; their
        positions (B, T); and the attention mask (B, 1, T, span), True where a query sees a key.

        A block (``tree`` None) is a chain: positions are the slots and a query sees every key up to its own. A candidate
        tree (anything with ``depth`` (B, T), each node's depth below the first fed token, and ``visible`` (B, T, T),
        True where node i sees node j: its ancestors and itself) puts node i at position length + depth[i]; it sees the
        row's cached tokens and, among the fed nodes, its ancestors and itself — never a sibling's branch."""
        slots = self.positions(n_new)
        span = self.span(int(slots[:, -1].max()) + 1)
        key = torch.arange(span, device=slots.device)
        if tree is None:
            return slots, slots, key[None, None, None, :] <= slots[:, None, :, None]
        cached = key[None, :] < self.lengths[:, None]  # (B, span)
        fed = (key[None, :] - self.lengths[:, None]).clamp(0, n_new - 1)  # (B, span): the fed node at a slot, if any
        sees = tree.visible.gather(2, fed[:, None, :].expand(-1, n_new, -1)) & ~cached[:, None, :]  # (B, T, span)
        sees &= key[None, None, :] < (self.lengths[:, None, None] + n_new)
        return slots, self.lengths[:, None] + tree.depth, (cached[:, None, :] | sees)[:, None]

    def write(self, layer: int, positions: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store k, v (B, H, T, Dh) at slots ``positions`` (B, T); return the keys/values (B, H, span, Dh) to attend
        over."""
        if self._where is None or self._where[0] is not positions:  # once per call, not per layer
            start = positions[:, 0]
            aligned = bool((start == start[0]).all())  # rows aligned (always at batch 1): a plain slice
            rows = torch.arange(positions.shape[0], device=positions.device)[:, None]
            self._where = (positions, int(start[0]) if aligned else None, rows,
                           self.span(int(positions[:, -1].max()) + 1))
        _, s, rows, span = self._where
        if s is not None:
            self.k[layer, :, :, s:s + k.shape[2]] = k
            self.v[layer, :, :, s:s + v.shape[2]] = v
        else:  # rows at their own lengths (``by_slot``: not ``scatter_``, see there)
            self.by_slot(self.k[layer])[rows, positions] = k.transpose(1, 2).to(self.k.dtype)
            self.by_slot(self.v[layer])[rows, positions] = v.transpose(1, 2).to(self.v.dtype)
        return self.k[layer, :, :, :span], self.v[layer, :, :, :span]

    def advance(self, n_new: int) -> None:
        """Count ``n_new`` freshly written tokens in every row (called by the model after a forward)."""
        self.lengths = self.lengths + n_new

    def truncate(self, lengths: Tensor) -> None:
        """Roll every row back (or forward over already written entries) to an absolute length."""
        lengths = torch.as_tensor(lengths, dtype=torch.long, device=self.lengths.device)
        if lengths.shape != self.lengths.shape:
            raise ValueError(f"truncate needs one length per row ({self.batch_size}), got shape {tuple(lengths.shape)}")
        if bool((lengths < 0).any()) or bool((lengths > self.capacity).any()):
            raise ValueError(f"truncate lengths must lie in [0, {self.capacity}], got {lengths.tolist()}")
        self.lengths = lengths.clone()

    def compact(self, start: Tensor, path: Tensor, lengths: Tensor) -> None:
        """Keep one path of a fed candidate tree per row: the entries at slots start + path[b, j] move to slots start + j
        (contiguous, as if the path had been fed as a block), then each row is cut to the absolute ``lengths`` (B,).
        ``path`` (B, d) holds node indices, with path[b, j] >= j (a tree's nodes are fed parents first)."""
        d = path.shape[1]
        if bool((path == torch.arange(d, device=path.device)).all()):  # every row kept its first d nodes: in place
            self.truncate(lengths)
            return
        rows = torch.arange(path.shape[0], device=path.device)[:, None]
        src, dst = start[:, None] + path, start[:, None] + torch.arange(d, device=path.device)  # (B, d) slots
        for buf in (self.k, self.v):
            slots = buf.permute(1, 3, 0, 2, 4)  # (B, T_max, L, H, Dh): whole entries by slot (``by_slot``)
            slots[rows, dst] = slots[rows, src]  # the read copies first: sources and destinations may overlap
        self.truncate(lengths)

    @staticmethod
    def by_slot(buf: Tensor) -> Tensor:
        """A view of ``buf`` (B, H, T_max, ...) as (B, T_max, H, ...), so that ``view[rows, slots]`` reads or writes
        whole entries. Entries are moved by indexing, never by ``scatter_``: on the CPU, PyTorch's ``scatter_`` into a
        bfloat16 or float16 tensor costs in proportion to the whole tensor, not to what it writes (``write`` at batch 8
        with rows at their own lengths, SmolLM2 bf16: ~90 us per layer and buffer at 400 slots; a 1-token step of rows
        at their own lengths 28.2 -> 21.0 ms, where aligned rows take 20.2; ``compact`` 0.87 -> 0.06 ms at batch 1);
        indexing writes take 5-10 us."""
        return buf.transpose(1, 2)

    def select(self, rows: Tensor) -> None:
        """Keep only ``rows`` (in that order; repeats allowed): drops finished rows, reorders beams."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.lengths.device)
        if rows.numel() == 0:
            raise ValueError("select needs at least one row")
        n = rows.numel()
        if n <= self.k.shape[1]:
            # in place: the kept rows move to the front of the buffers (the right side is a copy, so rows may move onto
            # each other) and the buffers become views of those; their slots past each row's length hold what they
            # held, as after a rollback. A new zeroed buffer per finished row cost a whole cache: SmolLM2 bf16, 260
            # slots, 8 -> 7 rows 10 -> 3.8 ms, 32 -> 31 rows 140 -> 18 ms (several greedy steps, every time a row
            # ended).
            for buf in (self.k, self.v):
                for layer in buf:  # a layer at a time, whole rows: ~6x faster than one indexing over every layer
                    layer[:n] = layer.index_select(0, rows)
            self.k, self.v = self.k[:, :n], self.v[:, :n]
        else:  # more rows than the buffers hold (repeats)
            span = int(self.lengths.max())  # nothing past the longest row is ever needed again
            k = torch.zeros((self.k.shape[0], n) + self.k.shape[2:], dtype=self.k.dtype, device=self.k.device)
            v = torch.zeros_like(k)
            k[:, :, :, :span] = self.k[:, rows, :, :span]
            v[:, :, :, :span] = self.v[:, rows, :, :span]
            self.k, self.v = k, v
        self.lengths = self.lengths[rows]
        if self.cross is not None:
            self.cross = [(ck[rows], cv[rows]) for ck, cv in self.cross]
        if self.memory_mask is not None:
            self.memory_mask = self.memory_mask[rows]
