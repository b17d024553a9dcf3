"""The feature-level drafter (after EAGLE, Li et al. 2024): one decoder layer that reads the sequence.

Entry j of the drafter reads the base model's final hidden state f_j and the input embedding of the token after it,
x_{j+1}: z_j = W [f_j; e(x_{j+1})] + b, then one Llama decoder layer (its own attention over the drafter's entries
0..j, in its own small KV cache) and an RMSNorm give f̂_{j+1}, a guess of the base's next state, which the base's output
projection scores: the proposal for x_{j+2}. So the drafter sees the whole sequence, where the other kinds see one state.

Drafting after the base has accepted tokens up to position L-1 and p1 chose ŷ1 = x_L: the entries not yet read (each
position since the last draft) are fed in one call, the last of them (f_{L-1}, ŷ1) giving ŷ2; then (f̂_L, ŷ2) gives ŷ3,
and so on, feature by feature (``DrafterState.propose``). The drafter's cache then rolls back to the true entries.
Its bookkeeping lives in ``DrafterState``, which a session (model/session.py) keeps beside the base's cache: every base
call's states are written into it by position, and a draft first catches up on them.

Training is on cached base states (tasks/lm/drafter.py): feature regression + token cross-entropy, teacher-forced
(``sequence``) and unrolled over draft depths (``unrolled``). It drafts chains (``DrafterState.propose``, or token by
token with ``begin``/``extend`` when each draft is drawn given the one before: speculative sampling) and candidate
trees, depth by depth (``grow``: a node's entry sees the true entries, its ancestors' entries and itself).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...config import HeadsConfig
from ..cache import KVCache
from ..invariant import pack, packed_mm
from .base import Heads


SPARE = 256  # drafter cache slots past the base's capacity: a candidate tree's drafted entries


class FeatureDrafter(Heads):
    kind = "feature"
    reads_proposals = True  # ŷ_i depends on ŷ_{i-1}
    reads_sequence = True  # a session keeps a DrafterState for it (model/session.py)

    def __init__(self, d_model: int, cfg: HeadsConfig) -> None:
        super().__init__(d_model, cfg)
        from ...tasks.llama import Block, LlamaConfig  # here: tasks.llama imports this package

        n_heads = max(1, d_model // 64)
        if d_model % n_heads or (d_model // n_heads) % 2:
            raise ValueError(f"a drafter of width {d_model} needs {n_heads} heads of even width")
        self.layer_cfg = LlamaConfig(vocab_size=1, d_model=d_model, n_layers=1, n_heads=n_heads, n_kv_heads=n_heads,
                                     head_dim=d_model // n_heads, d_ff=cfg.d_hidden, rope_theta=10000.0)
        self.fuse = nn.Linear(2 * d_model, d_model)
        self.layer = Block(self.layer_cfg)
        self.norm = nn.Parameter(torch.ones(d_model))
        with torch.no_grad():  # Block starts at zeros: a small random layer whose output starts near its input
            for name, std in (("w_qkv", d_model ** -0.5), ("w_gate_up", d_model ** -0.5), ("w_out", 0.02 / d_model ** 0.5),
                              ("w_down", 0.02 / cfg.d_hidden ** 0.5)):
                getattr(self.layer, name).normal_(0.0, std)
        hd = self.layer_cfg.head_dim
        self.inv_freq = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))  # float32, not a parameter
        self.packed: dict[str, Tensor] = {}  # bfloat16 decoding: oneDNN-packed matrices, made by ``open``

    # -- one pass of the layer ---------------------------------------------------------------------------------------
    def step(self, features: Tensor, next_tokens: Tensor, cache: KVCache | None = None,
             invariant: bool = False, layout: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:
        """Entries (B, T) from base states f_j (B, T, D) and token ids x_{j+1} (B, T): predicted next states (B, T, D).
        Without ``cache``: whole sequences from position 0 (training). With one: appended after each row's length, or
        at the cache ``layout`` given, (slots, positions, mask) as ``KVCache.layout`` returns them (the cache's
        lengths then stay: candidate-tree nodes)."""
        from ...tasks.llama import rms_norm, rotary

        B, T = next_tokens.shape
        z = torch.cat([features.to(self.norm.dtype), self.embed(next_tokens).to(self.norm.dtype)], -1)
        packed = self.packed if cache is not None else {}  # decoding's copies (``open``); training has no cache
        self.layer.packed = packed
        x = packed_mm(z, packed["fuse"]) + self.fuse.bias if "fuse" in packed else self.fuse(z)
        if cache is None:
            positions = torch.arange(T, device=x.device).expand(B, T)
            slots, mask = positions, None
        else:
            slots, positions, mask = cache.layout(T) if layout is None else layout
        cos, sin = rotary(positions, self.inv_freq, x.dtype)
        x = self.layer(x, cos, sin, cache, 0, slots, mask, invariant)
        if cache is not None and layout is None:
            cache.advance(T)
        return rms_norm(x, self.norm, self.layer_cfg.rms_eps)

    def sequence(self, features: Tensor, tokens: Tensor) -> Tensor:
        """Teacher-forced predictions (B, T-1, D) for whole sequences: f̂_{j+1} from f_0..f_j and x_1..x_{j+1}.
        ``features`` (B, T-1, D) are the base's states at positions 0..T-2, ``tokens`` (B, T) the sequence."""
        return self.step(features, tokens[:, 1:])

    def unrolled(self, features: Tensor, tokens: Tensor, depth: int) -> list[Tensor]:
        """Predictions at draft depths 1..depth for whole sequences, as decoding drafts them ("training-time test",
        EAGLE-3): out[0] is ``sequence``; in out[d], position j reads out[d-1] at j-1 (its own drafted state) with the
        true token x_{j+1}, and attends to the true entries up to j-d and to its chain's drafted entries j-d+1..j —
        the chain that started at the accepted position j-d. Each (B, T-1, D); out[d][j] predicts f_{j+1}, x_{j+2}."""
        from ...tasks.llama import rms_norm, rotary, rotate

        layer, c = self.layer, self.layer_cfg
        B, T = tokens.shape[0], tokens.shape[1] - 1
        emb = self.embed(tokens[:, 1:]).to(self.norm.dtype)
        cos, sin = rotary(torch.arange(T, device=emb.device)[None], self.inv_freq, emb.dtype)  # (1, 1, T, Dh)
        keys, values, outs = [], [], []
        state = features.to(self.norm.dtype)
        causal = torch.ones(T, T, dtype=torch.bool, device=emb.device).tril()
        for d in range(depth + 1):
            if d:  # position j reads the state drafted at j-1; position 0 has none (masked out of the losses)
                state = torch.cat([state[:, :1], outs[-1][:, :-1]], 1)
            x = self.fuse(torch.cat([state, emb], -1))
            h = rms_norm(x, layer.attn_norm, c.rms_eps)
            q, k, v = (h @ layer.w_qkv).split(c.n_heads * c.head_dim, -1)
            q, k, v = (t.view(B, T, c.n_heads, c.head_dim).transpose(1, 2) for t in (q, k, v))  # (B, H, T, Dh)
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
            keys.append(k)
            values.append(v)
            scale = c.head_dim ** -0.5
            # true entries 0..j-d (K of depth 0), then this chain's drafted entries at depths 1..d
            scores = [(q @ keys[0].transpose(-1, -2) * scale).masked_fill(~causal.roll(d, 0) | (torch.arange(
                T, device=q.device)[:, None] < d), float("-inf")) if d else
                (q @ keys[0].transpose(-1, -2) * scale).masked_fill(~causal, float("-inf"))]
            for i in range(1, d + 1):  # drafted entry of depth i sits at j - (d - i)
                shifted = torch.roll(keys[i], d - i, dims=2)
                scores.append((q * shifted).sum(-1, keepdim=True) * scale)
            weights = torch.softmax(torch.cat(scores, -1).float(), -1).to(q.dtype).nan_to_num(0.0)
            y = weights[..., :T] @ values[0]
            for i in range(1, d + 1):
                y = y + weights[..., T + i - 1: T + i] * torch.roll(values[i], d - i, dims=2)
            x = x + y.transpose(1, 2).reshape(B, T, -1) @ layer.w_out
            gate, up = (rms_norm(x, layer.mlp_norm, c.rms_eps) @ layer.w_gate_up).chunk(2, dim=-1)
            x = x + (F.silu(gate) * up) @ layer.w_down
            outs.append(rms_norm(x, self.norm, c.rms_eps))
        return outs

    def open(self, batch_size: int, capacity: int, device: torch.device | str = "cpu") -> "DrafterState":
        """The per-session state of a decode over ``batch_size`` rows of at most ``capacity`` positions.
        On the CPU the drafter's five matrices are packed for oneDNN here, for the weights as they are now (as
        ``Llama.cast`` packs the base's), and decoding's steps (those with a cache) multiply by them: bfloat16, one draft
        step of SmolLM2's drafter 3.9 -> 2.9 ms (measured with a busy neighbour; each row's bits its own); float32,
        where a lone row still goes through MKL's one-row kernel, a draft of k - 1 = 2 / 3 / 4 tokens 5.1 / 6.7 / 8.6
        -> 3.7 / 5.2 / 7.0 ms on an AVX-512 EPYC (one thread), 6.2 / 7.6 / 10.2 -> 5.9 / 6.8 / 8.5 ms under the AVX2
        imitation (two threads)."""
        from ...tasks.llama import MATRICES

        self.packed = {}
        if self.norm.dtype in (torch.float32, torch.bfloat16) and self.norm.device.type == "cpu":
            weights = {name: (getattr(self.layer, name), self.layer.out_in) for name in MATRICES}
            for name, (w, out_in) in {**weights, "fuse": (self.fuse.weight, True)}.items():
                if (p := pack(w.detach(), out_in)) is not None:
                    self.packed[name] = p
        return DrafterState(self, batch_size, capacity, device)

    def quantized(self, bits: int) -> "FeatureDrafter":
        """A copy (unbound, for decoding) whose layer's four matrices are int8 or int4
        (``model.quant.QuantizedMatrix``), float32 activations: the drafter of a quantized base. Drafts need not be
        exact, only cheap: SmolLM2 int4 with the shipped drafter, k = 3, a draft 4.4 -> 2.0 ms per call, the same
        tokens per call (1.85)."""
        from ...tasks.llama import MATRICES
        from ..quant import QuantizedMatrix, int4_problem

        copy = self.copy().float().eval()
        layer = copy.layer
        with torch.no_grad():  # the layer's matrices are (in, out) in float32: quantized as (out, in)
            for name in MATRICES:
                w = getattr(layer, name).t()
                fits = bits == 8 or int4_problem(*w.shape) is None  # int8 where int4's kernel refuses the shape
                try:
                    layer.quantized[name] = QuantizedMatrix(w, bits if fits else 8)
                except ValueError:  # no int8 kernels in this build: the float layer
                    layer.quantized = {}
                    break
        return copy

    # -- the Heads interface -----------------------------------------------------------------------------------------
    def p1(self, h: Tensor) -> Tensor:
        return h  # the base decodes as itself (HeadsConfig: p1="identity")

    def forward(self, h: Tensor, k: int | None = None, given: Tensor | None = None) -> Tensor:
        raise NotImplementedError("the feature-level drafter reads whole sequences: train it with "
                                  "blockwise.tasks.lm.drafter (FeatureDrafter.sequence), decode through a session")

    def propose(self, h: Tensor, y1: Tensor, k: int, invariant: bool = False) -> Tensor:
        raise NotImplementedError("the feature-level drafter proposes through a session's DrafterState (it reads the "
                                  "sequence, not one state)")

    def draft(self, h: Tensor, state: Tensor, token: Tensor, i: int,
              invariant: bool = False) -> tuple[Tensor, Tensor]:
        raise NotImplementedError("the feature-level drafter drafts through a session's DrafterState (it reads the "
                                  "sequence, not one state)")


