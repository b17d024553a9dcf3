"""A lean native Llama (SmolLM2 and kin) that loads Hugging Face weights and decodes over our ``KVCache``.

Why it exists: Hugging Face's per-call overhead made a 5-token forward cost 1.6-1.8x a 1-token one on two CPU cores,
which eats blockwise decoding's gain. This file is the whole architecture on a page (RMSNorm, rotary positions,
grouped-query attention, SiLU-gated MLP, tied output projection) with Q/K/V and gate/up fused into one matmul each.
Exactness is checked against Hugging Face (tests/test_hf_adapter.py): same logits to float32 rounding, same greedy
tokens. In bfloat16 (on CPUs with native bf16 a call verifying 2-6 tokens then costs about what a 1-token call does)
the model is batch-invariant: a token's hidden state has the same bits whether it is fed alone or in a block, in a
batch of one or of eight (``model/invariant.py``), so blockwise decoding stays token for token greedy there too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import diskcache
from ..config import HeadsConfig
from ..model import invariant as inv
from ..model.cache import KVCache
from ..model.heads import Heads, make_heads
from ..model.invariant import batch_invariant, cpu_has_bf16, measure_rows, mm, pack, packed_mm, packed_suits, row_plan
from ..model.quant import APART, BITS, QuantizedMatrix, SplitMatrix, check_weights
from ..model.session import CachedSession


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    max_positions: int = 2048
    tie_embeddings: bool = True

    @classmethod
    def from_hf(cls, c) -> "LlamaConfig":
        """From a ``transformers.LlamaConfig`` (default rotary scaling only)."""
        rope = getattr(c, "rope_parameters", None) or getattr(c, "rope_scaling", None) or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ValueError(f"only default rotary embeddings are supported, got {rope}")
        if getattr(c, "attention_bias", False) or getattr(c, "mlp_bias", False):
            raise ValueError("attention/MLP biases are not supported")
        theta = rope.get("rope_theta", getattr(c, "rope_theta", 10000.0))
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        return cls(vocab_size=c.vocab_size, d_model=c.hidden_size, n_layers=c.num_hidden_layers,
                   n_heads=c.num_attention_heads, n_kv_heads=c.num_key_value_heads, head_dim=head_dim,
                   d_ff=c.intermediate_size, rope_theta=float(theta), rms_eps=float(c.rms_norm_eps),
                   max_positions=c.max_position_embeddings, tie_embeddings=bool(c.tie_word_embeddings))


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    # As Hugging Face: normalise in float32, cast back, then scale. PyTorch's fused op normalises with the same bits as
    # x32 * rsqrt(mean(x32²) + eps) written out (checked on SmolLM2's rows, and on 200 random bf16 batches with
    # outlier channels) in one call instead of five (a bf16 step: no difference beyond this host's noise)
    if x.dtype == torch.float32 and weight.dtype == torch.float32:
        return torch.rms_norm(x, weight.shape, weight, eps)
    return weight * torch.rms_norm(x.float(), weight.shape, None, eps).to(x.dtype)


def rotary(positions: Tensor, inv_freq: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos and signed sin (B, 1, T, Dh) at positions (B, T), computed in float32 as Hugging Face does; the sin's first
    half is negated, which lets ``rotate`` turn the half-swap into one roll."""
    freqs = positions[..., None].float() * inv_freq.to(positions.device)  # (B, T, Dh/2)
    emb = torch.cat((freqs, freqs), dim=-1)
    sin = emb.sin()
    signed = torch.cat((-sin[..., :freqs.shape[-1]], sin[..., freqs.shape[-1]:]), dim=-1)
    return emb.cos().to(dtype)[:, None], signed.to(dtype)[:, None]


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding, "rotate half" layout (Hugging Face's): x (B, H, T, Dh), cos/signed sin (B, 1, T, Dh) from
    ``rotary``. x * cos + [-x2, x1] * sin, with -x2 * sin written x2 * (-sin): the same bits, one op instead of four."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * sin


MATRICES = ("w_qkv", "w_out", "w_gate_up", "w_down")


class Block(nn.Module):
    """One decoder layer. Its matrices are stored (in, out) for float32, where ``x @ w`` runs MKL's fast one-row
    kernel, and (out, in) for bfloat16, where oneDNN runs ``F.linear`` 1.3x faster per token (``Llama.cast``)."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        self.attn_norm = nn.Parameter(torch.ones(cfg.d_model))
        self.w_qkv = nn.Parameter(torch.zeros(cfg.d_model, q + 2 * kv))  # fused q, k, v projections
        self.w_out = nn.Parameter(torch.zeros(q, cfg.d_model))
        self.mlp_norm = nn.Parameter(torch.ones(cfg.d_model))
        self.w_gate_up = nn.Parameter(torch.zeros(cfg.d_model, 2 * cfg.d_ff))  # fused gate and up projections
        self.w_down = nn.Parameter(torch.zeros(cfg.d_ff, cfg.d_model))
        self.out_in = False  # the layout of the four matrices above: False (in, out), True (out, in)
        self.packed: dict[str, Tensor] = {}  # oneDNN-packed copies of the four matrices (``Llama.cast``)
        self.quantized: dict[str, QuantizedMatrix] = {}  # int8/int4 weights replacing the four (``Llama.with_weights``)

    def product(self, x: Tensor, name: str, invariant: bool, plan: list[int] | None = None,
                prompt: bool = False) -> Tensor:
        """``x`` times matrix ``name``. Several float32 rows (a block being verified, a batch) go through the packed
        oneDNN kernel where there is one (as many rows as ``plan`` says: ``Llama.row_plan``); a lone row through MKL's
        one-row kernel where that measured faster on this machine (the AVX2-only EPYC of the first sessions, one
        thread: 50 vs 70 ms per 1-token call), else packed beside a copy of itself (an AVX-512 EPYC: 18.8 vs 23.3 ms;
        ``invariant.packed_suits``). bfloat16 rows always go through the packed kernel (``invariant.pack``)."""
        if self.quantized:
            return self.quantized[name](x, prompt)  # int8/int4 weights: each row's bits its own (model/quant.py)
        if name in self.packed and packed_suits(x, plan):
            return packed_mm(x, self.packed[name], plan)
        return mm(x, getattr(self, name), self.out_in, invariant=invariant)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache | None, layer: int,
                slots: Tensor, mask: Tensor | None, invariant: bool = False, plan: list[int] | None = None,
                order: inv.KeyOrder | None = None, prompt: bool = False) -> Tensor:
        cfg = self.cfg
        B, T, _ = x.shape
        h = rms_norm(x, self.attn_norm, cfg.rms_eps)
        H, Hkv, Dh = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        qk, v = self.product(h, "w_qkv", invariant, plan, prompt).split([(H + Hkv) * Dh, Hkv * Dh], -1)
        qk = rotate(qk.view(B, T, H + Hkv, Dh).transpose(1, 2), cos, sin)  # queries and keys rotated at once
        q, k = qk[:, :H], qk[:, H:]  # (B, H, T, Dh), (B, Hkv, T, Dh)
        v = v.view(B, T, Hkv, Dh).transpose(1, 2)  # (B, Hkv, T, Dh)
        if cache is not None:
            k, v = cache.write(layer, slots, k, v)  # (B, Hkv, span, Dh)
        gqa = cfg.n_heads != cfg.n_kv_heads
        if invariant:
            # A token's bits must not depend on what else is fed beside it, or blockwise (a block per call) and greedy
            # (a token per call) part after a near-tie: the CPU's fused attention kernel sums differently for other
            # numbers of queries and key spans (model/invariant.py).
            y = inv.attend(q, k, v, mask, order)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=cache is None, enable_gqa=gqa)
        x = x + self.product(y.transpose(1, 2).reshape(B, T, -1), "w_out", invariant, plan, prompt)
        gate, up = self.product(rms_norm(x, self.mlp_norm, cfg.rms_eps), "w_gate_up", invariant, plan,
                                prompt).chunk(2, -1)
        return x + self.product(F.silu(gate) * up, "w_down", invariant, plan, prompt)


class Llama(nn.Module):
    """The base model. ``forward(tokens, cache)`` returns final-normed hidden states at every fed position."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.Parameter(torch.ones(cfg.d_model))
        # The output projection, stored (D, V) for the same reason as the layers' weights (a copy when tied).
        self.w_lm_head = nn.Parameter(torch.zeros(cfg.d_model, cfg.vocab_size))
        self.out_in = False  # the matrices' layout, set by ``cast``: (out, in) for bfloat16, else (in, out)
        self.packed_head: Tensor | None = None  # oneDNN-packed output projection (``cast``)
        self.row_plans: dict[int, list[int]] = {}  # thread count -> ``row_plan`` of the packed products
        self.weights = "float32"  # the weights' precision: one of model.quant.WEIGHTS (``with_weights``)
        self.quantized_head: QuantizedMatrix | SplitMatrix | None = None  # int8 output projection, quantized models
        self.prompt_copies = False  # int4 layers keep bf16 copies for prompts (``with_weights``)
        # A plain float32 tensor, not a buffer: ``model.to(torch.bfloat16)`` must not round the rotary frequencies.
        self.inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.int64).float()
                                                  / cfg.head_dim))

    def rotary(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        return rotary(positions, self.inv_freq, dtype)

    def row_plan(self) -> list[int] | None:
        """How many rows the packed products run m rows of a decoding call as (``invariant.row_plan``): measured
        once per machine and thread count on this model's own matrices (~1 s; cached on disk), None where nothing is
        packed. Row results do not depend on the padding, so this moves time only."""
        if self.packed_head is None:
            return None
        threads = torch.get_num_threads()
        if threads not in self.row_plans:
            matrices = [getattr(layer, n) for layer in self.layers for n in MATRICES] + [self.w_lm_head]
            # v2: float32 also times one row through MKL's one-row kernel (``packed_suits``)
            key = f"rows|v2|{diskcache.machine()}|{self.weights}|shapes={diskcache.shapes(matrices)}"
            times = diskcache.read("rows.json", key)
            if times is None:  # measured once per machine: the packed copies, with their input widths
                weights = [(layer.packed[name], getattr(layer, name).shape[int(layer.out_in)])  # (packed, input width)
                           for layer in self.layers for name in MATRICES if name in layer.packed]
                weights.append((self.packed_head, self.cfg.d_model))
                lone = ([(getattr(layer, name), layer.out_in) for layer in self.layers for name in MATRICES]
                        + [(self.w_lm_head, False)]) if self.weights == "float32" else []
                times = measure_rows(weights, lone=lone)
                diskcache.write("rows.json", key, times)
            self.row_plans[threads] = row_plan({int(m): float(ms) for m, ms in times.items()})
        return self.row_plans[threads]

    def cast(self, dtype: torch.dtype, packed: bool = True) -> "Llama":
        """This model in ``dtype`` (in place), its matrices laid out as that dtype's CPU kernels run fastest:
        (in, out) for float32, (out, in) for bfloat16 (measured here: 26 vs 35 ms per token in bf16, 30 vs 37 in fp32).
        On the CPU (``packed``) the layers' products also get oneDNN-packed copies of their matrices (twice the
        weights' memory): in float32 a call of 2-8 tokens then costs ~1.5 calls of one instead of ~3, in bfloat16 every
        call is ~1.5x cheaper (``Block.product``, ``invariant.pack``). A plain ``.to(dtype)`` gives the same results to
        float rounding, only slower."""
        if self.weights in BITS:
            raise ValueError(f"this model's weights are {self.weights}: cast a float model, then quantize it")
        out_in = dtype == torch.bfloat16
        self.to(dtype)
        with torch.no_grad():
            for layer in self.layers:
                if layer.out_in != out_in:
                    for name in MATRICES:
                        getattr(layer, name).data = getattr(layer, name).data.t().contiguous()
                    layer.out_in = out_in
                layer.packed = {}
                if packed:
                    for name in MATRICES:
                        weight = pack(getattr(layer, name).detach(), out_in)
                        if weight is not None:
                            layer.packed[name] = weight
            # the output projection too: the largest matrix, scored at every position of a verified block
            self.packed_head = pack(self.w_lm_head.detach(), False) if packed else None
            self.row_plans = {}  # measured again for the new weights
        self.out_in = out_in
        self.weights = {torch.float32: "float32", torch.bfloat16: "bfloat16"}.get(dtype, str(dtype))
        return self

    def with_weights(self, weights: str, calibration: Tensor | None = None,
                     prompt_copies: bool | None = None) -> "Llama":
        """This model decoding with ``weights`` (model.quant.WEIGHTS), in place: "float32" and "bfloat16" cast it;
        "int8" and "int4" keep float32 activations and replace the layers' matrices by quantized ones (int8: 127 levels
        per output channel, inputs rounded to 8 bits per row; int4: weight-only, in groups of 32 inputs with a scale
        and a zero each, as llama.cpp's Q4_1) and the output projection by an int8 one. With ``calibration`` token ids
        (1, T) an int8 model is first ``smooth``-ed on them (``calibration_ids``: SmolLM2's held-out perplexity +3.5%
        instead of +6%), and the output projection of either rounds the ``APART`` input channels of largest magnitude
        on them on a grid of their own (``SplitMatrix``: int8 +3.3% -> +2.1%, int4 +1.6% -> +0.1%, on 8 x 256
        tokens of licence text). The layers' float matrices are dropped; the float output projection stays (the
        embedding, and the heads' proposal vocabulary are cut from it). ``prompt_copies`` (default: int4 on a CPU with
        native bf16): int4 layers also keep bf16 copies of their dequantized matrices for prompts
        (``QuantizedMatrix.__call__``)."""
        check_weights(weights)
        if weights not in BITS:
            return self.cast(getattr(torch, weights))
        self.cast(torch.float32, packed=False)
        if weights == "int8" and calibration is not None:
            self.smooth(calibration)
        apart = None  # the output projection's input channels of largest magnitude on the calibration text
        if calibration is not None:
            with torch.no_grad():
                apart = self(calibration)[0].abs().amax(0).topk(min(APART, self.cfg.d_model)).indices
        # int4 on a CPU with native bf16: prompts through bf16 copies of the dequantized matrices (QuantizedMatrix;
        # 2 bytes per weight more, for prompts ~2x faster); elsewhere bf16 products are slower than the int4 kernel's
        self.prompt_copies = weights == "int4" and (cpu_has_bf16() if prompt_copies is None else prompt_copies)
        with torch.no_grad():
            for layer in self.layers:
                layer.quantized = {name: QuantizedMatrix(getattr(layer, name).t(), BITS[weights],
                                                         prompt_copy=self.prompt_copies)
                                   for name in MATRICES}
                for name in MATRICES:
                    getattr(layer, name).data = torch.empty(0)
            head = self.w_lm_head.t()
            self.quantized_head = QuantizedMatrix(head, 8) if apart is None else SplitMatrix(head, apart)
        self.weights = weights
        return self

    @torch.no_grad()
    def smooth(self, calibration: Tensor, alpha: float = 0.5) -> "Llama":
        """The same function (to float rounding) with the inputs of every matrix easier to round to 8 bits, in place
        (SmoothQuant, Xiao et al. 2023): a few input channels carry values 10-100x the others (seen on SmolLM2: 491 in
        one channel where the row's median magnitude is 1), and a row rounded on the grid of its peak loses the rest.
        Each input channel j of a matrix is divided by s_j = a_j^alpha / w_j^(1 - alpha) (a_j its largest magnitude on
        the ``calibration`` tokens (1, T), w_j the largest weight it meets) and the matrix's row j multiplied by s_j.
        The division is folded into what produces the input, so it costs nothing per token: the RMSNorm weights (q/k/v
        and gate/up), the value projection (the attention output; with grouped heads one s per key-value channel)
        and the up projection (down). A float32 model only (``cast``)."""
        if self.weights != "float32" or self.out_in:
            raise ValueError("smooth a float32 model (Llama.cast(torch.float32)) before quantizing it")
        peaks: dict[tuple[int, str], Tensor] = {}
        for i, layer in enumerate(self.layers):  # record each product's input, per channel
            def record(x: Tensor, name: str, invariant: bool, plan=None, prompt=False, layer: Block = layer,
                       i: int = i) -> Tensor:
                peaks[i, name] = x.reshape(-1, x.shape[-1]).abs().amax(0)
                return Block.product(layer, x, name, invariant, plan, prompt)
            layer.product = record
        try:
            self(calibration)
        finally:
            for layer in self.layers:
                del layer.product
        cfg = self.cfg
        H, Hkv, Dh, G = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.n_heads // cfg.n_kv_heads

        def factor(a: Tensor, w: Tensor) -> Tensor:  # matrices are (in, out) here: row j meets input channel j
            return (a.clamp_min(1e-5) ** alpha / w.clamp_min(1e-5) ** (1 - alpha)).clamp_min(1e-5)

        for i, layer in enumerate(self.layers):
            s_qkv = factor(peaks[i, "w_qkv"], layer.w_qkv.abs().amax(1))
            s_gate_up = factor(peaks[i, "w_gate_up"], layer.w_gate_up.abs().amax(1))
            # the attention output's channel (head h, d) is value channel (h // G, d): one s for the G heads sharing it
            s_kv = factor(peaks[i, "w_out"].view(Hkv, G, Dh).amax(1),
                          layer.w_out.abs().amax(1).view(Hkv, G, Dh).amax(1))
            s_out = s_kv[:, None].expand(Hkv, G, Dh).reshape(-1)
            s_down = factor(peaks[i, "w_down"], layer.w_down.abs().amax(1))
            layer.w_qkv.mul_(s_qkv[:, None])
            layer.attn_norm.div_(s_qkv)
            layer.w_gate_up.mul_(s_gate_up[:, None])
            layer.mlp_norm.div_(s_gate_up)
            layer.w_out.mul_(s_out[:, None])
            layer.w_qkv[:, (H + Hkv) * Dh:].div_(s_kv.reshape(-1))
            layer.w_down.mul_(s_down[:, None])
            layer.w_gate_up[:, cfg.d_ff:].div_(s_down)
        return self

    def lm_head(self, hidden: Tensor, invariant: bool = False) -> Tensor:
        """Logits (..., V) at final hidden states (..., D)."""
        if self.quantized_head is not None:
            return self.quantized_head(hidden)
        if self.packed_head is not None and packed_suits(hidden, plan := self.row_plan()):
            return packed_mm(hidden, self.packed_head, plan)  # see Block.product
        if self.out_in and self.cfg.tie_embeddings:
            # oneDNN's bf16 kernel runs ~2.3x faster on the (out, in) layout, which the tied embedding already has
            return mm(hidden, self.embed.weight, out_in=True, invariant=invariant)
        return mm(hidden, self.w_lm_head, invariant=invariant)

    def forward(self, tokens: Tensor, cache: KVCache | None = None, tree=None) -> Tensor:
        """Hidden states (B, T, D). Without a cache: whole sequences from position 0. With one: appended after each
        row's cached length, and the cache's lengths advance by T; with ``tree``, the fed tokens are the nodes of a
        candidate tree (``KVCache.layout``), each attending to its ancestors only."""
        B, T = tokens.shape
        invariant = cache is not None and cache.invariant
        if cache is None:
            if tree is not None:
                raise ValueError("a candidate tree is fed into a cache: forward(tokens, cache, tree=...)")
            positions, mask = torch.arange(T, device=tokens.device).expand(B, T), None
            slots = positions
        else:
            # slots (B, T) in the cache; positions; (B, 1, T, span) mask: a query sees the cached keys and the fed ones
            # before it (a block) or its ancestors (a tree); stale entries past it stay hidden
            slots, positions, mask = cache.layout(T, tree)
            wide = self.embed.weight.dtype == torch.float32
            if T == 1 and bool((slots == slots[0]).all()) and (not invariant or wide):
                # every row's single query sees the whole span (in an invariant float32 session, quantized weights,
                # ``invariant.attend`` then makes one call for the batch)
                mask = None
        x = self.embed(tokens)
        cos, sin = self.rotary(positions, x.dtype)
        plan = self.row_plan() if cache is not None else None  # decoding: few rows per call, padded where cheaper
        # which keys each query sees (float32) or the mask's key order (bfloat16): once per call, not per layer
        first = cache is None or not bool(cache.lengths.any())  # whole sequences, or a session's first call: prompts
        order = None if not invariant or mask is None else inv.key_order(mask) if x.dtype != torch.float32 else \
            inv.WIDE if first else inv.query_keys(mask, T, mask.shape[-1])
        # float32 (quantized weights): a prompt's queries at once, summed in float64 (``invariant.attend``); decoding's
        # query by query. Greedy and blockwise decoding both feed the prompt in the first call, so a token's bits
        # still do not depend on how the tokens after the prompt are fed.
        # int4 layers may take their bf16 copy for a prompt (QuantizedMatrix)
        prompt = self.prompt_copies and first
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, cache, i, slots, mask, invariant, plan, order, prompt)
        if cache is not None:
            cache.advance(T)
        return rms_norm(x, self.norm, self.cfg.rms_eps)

    def new_cache(self, batch_size: int, capacity: int) -> KVCache:
        # capacity counts cache slots, not positions: a candidate tree holds more slots than positions (its nodes share
        # positions); positions are checked where they are made (check_inputs, embed_tokens)
        # a session over quantized weights is batch-invariant too: their kernels already are, attention is made so
        p = self.embed.weight
        return KVCache(self.cfg.n_layers, batch_size, self.cfg.n_kv_heads, capacity, self.cfg.head_dim,
                       dtype=p.dtype, device=p.device, invariant=batch_invariant(p.dtype) or self.weights in BITS)

    @classmethod
    def from_hf(cls, hf_model) -> "Llama":
        """Copy the weights of a ``transformers`` ``LlamaForCausalLM`` (no forked model code: only its state dict)."""
        cfg = LlamaConfig.from_hf(hf_model.config)
        sd = hf_model.state_dict()
        dtype = sd["model.embed_tokens.weight"].dtype
        model = cls(cfg).to(dtype)
        with torch.no_grad():
            model.embed.weight.copy_(sd["model.embed_tokens.weight"])
            model.norm.copy_(sd["model.norm.weight"])
            model.w_lm_head.copy_(sd["model.embed_tokens.weight" if cfg.tie_embeddings else "lm_head.weight"].T)
            for i, layer in enumerate(model.layers):
                p = f"model.layers.{i}."
                layer.attn_norm.copy_(sd[p + "input_layernorm.weight"])
                layer.mlp_norm.copy_(sd[p + "post_attention_layernorm.weight"])
                layer.w_qkv.copy_(torch.cat([sd[p + f"self_attn.{n}_proj.weight"] for n in "qkv"]).T)
                layer.w_out.copy_(sd[p + "self_attn.o_proj.weight"].T)
                layer.w_gate_up.copy_(torch.cat([sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]]).T)
                layer.w_down.copy_(sd[p + "mlp.down_proj.weight"].T)
        return model.eval()


