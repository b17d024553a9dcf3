"""Training and judging the feature-level drafter (model/heads/drafter.py) on cached base states.

The data are whole sequences, prompt + the base's greedy answer, with the base's final hidden state at every position
but the last (``distill.sequences_with_features``): state f_j predicts token x_{j+1}. The base is never run here.
The drafter's entry j reads (f_j, x_{j+1}) and predicts f_{j+1}; it learns on answer positions only (the prompt is
context): a smooth-L1 regression of f̂_{j+1} on f_{j+1} plus the cross-entropy of its projection against x_{j+2}, the
base's greedy token, over a restricted vocabulary (the output projection's rows of the frequent answer tokens).
``chain_agreement`` judges it as decoding uses it: drafting chains through a ``DrafterState``, feature by feature.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor

from ...model.heads import FeatureDrafter, expected_metrics


@dataclasses.dataclass
class Sequences:
    """Rows of ``write_sequences`` shards: tokens (n,), states (n - 1, D) float16, prompt length."""

    tokens: list[Tensor]
    hidden: list[Tensor]
    prompt: list[int]

    def __len__(self) -> int:
        return len(self.tokens)

    def answer_positions(self, rows: Sequence[int] | None = None) -> int:
        rows = range(len(self)) if rows is None else rows
        return sum(len(self.tokens[r]) - self.prompt[r] for r in rows)

    def batch(self, rows: Sequence[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Right-padded (states (B, T-1, D) float32, tokens (B, T), lengths (B,), prompt lengths (B,))."""
        n = [len(self.tokens[r]) for r in rows]
        T = max(n)
        D, device = self.hidden[rows[0]].shape[1], self.hidden[rows[0]].device  # on the device the states are on
        states = torch.zeros(len(rows), T - 1, D, device=device)
        tokens = torch.zeros(len(rows), T, dtype=torch.long, device=device)
        for i, r in enumerate(rows):
            states[i, : n[i] - 1] = self.hidden[r].float()
            tokens[i, : n[i]] = self.tokens[r]
        return (states, tokens, torch.tensor(n, device=device),
                torch.tensor([self.prompt[r] for r in rows], device=device))


def answers_only(data: Sequences, rows: Sequence[int]):
    """The answers of ``rows`` as ``distill.Distilled`` (the state before each answer token, the tokens): what the
    one-state heads are judged on (``training.agreement``), for a comparison on the same held-out answers."""
    from .distill import Distilled

    hidden = [data.hidden[r][data.prompt[r] - 1:] for r in rows]
    tokens = [data.tokens[r][data.prompt[r]:] for r in rows]
    lengths = torch.tensor([len(t) for t in tokens])
    ends = torch.repeat_interleave(lengths.cumsum(0), lengths)
    return Distilled(torch.cat(hidden), torch.cat(tokens), ends)


def load_sequences(paths: Sequence[Path]) -> Sequences:
    tokens, hidden, prompt = [], [], []
    for path in paths:
        t = load_file(str(path))
        lengths = t["lengths"].long().tolist()
        tokens += list(torch.split(t["tokens"].long(), lengths))
        hidden += list(torch.split(t["hidden"], [n - 1 for n in lengths]))
        prompt += t["prompt_lengths"].long().tolist()
    return Sequences(tokens, hidden, prompt)


def split_rows(ids, lengths) -> list[list[int]]:
    """Rows stored end to end (``ids``) with their ``lengths`` (numpy arrays, as the drafter's npz files keep them)
    back as lists of token ids."""
    ends = np.cumsum(lengths)
    return [ids[e - n: e].astype(np.int64).tolist() for e, n in zip(ends, lengths)]


def proposal_classes(weight: Tensor, data: Sequences, rows: Sequence[int], size: int):
    """The softmax classes of drafter training: the ``size`` most frequent answer tokens of ``rows`` (sorted ids),
    ``remap`` (V,) token -> class (-1: none), their output-projection rows (V', D), and the share of answer tokens
    they cover. On ``weight``'s device."""
    V = weight.shape[0]
    counts = torch.bincount(torch.cat([data.tokens[r][data.prompt[r]:] for r in rows]), minlength=V)
    vocab = counts.topk(min(size, int((counts > 0).sum()))).indices.sort().values.to(weight.device)
    remap = torch.full((V,), -1, dtype=torch.long, device=weight.device)
    remap[vocab] = torch.arange(len(vocab), device=weight.device)
    return vocab, remap, weight[vocab].contiguous(), float(counts[vocab].sum() / counts.sum())


def row_batches(rows: Sequence[int], sizes: Sequence[int], budget: int, seed: int) -> Iterator[list[int]]:
    """Endless shuffled batches of rows holding about ``budget`` tokens each (rows of similar length together)."""
    g = torch.Generator().manual_seed(seed)
    rows = list(rows)
    while True:
        order = [rows[i] for i in torch.randperm(len(rows), generator=g).tolist()]
        # sort within windows of 64 rows by length: less padding, still shuffled
        windows = [sorted(order[s: s + 64], key=lambda r: sizes[r]) for s in range(0, len(order), 64)]
        batches, current, longest = [], [], 0
        for r in (r for w in windows for r in w):
            longest_next = max(longest, sizes[r])
            if current and longest_next * (len(current) + 1) > budget:
                batches.append(current)
                current, longest_next = [], sizes[r]
            current.append(r)
            longest = longest_next
        if current:
            batches.append(current)
        for i in torch.randperm(len(batches), generator=g).tolist():
            yield batches[i]


