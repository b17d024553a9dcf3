"""A compact pre-LayerNorm Transformer: decoder-only or encoder-decoder.

The model knows nothing about decoding. It maps tokens (and, for encoder-decoder, an encoded source) to hidden states
at every fed position; ``project`` turns hidden states into vocabulary logits with the (tied) embedding matrix.
With a ``KVCache``, ``decode`` appends the fed tokens after each row's cached length.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig
from .cache import KVCache
from . import invariant as inv
from .quant import BITS, QuantizedMatrix, check_weights, int4_problem


def linear(layer: nn.Linear, x: Tensor, invariant: bool = False) -> Tensor:
    """``layer(x)``; batch-invariant if asked (see ``invariant.mm``); quantized if ``Transformer.with_weights`` made it
    so (a row's bits are then its own anyway)."""
    quantized = getattr(layer, "quantized", None)
    if quantized is not None:
        y = quantized(x)
        return y if layer.bias is None else y + layer.bias
    return inv.mm(x, layer.weight, out_in=True, bias=layer.bias, invariant=True) if invariant else layer(x)


def sinusoidal_table(n_positions: int, d_model: int) -> Tensor:
    position = torch.arange(n_positions, dtype=torch.float64)[:, None]
    rate = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(10000.0) / d_model))
    table = torch.zeros(n_positions, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate[: d_model // 2])
    return table


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.d_model // cfg.n_heads
        self.q = nn.Linear(cfg.d_model, cfg.d_model)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.dropout

    def split(self, x: Tensor) -> Tensor:  # (B, T, D) -> (B, H, T, Dh)
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)

    def keys_values(self, x: Tensor, invariant: bool = False) -> tuple[Tensor, Tensor]:
        k, v = linear(self.kv, x, invariant).chunk(2, dim=-1)
        return self.split(k), self.split(v)  # (B, H, S, Dh) each

    def attend(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool = False,
               invariant: bool = False, order: inv.KeyOrder | None = None) -> Tensor:
        q = self.split(linear(self.q, x, invariant))  # (B, H, T, Dh)
        if invariant:  # a batch-invariant decoding session (invariant.py); elsewhere the fused kernel
            if mask is None:
                mask = torch.ones(1, 1, 1, k.shape[2], dtype=torch.bool, device=k.device)
            if q.dtype == torch.float32:  # quantized weights: attention in float64, a call per layer (invariant.attend)
                k, v = k.double(), v.double()
            y = inv.attend(q, k, v, mask, order)  # order: the mask's, computed once per call (or here)
        else:
            p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal and mask is None)
        B, _, T, _ = y.shape
        return linear(self.out, y.transpose(1, 2).reshape(B, T, -1), invariant)  # (B, T, D)


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(cfg.d_model, cfg.d_ff), nn.Linear(cfg.d_ff, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, invariant: bool = False) -> Tensor:
        return linear(self.down, self.drop(F.gelu(linear(self.up, x, invariant))), invariant)


class EncoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(cfg.d_model), Attention(cfg)
        self.norm2, self.ff = nn.LayerNorm(cfg.d_model), FeedForward(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, mask: Tensor, invariant: bool = False) -> Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.attn.attend(h, *self.attn.keys_values(h, invariant), mask, invariant=invariant))
        return x + self.drop(self.ff(self.norm2(x), invariant))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm1, self.self_attn = nn.LayerNorm(cfg.d_model), Attention(cfg)
        if cfg.encoder_decoder:
            self.norm_x, self.cross_attn = nn.LayerNorm(cfg.d_model), Attention(cfg)
        self.norm2, self.ff = nn.LayerNorm(cfg.d_model), FeedForward(cfg)
        self.drop = nn.Dropout(cfg.dropout)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        nn.init.normal_(self.embed.weight, std=cfg.d_model ** -0.5)
        self.register_buffer("pos_table", sinusoidal_table(cfg.max_positions, cfg.d_model).float(), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_encoder_layers))
        self.encoder_norm = nn.LayerNorm(cfg.d_model) if cfg.encoder_decoder else None
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.weights = "float32"  # model.quant.WEIGHTS; "int8"/"int4" after ``with_weights``
        self.quantized_head: QuantizedMatrix | None = None
        self._packed_head: tuple[tuple[int, int], Tensor | None] | None = None  # (the embedding's identity, ``pack``)

    def with_weights(self, weights: str) -> "Transformer":
        """This model decoding with ``weights`` (model.quant.WEIGHTS), in place, for inference: "float32"/"bfloat16"
        cast it; "int8"/"int4" keep float32 activations and quantize every linear layer's matrix (int4 in groups of 32
        inputs) and the tied output projection (int8; the embedding itself stays float). Quantized layers drop their
        float matrices, so train the float model, then quantize it."""
        check_weights(weights)
        if self.weights in BITS:
            raise ValueError(f"this model's weights are already {self.weights}")
        if weights not in BITS:
            self.weights = weights
            return self.to(getattr(torch, weights))
        self.float()
        layers = [m for m in self.modules() if isinstance(m, nn.Linear)]
        if weights == "int4":
            problem = next((int4_problem(*m.weight.shape) for m in layers if int4_problem(*m.weight.shape)), None)
            if problem:
                raise ValueError(f"this model cannot be int4: {problem}")
        with torch.no_grad():
            for m in layers:
                m.quantized = QuantizedMatrix(m.weight, BITS[weights])
                m.weight.data = torch.empty(0)
            self.quantized_head = QuantizedMatrix(self.embed.weight, 8)
        self.weights = weights
        return self

    # -- pieces -------------------------------------------------------------------------------------------------
    def embed_tokens(self, tokens: Tensor, positions: Tensor) -> Tensor:
        if int(positions.max()) >= self.cfg.max_positions:
            raise ValueError(f"position {int(positions.max())} is beyond the model's {self.cfg.max_positions} positions")
        x = self.embed(tokens) * math.sqrt(self.cfg.d_model) + self.pos_table[positions].to(self.embed.weight.dtype)
        return self.drop(x)

    def project(self, hidden: Tensor, invariant: bool = False) -> Tensor:
        """Vocabulary logits (..., V) of hidden states (..., D): the embedding matrix, tied."""
        if self.quantized_head is not None:
            return self.quantized_head(hidden)
        if invariant:
            return inv.mm(hidden, self.embed.weight, out_in=True, invariant=True)
        packed = self.packed_head()
        if packed is not None:
            return inv.packed_mm(hidden, packed)
        return hidden @ self.embed.weight.t()

    def packed_head(self) -> Tensor | None:
        """A oneDNN-packed copy of the output projection (``invariant.pack``) for float32 inference on the CPU, where
        the vocabulary is large: verifying a block and scoring the heads' proposals project several rows per call, and
        MKL's product costs ~4x per call from 1 to 8 rows where the packed one costs ~2x (the translation model's
        8000 x 256 projection, one thread, AVX-512: 2 / 4 / 8 rows 0.86 / 1.51 / 1.88 ms against 0.24 / 0.27 /
        0.41; one row 0.48 against 0.21). Small matrices stay on MKL (below ~1M weights the packed call's own
        ~50 us cost more than it saves). Made at first use and again whenever the embedding changes (an optimizer
        step); never while autograd records (training)."""
        w = self.embed.weight
        if torch.is_grad_enabled() or w.dtype != torch.float32 or not w.is_cpu or w.numel() < 2 ** 20:
            return None
        identity = (w.data_ptr(), w._version)
        if self._packed_head is None or self._packed_head[0] != identity:
            self._packed_head = (identity, inv.pack(w.detach(), out_in=True))
        return self._packed_head[1]

    def encode(self, source: Tensor, source_mask: Tensor | None = None,
               invariant: bool = False) -> tuple[Tensor, Tensor]:
        """Encode a right-padded source (B, S) once. Returns memory (B, S, D) and its validity mask (B, S)."""
        if not self.cfg.encoder_decoder:
            raise ValueError("this model is decoder-only: it has no encoder")
        if source_mask is None:
            source_mask = source != self.cfg.pad_id
        positions = torch.arange(source.shape[1], device=source.device).expand_as(source)
        x = self.embed_tokens(source, positions)
        mask = source_mask[:, None, None, :]  # (B, 1, 1, S): every query sees the valid keys
        for layer in self.encoder:
            x = layer(x, mask, invariant)
        return self.encoder_norm(x), source_mask

    # -- the decoder ----------------------------------------------------------------------------------------------
    def decode(self, tokens: Tensor, cache: KVCache | None = None, memory: Tensor | None = None,
               memory_mask: Tensor | None = None, tree=None) -> Tensor:
        """Hidden states (B, T, D) at every fed position.

        Without a cache, ``tokens`` is a whole sequence from position 0 (training, reference forward). With a cache,
        the tokens are appended after each row's cached length and the cache's lengths advance by T; for an
        encoder-decoder the cache must hold the encoder memory (``attach_memory``). ``tree`` (cached only): the fed
        tokens are the nodes of a candidate tree (see ``KVCache.layout``), each attending to its ancestors only.
        """
        B, T = tokens.shape
        cross = cross_mask = None
        invariant = cache is not None and cache.invariant
        if cache is None:
            if tree is not None:
                raise ValueError("a candidate tree is fed into a cache: decode(tokens, cache, tree=...)")
            positions = torch.arange(T, device=tokens.device).expand(B, T)
            self_mask = None
            if self.cfg.encoder_decoder:
                if memory is None:
                    raise ValueError("an encoder-decoder model needs the encoder memory to decode")
                cross = [layer.cross_attn.keys_values(memory) for layer in self.decoder]
                cross_mask = memory_mask[:, None, None, :] if memory_mask is not None else None
        else:
            if cache.batch_size != B:
                raise ValueError(f"tokens have {B} rows but the cache has {cache.batch_size}")
            # slots (B, T) in the cache; positions; (B, 1, T, span) mask: a query sees the cached keys and the fed ones
            # before it (a block) or its ancestors (a tree), nothing past it, stale or not
            slots, positions, self_mask = cache.layout(T, tree)
            if B == 1 and T == 1 and not invariant:
                self_mask = None  # one query sees the whole span
            if self.cfg.encoder_decoder:
                if cache.cross is None:
                    raise ValueError("the cache holds no encoder memory: call model.attach_memory(cache, ...) first")
                cross, cross_mask = cache.cross, cache.memory_mask[:, None, None, :]
        x = self.embed_tokens(tokens, positions)
        # the mask's key order, once per call (bfloat16; quantized float32 attends in float64: Attention.attend)
        order = inv.key_order(self_mask) if invariant and x.dtype != torch.float32 else None
        for i, layer in enumerate(self.decoder):
            h = layer.norm1(x)
            k, v = layer.self_attn.keys_values(h, invariant)
            if cache is not None:
                k, v = cache.write(i, slots, k, v)
            x = x + layer.drop(layer.self_attn.attend(h, k, v, self_mask, causal=cache is None, invariant=invariant,
                                                      order=order))
            if cross is not None:
                x = x + layer.drop(layer.cross_attn.attend(layer.norm_x(x), *cross[i], cross_mask, invariant=invariant))
            x = x + layer.drop(layer.ff(layer.norm2(x), invariant))
        if cache is not None:
            cache.advance(T)
        return self.norm(x)

    def new_cache(self, batch_size: int, capacity: int) -> KVCache:
        # capacity counts cache slots, not positions: a candidate tree holds more slots than positions (its nodes share
        # positions); positions are checked where they are made (check_inputs, embed_tokens)
        # quantized weights (float32, batch-invariant): keys and values in float64, as ``Attention.attend`` uses them
        p = self.embed.weight
        quantized = self.weights in BITS
        return KVCache(self.cfg.n_layers, batch_size, self.cfg.n_heads, capacity, self.cfg.d_model // self.cfg.n_heads,
                       dtype=torch.float64 if quantized else p.dtype, device=p.device,
                       invariant=inv.batch_invariant(p.dtype) or quantized)

    def attach_memory(self, cache: KVCache, memory: Tensor, memory_mask: Tensor) -> None:
        """Compute every decoder layer's cross-attention K/V of the encoder memory once and keep them in the cache."""
        cache.cross = [layer.cross_attn.keys_values(memory, cache.invariant) for layer in self.decoder]
        cache.memory_mask = memory_mask

    def forward(self, tokens: Tensor, source: Tensor | None = None) -> Tensor:
        """Uncached hidden states (B, T, D) of a whole target sequence (teacher forcing)."""
        memory = memory_mask = None
        if self.cfg.encoder_decoder:
            if source is None:
                raise ValueError("an encoder-decoder model needs a source")
            memory, memory_mask = self.encode(source)
        return self.decode(tokens, memory=memory, memory_mask=memory_mask)