CALIBRATION = Path(__file__).resolve().parents[1] / "assets" / "calibration.txt"


def calibration_ids(tokenizer, limit: int = 512) -> Tensor:
    """Token ids (1, T) of the shipped calibration text (prose, a list, a question and answer, code, a letter; written
    for this purpose, not any benchmark's text) for ``Llama.smooth``."""
    return torch.tensor([tokenizer.encode(CALIBRATION.read_text())[:limit]])


class NativeLM(nn.Module):
    """A native Llama plus proposal heads. Implements ``blockwise.decoding.interface.DecodingModel``.

    p1 is the base model's own output; heads p2..pk map the final hidden state to hidden states that the model's
    own output projection scores. With ``proposal_vocab`` (token ids) p2..pk are scored over those tokens only and
    every other token gets -inf: proposals need not be exact (p1 verifies them), and the projection onto the ~10k
    tokens the model actually produces costs a quarter of the full one. p1 is always scored over the whole vocabulary.
    """

    def __init__(self, base: Llama, heads: Heads | None = None, max_positions: int | None = None,
                 proposal_vocab: Tensor | None = None) -> None:
        super().__init__()
        self.base = base
        if heads is not None and base.weights in BITS:  # the drafter's layer quantized too (``Heads.quantized``)
            heads = heads.quantized(BITS[base.weights])
        self.heads = heads.for_model() if heads is not None else make_heads(base.cfg.d_model, HeadsConfig(num_heads=1))
        if self.heads.cfg.p1 != "identity":
            raise ValueError("a frozen base decodes as itself only with p1='identity' heads")
        self.heads.bind(base.embed, self.score_proposals)
        self._max_positions = max_positions or base.cfg.max_positions
        self.proposal_vocab = None if proposal_vocab is None else torch.as_tensor(proposal_vocab, dtype=torch.long)
        # the proposal vocabulary's columns of the output projection, in the layout of the base's matrices
        rows = None if proposal_vocab is None else base.w_lm_head[:, self.proposal_vocab]  # (D, V')
        self.w_proposal = None if rows is None else (rows.t() if base.out_in else rows).contiguous()
        # quantized weights: the proposals' projection too (proposals need not be exact, only cheap)
        self.q_proposal = QuantizedMatrix(rows.t(), 8) if rows is not None and base.weights in BITS else None
        # packed layers: a packed copy too (float32: for the several rows of a tree's frontier; ``Block.product``)
        self.packed_proposal = pack(self.w_proposal, base.out_in) \
            if rows is not None and base.packed_head is not None else None

    @property
    def num_heads(self) -> int:
        return self.heads.num_heads

    @property
    def max_positions(self) -> int:
        return self._max_positions

    @property
    def weights(self) -> str:
        """The base's weight precision (model.quant.WEIGHTS)."""
        return self.base.weights

    def start(self, batch_size: int, capacity: int, sources: Sequence[Sequence[int]] | None = None) -> CachedSession:
        if sources is not None:
            raise ValueError("a causal LM is decoder-only: pass prompts as prefixes, not sources")
        return CachedSession(self, self.base.new_cache(batch_size, capacity))

    def decode(self, tokens: Tensor, cache: KVCache, tree=None) -> Tensor:
        return self.base(tokens, cache, tree)

    def scores(self, hidden: Tensor, invariant: bool = False) -> Tensor:
        # Logits in float32 (exact: every bfloat16 is a float32): PyTorch's CPU argmax over 49k bf16 logits runs ~5x
        # slower than the conversion plus a float32 argmax, and the decoders take several argmaxes per call.
        return self.base.lm_head(hidden, invariant).float()

    def score_proposals(self, states: Tensor, invariant: bool = False) -> Tensor:
        """Logits of p2..pk at head states (..., D): over the proposal vocabulary (-inf elsewhere) if there is one."""
        if self.proposal_vocab is None:
            return self.scores(states, invariant)
        if self.q_proposal is not None:
            rest = self.q_proposal(states).float()
        elif self.packed_proposal is not None and packed_suits(states, plan := self.base.row_plan()):
            rest = packed_mm(states, self.packed_proposal, plan).float()
        else:
            rest = mm(states, self.w_proposal, self.base.out_in, invariant=invariant).float()  # (..., V')
        full = rest.new_full(rest.shape[:-1] + (self.base.w_lm_head.shape[1],), float("-inf"))
        full[..., self.proposal_vocab] = rest
        return full