def drafter_loss(drafter: FeatureDrafter, classes_w: Tensor, remap: Tensor, states: Tensor, tokens: Tensor,
                 lengths: Tensor, prompt: Tensor, noise: float = 0.0, reg_weight: float = 1.0,
                 depth: int = 0) -> tuple[Tensor, dict]:
    """The training loss of one padded batch: reg_weight · smooth-L1(f̂_{j+1}, f_{j+1}) + CE(x_{j+2}) on answer
    positions, summed over draft depths 1..depth+1 (``FeatureDrafter.unrolled``: deeper drafts read the drafter's own
    states, as when decoding). ``classes_w`` (V', D): output-projection rows of the softmax classes; ``remap`` (V,):
    token id -> class (-1: not a class, ignored). ``noise``: uniform noise of that size on the input states (EAGLE's
    augmentation: the drafter later reads its own, imperfect, states)."""
    inputs = states + noise * (2 * torch.rand_like(states) - 1) if noise else states
    outs = drafter.unrolled(inputs, tokens, depth) if depth else [drafter.sequence(inputs, tokens)]
    j = torch.arange(tokens.shape[1] - 2, device=tokens.device)
    total, metrics = 0.0, {}
    for d, pred in enumerate(outs):
        pred = pred[:, :-1]  # (B, T-2, D): f̂_{j+1} for j = 0..T-3
        # answer positions whose chain started at an accepted position j - d inside the answer (or its last prompt one)
        mask = (j[None, :] >= (prompt[:, None] - 2 + d)) & (j[None, :] <= (lengths[:, None] - 3)) & (j[None, :] >= d)
        p = pred[mask]
        reg = F.smooth_l1_loss(p.float(), states[:, 1:][mask].float(), reduction="mean")  # f_{j+1}
        target = remap[tokens[:, 2:][mask]]  # x_{j+2}
        logits = (p @ classes_w.T).float()
        known = target >= 0
        ce = (F.cross_entropy(logits, target.clamp(min=0), reduction="none") * known).sum() / known.sum().clamp(min=1)
        total = total + reg_weight * reg + ce
        top1 = ((logits.argmax(-1) == target) & known).float().mean()
        metrics.update({f"reg{d + 1}": reg.item(), f"ce{d + 1}": ce.item(), f"top1_{d + 1}": top1.item()})
    return total, metrics


def restricted_projection(weight: Tensor, vocab: Tensor):
    """A ``project(states, invariant=False)`` scoring over ``vocab`` only (-inf elsewhere), as ``NativeLM`` scores
    proposals: ``weight`` (V, D) is the base's output projection."""
    rows = weight[vocab].contiguous()  # (V', D)

    def project(states: Tensor, invariant: bool = False) -> Tensor:
        out = states.new_full(states.shape[:-1] + (weight.shape[0],), float("-inf"))
        out[..., vocab] = states @ rows.T
        return out

    return project


@torch.no_grad()
def chain_agreement(drafter: FeatureDrafter, data: Sequences, rows: Sequence[int], k: int, batch: int = 64) -> dict:
    """How the drafter's chains would fare when decoding the held-out ``rows`` (their answers are the base's greedy
    output, so the accepted block at a position is 1 + the run of right drafts): at every answer position, with the
    true states before it in the drafter's cache, draft ŷ2..ŷk as decoding does and compare with the true tokens.
    Returns per-depth agreement ("p2".."pk": ŷ_i right, whatever came before) and the expected accepted block size
    E(k') at k' = 1..k (the policy's prior)."""
    device = drafter.norm.device  # the data's states are on the same device
    right = torch.zeros(k - 1, device=device)
    runs = torch.zeros(k, device=device)  # positions whose first i-1 drafts are all right, i = 1..k
    count = torch.zeros(k - 1, device=device)
    positions = 0
    for s in range(0, len(rows), batch):
        part = list(rows[s: s + batch])
        states, tokens, lengths, prompt = data.batch(part)
        B, T = tokens.shape
        state = drafter.open(B, T + k, device=device)
        state.features[:, : T - 1] = states.to(state.features.dtype)
        state.tokens[:, :T] = tokens
        r = torch.arange(B, device=device)
        for t in range(int((lengths - prompt).max()) - 1):
            accepted = torch.minimum(prompt + t, lengths - 2)  # L: tokens accepted; ŷ1 = x_L
            live = prompt + t <= lengths - 2  # at least one draft has a true token to meet
            logits = state.propose(accepted, tokens[r, accepted], k)  # (B, k-1, V)
            drafts = logits.argmax(-1)
            offs = accepted[:, None] + 1 + torch.arange(k - 1, device=device)  # x_{L+1..L+k-1}
            has = (offs < lengths[:, None]) & live[:, None]
            truth = tokens.gather(1, offs.clamp(max=T - 1))
            hit = (drafts == truth) & has
            right += hit.sum(0).float()
            count += has.sum(0).float()
            run = torch.cat([live[:, None], hit], 1).long().cumprod(1).bool()
            runs += run.sum(0).float()
            positions += int(live.sum())
    agree = (right / count.clamp(min=1)).tolist()
    expected = (runs / max(positions, 1)).cumsum(0).tolist()
    return {"top1": {f"p{i + 2}": round(a, 4) for i, a in enumerate(agree)},
            **expected_metrics(expected),
            "positions": positions}
