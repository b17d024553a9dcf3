"""Proposal heads: the paper's multi-output layer (§6, Fig. 3), a per-head residual variant, and chained heads.

Heads map decoder hidden states h (..., D) to one hidden state per head (..., n, D); the base model's own vocabulary
projection turns each into logits. Head i (1-based) predicts the token i positions ahead, so p1 is the next token.

Chained heads (kind="chain", after Hydra, Ankner et al. 2024) also see the tokens proposed before them: head p_i's
state is s_i = s_{i-1} + W_i ReLU(U_i [s_{i-1}; LN(e(ŷ_{i-1}))]) with s_1 = h, where e is the base model's input
embedding and ŷ_{i-1} the token p_{i-1} proposed (p1's own argmax for p2, which is always right). So p2 predicts the
token after next knowing the next one, instead of guessing both. Proposing is then sequential in i (``propose``);
training is teacher-forced (``forward`` with the true tokens' embeddings as ``given``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import HeadsConfig


class ProposalHeads(nn.Module):
    def __init__(self, d_model: int, cfg: HeadsConfig) -> None:
        super().__init__()
        self.cfg, self.d_model = cfg, d_model
        # With p1="identity" the layer only makes p2..pk; p1 is the base model's output itself.
        self.n_layer_heads = cfg.k - 1 if cfg.p1 == "identity" else cfg.k
        n = max(self.n_layer_heads, 0)
        if cfg.kind == "paper":
            # One feed-forward layer: hidden n·d_hidden (ReLU), output n·d_model. Each head owns its slice of the hidden
            # layer and its own output matrix (block-diagonal output): the literal dense (n·d_hidden × n·d_model) output
            # grows with k² (105M parameters for transformer_base at k=10) and costs more than it accepts.
            self.up = nn.Linear(d_model, n * cfg.d_hidden) if n else None
            self.down = nn.Parameter(torch.zeros(n, cfg.d_hidden, d_model))  # zero: heads start as copies of h
            self.down_bias = nn.Parameter(torch.zeros(n, d_model))
        elif cfg.kind == "chain":
            self.emb_norm = nn.LayerNorm(d_model)
            self.up = nn.Parameter(torch.randn(n, cfg.d_hidden, 2 * d_model) * (2 * d_model) ** -0.5)
            self.up_bias = nn.Parameter(torch.zeros(n, cfg.d_hidden))
            self.down = nn.Parameter(torch.zeros(n, cfg.d_hidden, d_model))  # zero: s_i starts as a copy of s_{i-1}
            self.down_bias = nn.Parameter(torch.zeros(n, d_model))
        else:
            # Medusa-1's head: h + SiLU(W h + b), one distinct module per head (Medusa repeated ONE module object and
            # shared its weights by accident).
            self.blocks = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(n))
            for block in self.blocks:
                nn.init.zeros_(block.weight), nn.init.zeros_(block.bias)

    @property
    def k(self) -> int:
        return self.cfg.k

    @property
    def chained(self) -> bool:
        """Whether each head needs the token proposed before it (kind="chain")."""
        return self.cfg.kind == "chain"

    def step(self, state: Tensor, given: Tensor, i: int) -> Tensor:
        """Chained heads: state s_i (..., D) of head p_i (2..k) from s_{i-1} and the embedding of ŷ_{i-1} (..., D)."""
        j = i - 2  # p1 is the identity path, so p_i is the layer's (i-1)-th head
        x = torch.cat([state, self.emb_norm(given)], dim=-1)
        hidden = F.relu(F.linear(x, self.up[j], self.up_bias[j]))
        return state + hidden @ self.down[j] + self.down_bias[j]

    def propose(self, h: Tensor, n: int, given: Tensor, embed, score) -> Tensor:
        """Chained heads at decoding time: logits (..., n - 1, V) of p2..pn, each head fed the previous one's argmax.

        ``given`` (...,) is ŷ_1, the token p1 chose at h; ``embed`` maps token ids to input embeddings and ``score``
        states to logits (the base model's own projection)."""
        state, logits = h, []
        for i in range(2, n + 1):
            state = self.step(state, embed(given), i)
            logits.append(score(state))
            given = logits[-1].argmax(-1)
        return torch.stack(logits, dim=-2)

    def _layer(self, h: Tensor, n: int) -> Tensor:
        """Outputs of the first n heads that go through the layer: (..., n, D), residual included."""
        if self.cfg.kind == "paper":
            hidden = F.relu(F.linear(h, self.up.weight[: n * self.cfg.d_hidden], self.up.bias[: n * self.cfg.d_hidden]))
            hidden = hidden.unflatten(-1, (n, self.cfg.d_hidden))  # (..., n, d_hidden)
            out = torch.einsum("...nh,nhd->...nd", hidden, self.down[:n]) + self.down_bias[:n]
        else:
            out = torch.stack([F.silu(self.blocks[i](h)) for i in range(n)], dim=-2)
        return h.unsqueeze(-2) + out

    def forward(self, h: Tensor, n: int | None = None, first: int = 1, given: Tensor | None = None) -> Tensor:
        """Hidden states of heads p_first..p_n at every position: (..., D) -> (..., n - first + 1, D).

        Chained heads need ``given`` (..., n - 1, D): the input embeddings of the tokens 1..n-1 positions ahead
        (teacher forcing; at decoding time ``propose`` feeds the proposals instead)."""
        n = self.k if n is None else n
        if not 1 <= n <= self.k:
            raise ValueError(f"asked for {n} heads but the model has k={self.k} (p1..p{self.k})")
        if not 1 <= first <= n:
            raise ValueError(f"asked for heads p{first}..p{n}: first must be in 1..{n}")
        if self.chained:
            if given is None or given.shape[-2] < n - 1:
                raise ValueError(f"chained heads p2..p{n} need the embeddings of the {n - 1} tokens before them "
                                 "(given=(..., n-1, D))")
            states = [h]
            for i in range(2, n + 1):
                states.append(self.step(states[-1], given[..., i - 2, :], i))
            return torch.stack(states[first - 1:], dim=-2)
        if self.cfg.p1 == "identity":
            if first > 1:
                return self._layer(h, n - 1)[..., first - 2:, :]
            start = h.unsqueeze(-2)
            return start if n == 1 else torch.cat([start, self._layer(h, n - 1)], dim=-2)
        return self._layer(h, n)[..., first - 1:, :]

    def head(self, h: Tensor, i: int) -> Tensor:
        """Hidden state of head p_i alone (1-based): (..., D). Used by the random single-head loss."""
        if not 1 <= i <= self.k:
            raise ValueError(f"head p{i} does not exist (k={self.k})")
        if self.chained and i > 1:
            raise ValueError("a chained head needs the tokens proposed before it: use forward(h, n, given=...)")
        if self.cfg.p1 == "identity":
            if i == 1:
                return h
            i_layer = i - 1
        else:
            i_layer = i
        if self.cfg.kind == "paper":
            rows = slice((i_layer - 1) * self.cfg.d_hidden, i_layer * self.cfg.d_hidden)
            hidden = F.relu(F.linear(h, self.up.weight[rows], self.up.bias[rows]))
            return h + hidden @ self.down[i_layer - 1] + self.down_bias[i_layer - 1]
        return h + F.silu(self.blocks[i_layer - 1](h))


def chained_proposals(heads: ProposalHeads, hidden: Tensor, k: int, first: int, given: Tensor | None, embed,
                      score_p1, score) -> Tensor:
    """Logits of p_first..p_k from chained heads (every session's ``proposals`` for kind="chain"). Without ``given``,
    p1's argmax at ``hidden`` is computed here."""
    parts = []
    if first == 1 or given is None:
        p1 = score_p1(hidden)
        parts, given = ([p1.unsqueeze(-2)] if first == 1 else []), p1.argmax(-1)
    if k > 1:
        parts.append(heads.propose(hidden, k, given, embed, score)[..., max(first - 2, 0):, :])
    return torch.cat(parts, dim=-2)