class DrafterState:
    """What a session keeps for its drafter: the base's states and tokens by position, and the drafter's own cache.

    ``write`` records every base call (tokens fed at each row's length, the states they gave); ``propose`` reads the
    entries the drafter has not read yet (positions from its cache's length to the base's), then drafts."""

    def __init__(self, drafter: FeatureDrafter, batch_size: int, capacity: int,
                 device: torch.device | str = "cpu") -> None:
        c = drafter.layer_cfg
        dtype = drafter.norm.dtype
        self.drafter = drafter
        self.cache = KVCache(1, batch_size, c.n_kv_heads, capacity + SPARE, c.head_dim, dtype=dtype,
                             device=device, invariant=False)
        self.features = torch.zeros(batch_size, capacity + 1, drafter.d_model, dtype=dtype, device=device)
        self.tokens = torch.zeros(batch_size, capacity + 1, dtype=torch.long, device=device)
        self.read = torch.zeros(batch_size, dtype=torch.long, device=device)  # true entries in the cache, per row
        # a candidate tree's drafted entries (after each row's true ones): how many, and which see which (B, M, M)
        self.drafted, self.sees = 0, torch.zeros(batch_size, 0, 0, dtype=torch.bool, device=device)

    def write(self, start: Tensor, tokens: Tensor, hidden: Tensor) -> None:
        """The base was fed ``tokens`` (B, T) after lengths ``start`` (B,) and gave states ``hidden`` (B, T, D)."""
        B, T = tokens.shape
        rows = torch.arange(B, device=tokens.device)[:, None]
        positions = start[:, None] + torch.arange(T, device=tokens.device)
        self.features[rows, positions] = hidden.to(self.features.dtype)
        self.tokens[rows, positions] = tokens

    def propose(self, lengths: Tensor, given: Tensor, k: int, invariant: bool = False) -> Tensor:
        """Logits (B, k-1, V) of ŷ2..ŷk after each row's ``lengths`` (B,) accepted tokens and ŷ1 = ``given`` (B,),
        each draft the argmax of the one before."""
        state = self.begin(lengths, given, invariant)
        logits = []
        for i in range(2, k + 1):
            logits.append(self.drafter.project(state, invariant=invariant))
            if i < k:
                state = self.extend(state, logits[-1].argmax(-1), invariant)
        return torch.stack(logits, dim=1)

    def begin(self, lengths: Tensor, given: Tensor, invariant: bool = False) -> Tensor:
        """Read the entries since the last draft (each row's up to ``lengths``, the last with ŷ1 = ``given``), after
        dropping the last draft's entries; returns f̂_L (B, D), whose projection proposes ŷ2."""
        B = lengths.shape[0]
        rows = torch.arange(B, device=lengths.device)
        self.tokens[rows, lengths] = given
        # entries to read per row: those since the last draft, and at least the last one (whose token is ``given``)
        read = torch.minimum(self.read, lengths - 1)
        self.cache.truncate(read)
        new = lengths - read
        span = torch.arange(int(new.max()), device=lengths.device)
        positions = torch.minimum(read[:, None] + span, (lengths - 1)[:, None])  # short rows repeat their last entry
        out = self.drafter.step(self.features[rows[:, None], positions], self.tokens[rows[:, None], positions + 1],
                                self.cache, invariant)
        self.cache.truncate(lengths)  # drops the repeated entries
        self.read = lengths.clone()
        self.drafted, self.sees = 0, self.sees[:, :0, :0]
        return out[rows, new - 1]

    def extend(self, state: Tensor, token: Tensor, invariant: bool = False) -> Tensor:
        """One more drafted entry per row, (f̂, ŷ) = (``state`` (B, D), ``token`` (B,)): the next f̂ (B, D). Drafted
        entries stay in the cache until the next ``begin`` drops them."""
        return self.drafter.step(state[:, None], token[:, None], self.cache, invariant)[:, 0]

    def grow(self, state: Tensor, token: Tensor, i: int, invariant: bool = False) -> Tensor:
        """One depth of a candidate tree (after ``begin``): F nodes per row with tokens ``token`` (B, F), at depth
        i - 2 below the root, whose children head p_i proposes. ``state`` (B, F, D + 1): each node's parent's state,
        with the id of the parent's drafted entry last (-1: the root, whose entry is the row's last true one). Each
        node gets an entry at position L + i - 3 that sees the row's true entries, its ancestors' entries and itself.
        Returns the nodes' states with their own entry ids, (B, F, D + 1)."""
        state, parent = state[..., :-1], state[..., -1].long()
        B, F = token.shape
        dev = token.device
        M = self.drafted
        if int(self.read.max()) + M + F > self.cache.capacity:
            raise ValueError(f"a candidate tree of more than {SPARE} drafted nodes is beyond the drafter's cache")
        # which drafted entries each new node sees: its parent's view plus itself
        above = self.sees.gather(1, parent.clamp(min=0)[..., None].expand(B, F, M)) & (parent >= 0)[..., None]
        self.sees = torch.cat([torch.cat([self.sees, self.sees.new_zeros(B, M, F)], 2),
                               torch.cat([above, torch.eye(F, dtype=torch.bool, device=dev).expand(B, F, F)], 2)], 1)
        slots = self.read[:, None] + M + torch.arange(F, device=dev)  # (B, F)
        positions = (self.read + i - 3)[:, None].expand(B, F)
        span = self.cache.span(int(slots.max()) + 1)
        key = torch.arange(span, device=dev)
        entry = key[None, :] - self.read[:, None]  # (B, span): the drafted entry at each slot, if >= 0
        drafted = (entry >= 0) & (entry < M + F)
        view = self.sees[:, M:].gather(2, entry.clamp(0, M + F - 1)[:, None, :].expand(B, F, span))
        mask = ((entry < 0)[:, None, :] | (drafted[:, None, :] & view))[:, None]  # (B, 1, F, span)
        out = self.drafter.step(state, token, self.cache, invariant, layout=(slots, positions, mask))
        self.drafted = M + F
        ids = (M + torch.arange(F, device=dev)).to(out.dtype).expand(B, F)
        return torch.cat([out, ids[..., None]], -1)

    def compact(self, start: Tensor, path: Tensor) -> None:
        """The base kept one path of a fed tree (``KVCache.compact``): its states and tokens move likewise."""
        rows = torch.arange(path.shape[0], device=path.device)[:, None]
        src = start[:, None] + path
        dst = start[:, None] + torch.arange(path.shape[1], device=path.device)
        self.features[rows, dst] = self.features[rows, src].clone()
        self.tokens[rows, dst] = self.tokens[rows, src].clone()

    def select(self, rows: Tensor) -> None:
        """Keep only these rows (finished rows drop out)."""
        self.cache.select(rows)
        self.features, self.tokens, self.read = self.features[rows], self.tokens[rows], self.read[rows]
        self.sees = self.sees[rows]
