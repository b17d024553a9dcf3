"""A Transformer with proposal heads, and its float16 safetensors checkpoints."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..batching import lengths_mask, pad
from ..config import HeadsConfig, ModelConfig
from .cache import KVCache
from .heads import expected_from_metrics, expected_metrics, make_heads
from .session import CachedSession
from .transformer import Transformer

FORMAT = "blockwise/1"


class BlockwiseModel(nn.Module):
    """A base Transformer plus proposal heads p1..pk. Implements ``blockwise.decoding.interface.DecodingModel``."""

    def __init__(self, cfg: ModelConfig, heads: HeadsConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.base = Transformer(cfg)
        self.heads_cfg = heads or HeadsConfig(num_heads=1)
        self.heads = make_heads(cfg.d_model, self.heads_cfg).bind(self.base.embed, self.base.project)

    # -- the decoding interface -------------------------------------------------------------------------------
    @property
    def num_heads(self) -> int:
        return self.heads_cfg.num_heads

    @property
    def max_positions(self) -> int:
        return self.cfg.max_positions

    @torch.no_grad()
    def start(self, batch_size: int, capacity: int, sources: Sequence[Sequence[int]] | None = None) -> CachedSession:
        cache = self.base.new_cache(batch_size, capacity)
        if self.cfg.encoder_decoder:
            if sources is None:
                raise ValueError("an encoder-decoder model needs source sentences to decode")
            if len(sources) != batch_size:
                raise ValueError(f"{len(sources)} sources for a batch of {batch_size}")
            source = pad(sources, self.cfg.pad_id, self.embed_device)
            if source.shape[1] > self.cfg.max_positions:
                raise ValueError(f"a source of {source.shape[1]} tokens is beyond the model's "
                                 f"{self.cfg.max_positions} positions")
            memory, mask = self.base.encode(source, lengths_mask(sources, source.shape[1], source.device),
                                            invariant=cache.invariant)
            self.base.attach_memory(cache, memory, mask)
        elif sources is not None:
            raise ValueError("this model is decoder-only: pass prompts as prefixes, not sources")
        return CachedSession(self, cache)

    def decode(self, tokens: Tensor, cache: KVCache, tree=None) -> Tensor:
        """Hidden states (B, T, D) of tokens appended after each row's cached length (the nodes of a candidate tree if
        ``tree``: see ``KVCache.layout``)."""
        return self.base.decode(tokens, cache, tree=tree)

    def scores(self, hidden: Tensor, invariant: bool = False) -> Tensor:
        """Logits (..., V) of p1 at hidden states (..., D)."""
        return self.base.project(self.heads.p1(hidden), invariant)

    @property
    def embed_device(self) -> torch.device:
        return self.base.embed.weight.device

    @property
    def weights(self) -> str:
        """The base's weight precision (model.quant.WEIGHTS)."""
        return self.base.weights

    def with_weights(self, weights: str) -> "BlockwiseModel":
        """This model (in place, for inference) with the base's weights in ``weights`` (``Transformer.with_weights``);
        the heads in bfloat16 for "bfloat16", else float32 (quantized bases keep float32 activations)."""
        self.base.with_weights(weights)
        self.heads.to(torch.bfloat16 if weights == "bfloat16" else torch.float32)
        return self

    # -- training conveniences ------------------------------------------------------------------------------------
    def forward(self, tokens: Tensor, source: Tensor | None = None) -> Tensor:
        """Uncached hidden states (B, T, D) of whole target sequences."""
        return self.base(tokens, source)

    def with_heads(self, heads: HeadsConfig) -> "BlockwiseModel":
        """A model with the same base (shared parameters) and freshly initialised heads."""
        model = BlockwiseModel(self.cfg, heads).to(self.embed_device)
        model.base = self.base
        model.heads.bind(self.base.embed, self.base.project)
        return model

    # -- checkpoints -------------------------------------------------------------------------------------------
    def save(self, path: str | Path, dtype: torch.dtype = torch.float16) -> None:
        """Float16 safetensors; the metadata holds the configuration and, where measured, the heads' held-out
        expected accepted block sizes (``metrics``: the block-size policy's prior, ``record_expected``)."""
        tensors = {name: t.detach().to(dtype).contiguous() for name, t in self.state_dict().items()}
        meta = {"format": FORMAT, "model": json.dumps(dataclasses.asdict(self.cfg)),
                "heads": json.dumps(dataclasses.asdict(self.heads_cfg))}
        if self.heads.expected_accepted:
            meta["metrics"] = json.dumps(expected_metrics(self.heads.expected_accepted))
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu") -> "BlockwiseModel":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no checkpoint at {path}")
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not a blockwise checkpoint (metadata format={meta.get('format')!r})")
        model = cls(ModelConfig(**json.loads(meta["model"])), HeadsConfig.from_dict(json.loads(meta["heads"])))
        state = load_file(str(path))
        check_state(model, state, path)
        model.load_state_dict({name: t.to(dtype) for name, t in state.items()})
        # held-out E(k), k = 1..num_heads, where measured: the block-size policy's prior (decoding/policy.py)
        model.heads.expected_accepted = expected_from_metrics(json.loads(meta.get("metrics", "{}")))
        return model.to(dtype=dtype, device=device).eval()


def record_expected(path: str | Path, expected: Sequence[float]) -> None:
    """Store held-out E(1..K) in checkpoint ``path``'s metadata, in place (tensors untouched)."""
    from safetensors import safe_open

    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a blockwise checkpoint (metadata format={meta.get('format')!r})")
    heads = HeadsConfig.from_dict(json.loads(meta["heads"]))
    if len(expected) != heads.num_heads:
        raise ValueError(f"{path} has {heads.num_heads} heads, got E(k) for k = 1..{len(expected)}")
    meta["metrics"] = json.dumps(expected_metrics(expected))
    save_file(tensors, str(path), metadata=meta)


def save_heads_only(path: str | Path, out: str | Path) -> None:
    """Write the heads of checkpoint ``path`` alone (with its metadata) to ``out``: for models whose base is frozen."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        save_file({k: f.get_tensor(k) for k in f.keys() if k.startswith("heads.")}, str(out), metadata=f.metadata())


def join_heads(base: str | Path, heads: str | Path, out: str | Path) -> None:
    """Write a full checkpoint from a base's weights and a heads-only file (whose metadata describes the whole)."""
    from safetensors import safe_open

    with safe_open(str(base), framework="pt") as b, safe_open(str(heads), framework="pt") as h:
        tensors = {k: b.get_tensor(k) for k in b.keys()} | {k: h.get_tensor(k) for k in h.keys()}
        save_file(tensors, str(out), metadata=h.metadata())


def check_state(model: nn.Module, state: dict[str, Tensor], path: Path | str) -> None:
    """Raise a clear error when a checkpoint's tensors do not match the config it names."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state.items()}
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    wrong = [f"{n}: checkpoint {found[n]} vs config {expected[n]}" for n in expected
             if n in found and found[n] != expected[n]]
    if missing or extra or wrong:
        lines = [f"checkpoint {path} does not match its config:"]
        lines += [f"  missing tensor {n}" for n in missing[:5]] + [f"  unexpected tensor {n}" for n in extra[:5]]
        lines += [f"  {w}" for w in wrong[:5]]
        raise ValueError("\n".join(lines))

