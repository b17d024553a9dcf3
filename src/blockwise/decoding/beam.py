"""Batched beam search with the GNMT length penalty: the sequence-level distillation teacher (beam 4, α = 0.6)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .common import DecodeOutput, DecodeStats, capacity, check_inputs, prefill
from .interface import DecodingModel


def length_penalty(length: int, alpha: float) -> float:
    """((5 + |y|) / 6) ** α (Wu et al. 2016)."""
    return ((5.0 + length) / 6.0) ** alpha


@torch.no_grad()
def beam_search(model: DecodingModel, prefixes: Sequence[Sequence[int]], max_new_tokens: int, beam_size: int = 4,
                eos_id: int | None = None, alpha: float = 0.6,
                sources: Sequence[Sequence[int]] | None = None) -> DecodeOutput:
    """Keep the ``beam_size`` best partial hypotheses per row; return each row's best finished one.

    A hypothesis finishes when it ends in end-of-sequence or reaches ``max_new_tokens``; it is ranked by its log
    probability divided by the length penalty. A row stops once it has ``beam_size`` finished hypotheses.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    check_inputs(model, prefixes, max_new_tokens, sources)
    B, W = len(prefixes), beam_size
    session, hidden = prefill(model, prefixes, capacity(prefixes, max_new_tokens), sources)
    session.select(torch.arange(B).repeat_interleave(W))
    hidden = hidden.repeat_interleave(W, 0)  # (B·W, D)
    score = torch.full((B, W), float("-inf"), device=hidden.device)
    score[:, 0] = 0.0  # all beams start as one hypothesis
    beams: list[list[int]] = [[] for _ in range(B * W)]
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    stats = DecodeStats(calls=1)
    for step in range(max_new_tokens):
        logp = F.log_softmax(session.scores(hidden).float(), dim=-1)  # (B·W, V)
        V = logp.shape[-1]
        cand = (score.view(-1, 1) + logp).view(B, W * V)
        top_score, top_index = cand.topk(min(2 * W, W * V), dim=1)  # (B, 2W)
        parents, tokens, new_score = [], [], torch.full((B, W), float("-inf"), device=hidden.device)
        last = step == max_new_tokens - 1
        for b in range(B):
            filled = 0
            for rank, (s, i) in enumerate(zip(top_score[b].tolist(), top_index[b].tolist())):
                if s == float("-inf") or len(finished[b]) >= W:
                    break  # no live candidates left, or this row is done and its beams only idle along
                parent, token = b * W + i // V, i % V
                hyp = beams[parent] + [token]
                if token == eos_id or last:
                    if rank < W:  # as in fairseq: only an end among the W best candidates finishes a hypothesis
                        finished[b].append((s / length_penalty(len(hyp), alpha), hyp))
                    continue
                if filled < W:
                    parents.append(parent)
                    tokens.append(token)
                    new_score[b, filled] = s
                    filled += 1
            while filled < W:  # a finished row (or too few candidates): pad with dead beams
                parents.append(b * W)
                tokens.append(eos_id if eos_id is not None else 0)
                filled += 1
        stats.iterations += 1
        if last or all(len(f) >= W for f in finished):
            break
        beams = [beams[p] + [t] for p, t in zip(parents, tokens)]
        score = new_score
        session.select(torch.tensor(parents, device=hidden.device))
        hidden = session.feed(torch.tensor(tokens, device=hidden.device)[:, None])[:, 0]
        stats.calls += 1
    best = [max(f, key=lambda x: x[0])[1] if f else [] for f in finished]
    stats.count_blocks([1] * sum(len(t) for t in best))
    return DecodeOutput(best, stats)
