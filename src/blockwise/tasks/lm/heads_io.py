"""Heads files: trained proposal heads (float16 safetensors) with their proposal vocabulary and metadata."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from ...config import HeadsConfig
from ...model.heads import Heads, expected_from_metrics, make_heads

FORMAT = "blockwise-lm-heads/1"
ASSET = Path(__file__).resolve().parents[2] / "assets" / "smollm2-135m-heads.safetensors"  # the chained heads
DRAFTER_ASSET = ASSET.with_name("smollm2-135m-drafter.safetensors")  # the feature-level drafter (issue 18)
SHIPPED = {"drafter": DRAFTER_ASSET, "chain": ASSET}  # names that --heads accepts for the shipped files
DEFAULT_HEADS = DRAFTER_ASSET  # what SmolLM2 decodes with when no heads are named


def save_heads(heads: Heads, path: str | Path, proposal_vocab: Tensor | None = None,
               extra: dict | None = None) -> None:
    """Heads in float16 safetensors, with the token ids p2..pk are scored over (if restricted)."""
    tensors = {n: t.detach().to("cpu", torch.float16).contiguous() for n, t in heads.state_dict().items()}
    if proposal_vocab is not None:
        tensors["proposal_vocab"] = proposal_vocab.to("cpu", torch.int32).contiguous()
    meta = {"format": FORMAT, "heads": json.dumps(dataclasses.asdict(heads.cfg)), "d_model": str(heads.d_model)}
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)


def heads_file(path: str | Path) -> Path:
    """The heads file ``path`` names: the file itself, ``heads.safetensors`` in a folder of ``blockwise
    train-heads``, or a shipped file by its name in ``SHIPPED`` ("drafter", "chain")."""
    if str(path) in SHIPPED:
        return SHIPPED[str(path)]
    path = Path(path)
    return path / "heads.safetensors" if path.is_dir() else path


def read_meta(path: str | Path) -> dict:
    """A heads file's metadata, decoded: format, heads (config), d_model, metrics, base (the model they were trained
    for: name, fingerprint, architecture, vocab_size, d_model; absent in files older than ``blockwise train-heads``)."""
    from safetensors import safe_open

    path = heads_file(path)
    if not path.exists():
        raise FileNotFoundError(f"no trained heads at {path}: train them with `blockwise train-heads`")
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a heads file (metadata format={meta.get('format')!r})")
    return {k: (v if k == "format" else json.loads(v)) for k, v in meta.items()}


def load_heads(path: str | Path = ASSET, dtype: torch.dtype = torch.float32) -> tuple[Heads, Tensor | None]:
    """(heads, proposal vocabulary or None) from a file written by ``save_heads`` (or a folder holding one)."""
    path = heads_file(path)
    meta = read_meta(path)
    heads = make_heads(int(meta["d_model"]), HeadsConfig.from_dict(meta["heads"]))
    state = load_file(str(path))
    vocab = state.pop("proposal_vocab", None)
    heads.load_state_dict({n: t.to(dtype) for n, t in state.items()})
    heads.expected_accepted = expected_from_metrics(meta.get("metrics", {}))  # held-out E(k): the policy's prior
    heads.trained_for = meta.get("base")
    return heads.to(dtype).eval(), None if vocab is None else vocab.long()
