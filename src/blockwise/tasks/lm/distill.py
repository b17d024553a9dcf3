"""Self-distillation data: the base model's greedy answers with the hidden state behind every answer token.

Every answer position t keeps (final hidden state h_t, greedy tokens y_{t+1}, y_{t+2}, ...); with the base frozen the
states are computed once and stored in float16 shards, and head p_i later learns to map h_t to y_{t+i}.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from ...decoding.greedy import greedy


def greedy_with_hidden(model, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                       eos_id: int | None) -> list[tuple[list[int], Tensor]]:
    """Greedy answers and, per answer token y_{j+1}, the final hidden state h_j that predicted it (float16).

    Returns per row (tokens y_1..y_m, hidden (m, D)): hidden[j] is the state whose p1 argmax is tokens[j], so head
    p_i at hidden[j] has target tokens[j + i - 1]. An answer ends with its end-of-sequence token, if produced.
    """
    out = greedy(model, prompts, max_new_tokens, eos_id=eos_id, return_hidden=True)
    return [(tokens, hidden.to(torch.float16)) for tokens, hidden in zip(out.tokens, out.hidden)]


def write_shard(path: Path, rows: Sequence[tuple[list[int], Tensor]], kinds: Sequence[str]) -> None:
    """One shard: the rows' tokens and hidden states end to end, their lengths, and the prompt kinds (atomic write)."""
    tokens = torch.tensor([t for row, _ in rows for t in row], dtype=torch.int32)
    hidden = torch.cat([h for _, h in rows]).contiguous()
    lengths = torch.tensor([len(row) for row, _ in rows], dtype=torch.int32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"tokens": tokens, "hidden": hidden, "lengths": lengths}, str(tmp),
              metadata={"kinds": json.dumps(list(kinds))})
    tmp.replace(path)


def generate_shards(model, prompts: Sequence[Sequence[int]], kinds: Sequence[str], out: Path, batch: int,
                    max_new_tokens: int, eos_id: int | None, minutes: float = float("inf"), max_shards: int = 0,
                    progress: bool = True) -> int:
    """Greedy answers of ``model`` to ``prompts`` (token ids) with their hidden states, ``batch`` prompts per shard
    ``out/shard_NNNNN.safetensors``. Resumable: shards that exist are skipped (so a rerun needs the same prompts in
    the same order). Stops after ``minutes`` or once shards 0..max_shards-1 exist. Returns the answer tokens made."""
    import time

    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_batches = len(prompts) // batch + (len(prompts) % batch > 0)
    if max_shards:
        n_batches = min(n_batches, max_shards)
    started, tokens = time.time(), 0
    bar = tqdm(range(n_batches), desc="distil", dynamic_ncols=True, disable=not progress)
    for b in bar:
        path = out / f"shard_{b:05d}.safetensors"
        if path.exists():
            continue
        if time.time() - started > 60 * minutes:
            break
        rows = range(b * batch, min((b + 1) * batch, len(prompts)))
        answers = greedy_with_hidden(model, [prompts[r] for r in rows], max_new_tokens, eos_id)
        write_shard(path, answers, [kinds[r] for r in rows])
        tokens += sum(len(t) for t, _ in answers)
        bar.set_postfix(tok_per_s=f"{tokens / (time.time() - started):.0f}", tokens=tokens)
    bar.close()
    return tokens


@dataclasses.dataclass
class Distilled:
    """Concatenated answers: hidden (N, D) float16, tokens (N,), and per position the index of its answer's end."""

    hidden: Tensor
    tokens: Tensor
    end: Tensor  # (N,) one past the last position of the answer each position belongs to

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def targets(self, index: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Targets (n, k) of heads p1..pk at positions ``index`` and their validity (n, k)."""
        offs = index[:, None] + torch.arange(k)  # (n, k)
        valid = offs < self.end[index, None]
        return self.tokens[offs.clamp(max=len(self) - 1)].long(), valid


def load_shards(paths: Sequence[Path]) -> Distilled:
    """The answers of all ``paths`` (``write_shard`` files) end to end."""
    hidden, tokens, ends, base = [], [], [], 0
    for path in paths:
        t = load_file(str(path))
        hidden.append(t["hidden"])
        tokens.append(t["tokens"])
        lengths = t["lengths"].long()
        stops = base + lengths.cumsum(0)
        ends.append(torch.repeat_interleave(stops, lengths))
        base += int(lengths.sum())
    return Distilled(torch.cat(hidden), torch.cat(tokens), torch.cat(ends))


def batches(n: int, size: int, seed: int) -> Iterator[Tensor]:
    """Endless shuffled minibatches of indices into ``n`` training positions."""
    if n < 1:
        raise ValueError("no training positions")
    size = min(size, n)  # a data set smaller than one batch: every position in each batch
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(n, generator=g)
        for s in range(0, n - size + 1, size):
            yield perm[s: s + size]


def split_index(data: Distilled, held_out: float = 0.05, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Split by answer (never inside one): returns (train positions, held-out positions)."""
    ends = torch.unique_consecutive(data.end)  # (answers,) one past each answer's last position
    answer = torch.searchsorted(ends, torch.arange(len(data)), right=True)  # answer id of each position
    held = torch.as_tensor(np.random.default_rng(seed).random(len(ends)) < held_out)
    held_pos = held[answer]
    return (~held_pos).nonzero().squeeze(1), held_pos.nonzero().squeeze(1)


# -- whole sequences with features: the drafter's data (model/heads/drafter.py) ----------------------------------------
@torch.no_grad()
def sequences_with_features(model, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                            eos_id: int | None) -> list[tuple[list[int], int, Tensor]]:
    """Per prompt: (prompt + greedy answer tokens, prompt length P, final hidden states (n - 1, D) float16 of every
    position but the last: state j predicts token j + 1).

    The answer's states come from ``greedy`` itself; the prompt's from one teacher-forced call of the base over the
    right-padded prompts (a causal model's states do not see the padding after them)."""
    out = greedy(model, prompts, max_new_tokens, eos_id=eos_id, return_hidden=True)
    width = max(len(p) for p in prompts)
    prompt_states = model.base(torch.tensor([list(p) + [0] * (width - len(p)) for p in prompts]))  # (B, P, D)
    rows = []
    for b, (p, answer, states) in enumerate(zip(prompts, out.tokens, out.hidden)):
        # states[j] is the state at position P - 1 + j; the prompt pass gave positions 0..P-2 (and P-1 again)
        hidden = torch.cat([prompt_states[b, : len(p) - 1], states]).to(torch.float16)
        rows.append((list(p) + list(answer), len(p), hidden))
    return rows


def write_sequences(path: Path, rows: Sequence[tuple[list[int], int, Tensor]], kinds: Sequence[str]) -> None:
    """One shard of ``sequences_with_features`` rows end to end (atomic write): a row of n tokens has n - 1 states."""
    tokens = torch.tensor([t for row, _, _ in rows for t in row], dtype=torch.int32)
    hidden = torch.cat([h for _, _, h in rows]).contiguous()
    lengths = torch.tensor([len(row) for row, _, _ in rows], dtype=torch.int32)
    prompt = torch.tensor([p for _, p, _ in rows], dtype=torch.int32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"tokens": tokens, "hidden": hidden, "lengths": lengths, "prompt_lengths": prompt}, str(tmp),
              metadata={"kinds": json.dumps(list(kinds))})
    tmp.replace(path)
