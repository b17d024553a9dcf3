"""Blockwise decoding for a causal language model of your own, in a few lines.

    import blockwise.lm
    lm = blockwise.lm.load("path/to/hf-folder-or.gguf", heads="heads-dir")   # or a loaded transformers model
    print(lm.generate("Explain what a compiler does."))                    # exactly the model's greedy answer
    lm.stats                                                               # tokens per call, calls, chosen k

``load()`` with no arguments is SmolLM2-135M-Instruct with the shipped heads. Heads come from ``blockwise train-heads``
(or ``blockwise.lm.train_heads``); heads made for another model are refused (the heads file names its base by a
content fingerprint). Plain Llama-family models run on the native Llama (``tasks.llama``: fused matrices, our cache,
int8/int4 weights); every other causal LM runs through the Hugging Face adapter (``tasks.hf``), token for token the
same greedy output, only slower per call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from .config import HeadsConfig
from .model.heads import Heads, make_heads

__all__ = ["LM", "decoding_model", "load", "train_heads"]


class HeadsMismatch(ValueError):
    """Heads trained for another base model than the one they are loaded with."""


def decoding_model(model, heads: Heads | None = None, proposal_vocab: torch.Tensor | None = None,
                   weights: str = "float32", tokenizer=None):
    """The ``DecodingModel`` of a Hugging Face causal LM with ``heads``: the native Llama where the model is a plain
    Llama (its weights copied, at ``weights`` precision), else the Hugging Face adapter (float32 or bfloat16 only).
    With the ``tokenizer``, int8 and int4 weights are calibrated on the shipped calibration text
    (``Llama.with_weights``: int8 smoothed, the output projection's outsized input channels rounded apart)."""
    from .tasks.hf import HFCausalLM, is_native_llama
    from .tasks.llama import Llama, NativeLM, calibration_ids

    if heads is None:
        heads = make_heads(model.config.hidden_size, HeadsConfig(num_heads=1))
    if is_native_llama(model):
        dtype = torch.bfloat16 if weights == "bfloat16" else torch.float32  # quantized: float32 activations
        calibration = calibration_ids(tokenizer) if weights in ("int8", "int4") and tokenizer is not None else None
        base = Llama.from_hf(model).with_weights(weights, calibration)
        return NativeLM(base, heads.to(dtype), proposal_vocab=proposal_vocab)
    if weights not in ("float32", "bfloat16"):
        raise ValueError(f"{type(model).__name__} runs through the Hugging Face adapter, which has no {weights} "
                         f"weights: use float32 or bfloat16 (quantized weights need a Llama-family model)")
    dtype = getattr(torch, weights)
    return HFCausalLM(model.to(dtype), heads.to(dtype), proposal_vocab)


def check_heads(heads: Heads, model, path: Path) -> None:
    """Refuse heads made for another model: by fingerprint where their file records one (``heads.trained_for``), else
    by width and vocabulary."""
    from .tasks.hf import fingerprint

    base = heads.trained_for
    width, vocab = model.config.hidden_size, model.get_output_embeddings().weight.shape[0]
    if base is not None and base["fingerprint"] != (found := fingerprint(model)):
        raise HeadsMismatch(f"{path} holds heads trained for {base['name']} ({base['architecture']}, fingerprint "
                            f"{base['fingerprint']}), not for this {type(model).__name__} (fingerprint {found}): "
                            f"train heads for it with `blockwise train-heads`")
    if heads.d_model != width or (base is not None and base["vocab_size"] != vocab):
        raise HeadsMismatch(f"{path} holds heads for a model of width {heads.d_model}, this one has width {width} "
                            f"and {vocab} tokens: train heads for it with `blockwise train-heads`")


class LM:
    """A causal LM with proposal heads: ``generate`` text or token ids, blockwise (exactly greedy) or sampled."""

    def __init__(self, model, tokenizer=None, heads: str | Path | None = None, weights: str = "float32",
                 name: str | None = None) -> None:
        from .tasks.lm import heads_io

        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.heads_path = None if heads is None else heads_io.heads_file(heads)
        loaded, vocab = (None, None)
        if self.heads_path is not None:
            loaded, vocab = heads_io.load_heads(self.heads_path)
            check_heads(loaded, model, self.heads_path)
        self.model = decoding_model(model, loaded, vocab, weights, tokenizer)
        config = getattr(model, "generation_config", None)
        eos = getattr(config, "eos_token_id", None)
        if tokenizer is not None and tokenizer.eos_token_id is not None:
            eos = tokenizer.eos_token_id
        self.eos_id = eos[0] if isinstance(eos, (list, tuple)) else eos
        self.stats = None

    @property
    def num_heads(self) -> int:
        return self.model.num_heads

    def ids(self, prompt: str, chat: bool | None = None) -> list[int]:
        """A prompt's token ids: in the tokenizer's chat template if it has one (or ``chat``), else plain text."""
        from .tasks.lm.prompts import chat_ids

        if self.tokenizer is None:
            raise ValueError("this model was loaded without a tokenizer: pass token ids, or load(model, tokenizer=...)")
        if chat is None:
            chat = getattr(self.tokenizer, "chat_template", None) is not None
        return chat_ids(self.tokenizer, prompt) if chat else self.tokenizer.encode(prompt)

    def generate(self, prompts: str | Sequence[str] | Sequence[Sequence[int]], max_new_tokens: int = 128,
                 k: int | str | None = "auto", chat: bool | None = None, tree=None, temperature: float = 0.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int = 0, lookup: int = 0):
        """Blockwise decoding of one prompt (returns a string) or a batch (a list): text, or token id lists (returns
        token id lists). ``k``: block size, 1..num_heads, or "auto" (chosen per step from this machine's measured
        costs). ``tree``: verify a candidate tree per call (``decoding.DynamicTree`` or ``StaticTree``), its node
        budget chosen per step with k = "auto", fixed with k = None. ``temperature`` > 0 samples (speculative
        sampling: the distribution of plain sampling). ``lookup`` > 0: every call also verifies up to that many tokens
        copied from the text so far (decoding/lookup.py; greedy only). Statistics of the run in ``self.stats``."""
        from .decoding import Sampling, blockwise

        one = isinstance(prompts, str) or (len(prompts) > 0 and isinstance(prompts[0], int))
        batch = [prompts] if one else list(prompts)
        if not batch or not all(len(p) for p in batch):
            raise ValueError("give at least one prompt, and no empty one")
        as_text = isinstance(batch[0], str)
        ids = [self.ids(p, chat) if as_text else list(p) for p in batch]
        sampling = Sampling(temperature, top_k, top_p, seed) if temperature > 0 else None
        if tree is None and k != "auto" and k > self.num_heads:
            raise ValueError(f"k={k} is more than the {self.num_heads} heads (p1..p{self.num_heads})")
        from .decoding.lookup import Lookup

        out = blockwise(self.model, ids, max_new_tokens, k=k, eos_id=self.eos_id, tree=tree, sampling=sampling,
                        lookup=Lookup(tokens=lookup) if lookup else None)  # sampling with lookup: tree_decode refuses
        self.stats = out.stats
        result = [self.tokenizer.decode([t for t in row if t != self.eos_id], skip_special_tokens=True)
                  for row in out.tokens] if as_text else out.tokens
        return result[0] if one else result


def load(model=None, heads: str | Path | None = None, tokenizer=None, weights: str = "float32") -> LM:
    """An ``LM``: ``model`` is None (SmolLM2-135M-Instruct; ``heads`` default to the shipped drafter, "chain" names
    the shipped chained heads), a local Hugging Face folder or GGUF file (its tokenizer loads with it), or a loaded
    ``transformers`` causal LM (pass its ``tokenizer`` to generate from text). ``heads``: a heads folder or file from
    ``train_heads``; None: greedy only (k = 1) for a model of your own."""
    from .tasks.hf import load_causal_lm, model_name
    from .tasks.lm.heads_io import DEFAULT_HEADS

    name = None
    if model is None or isinstance(model, (str, Path)):
        name = model_name(model)
        if model is None and heads is None:
            heads = DEFAULT_HEADS
        tokenizer, model = load_causal_lm(model)
    return LM(model, tokenizer, heads, weights, name)


def train_heads(model, out: str | Path, tokenizer=None, kind: str = "chain", k: int = 4, prompts: Sequence[str] = (),
                data_minutes: float = 30.0, train_minutes: float = 20.0, steps: int = 0, **options) -> dict:
    """Train proposal heads for ``model`` (as in ``load``) into the folder ``out``; returns the held-out metrics.
    ``prompts``: the requests whose greedy answers are the training data (default: ~6,100 built-in chat prompts).
    Further ``options``: ``FitConfig`` fields (d_hidden, batch, lr, proposal_vocab, bf16, ...) and the data
    stage's ``chat``, ``max_new_tokens``, ``batch_prompts``."""
    import dataclasses

    from .tasks.hf import load_causal_lm, model_name
    from .tasks.lm import train_heads as workflow
    from .tasks.lm.training import FitConfig

    name = type(model).__name__
    if model is None or isinstance(model, (str, Path)):
        name = model_name(model)
        tokenizer, model = load_causal_lm(model)
    if tokenizer is None:
        raise ValueError("train_heads needs the model's tokenizer (to build the prompts)")
    fit_fields = {f.name for f in dataclasses.fields(FitConfig)}
    cfg = FitConfig(kind=kind, num_heads=k, minutes=train_minutes, steps=steps,
                    **{n: v for n, v in options.items() if n in fit_fields})
    rest = {n: v for n, v in options.items() if n not in fit_fields}
    chat = rest.pop("chat", getattr(tokenizer, "chat_template", None) is not None)
    batch = rest.pop("batch_prompts", 16)
    return workflow.train_heads(model, tokenizer, out, cfg, name, list(prompts) or workflow.default_prompts(10 ** 6),
                                chat=chat, data_minutes=data_minutes, batch=batch, **rest)
