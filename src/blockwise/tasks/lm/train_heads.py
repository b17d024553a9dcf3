"""Proposal heads for any causal LM, end to end: prompts -> self-distillation data -> training -> a heads folder.

What ``blockwise train-heads`` runs. The base is frozen: its greedy answers to the prompts, with the final hidden state
behind every answer token, are generated once (batched, resumable shards under ``out/data``), then the heads train on
those stored states (``out/run``: checkpoints, learning curve) and are written to ``out/heads.safetensors`` with the
model they belong to (name and content fingerprint), their kind, k, proposal vocabulary and held-out agreement.
Rerunning with the same folder resumes whichever stage was unfinished.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Sequence

from . import distill, heads_io, training
from .prompts import build_chat_prompts


def default_prompts(n: int, seed: int = 1) -> list[str]:
    """Up to ``n`` built-in general chat requests (how-to, explanations, stories, code, lists; ~6,100 in all): the
    word lists of ``prompts.build_chat_prompts``, which avoid the subjects of the LM benchmark's prompts."""
    first = build_chat_prompts(n, seed)
    more = build_chat_prompts(max(0, n - len(first)), seed, exclude=[p["text"] for p in first], version=2)
    return [p["text"] for p in first + more]


def read_prompts(paths: Sequence[str | Path]) -> list[str]:
    """Prompts from text files, one per line (blank lines skipped), or JSON-lines files with a "text" field."""
    prompts = []
    for path in map(Path, paths):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            if path.suffix == ".jsonl":
                try:
                    line = json.loads(line)["text"]
                except (ValueError, KeyError, TypeError):
                    raise ValueError(f"{path}:{n} is not a JSON object with a \"text\" field") from None
            prompts.append(line)
    return prompts


def prompt_ids(tokenizer, prompts: Sequence[str], chat: bool) -> list[list[int]]:
    """Token ids of each prompt: in the tokenizer's chat template (one user turn) if ``chat``, else as plain text."""
    from .prompts import chat_ids

    return [chat_ids(tokenizer, p) if chat else tokenizer.encode(p) for p in prompts]


def base_info(name: str, model) -> dict:
    """What a heads file records about its base: name, content fingerprint, architecture, vocabulary, width."""
    from ..hf import fingerprint

    return {"name": name, "fingerprint": fingerprint(model), "architecture": type(model).__name__,
            "vocab_size": model.get_output_embeddings().weight.shape[0], "d_model": model.config.hidden_size}


def train_heads(model, tokenizer, out: str | Path, cfg: training.FitConfig, name: str, prompts: Sequence[str],
                chat: bool = True, data_minutes: float = 30.0, max_new_tokens: int = 128, batch: int = 16,
                eos_id: int | None = None, decoder=None, progress: bool = True) -> dict:
    """Train proposal heads for the Hugging Face causal LM ``model`` into the folder ``out``; returns the metrics.

    ``decoder``: what generates the data (default: ``blockwise.lm.decoding_model(model)``, the native Llama where it
    applies). The prompts are deduplicated; their order is kept, so a rerun resumes the same data set."""
    from ...lm import decoding_model

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = print if progress else (lambda *a, **k: None)
    prompts = list(dict.fromkeys(p for p in prompts if p.strip()))
    if not prompts:
        raise ValueError("no prompts to generate training data from")
    model.requires_grad_(False)
    info = base_info(name, model)
    card = out / "base.json"
    if card.exists() and json.loads(card.read_text())["fingerprint"] != info["fingerprint"]:
        raise ValueError(f"{out} holds data of another model ({json.loads(card.read_text())['name']}): use another "
                         f"--out folder")
    card.write_text(json.dumps(info, indent=1))

    started = time.time()
    ids = prompt_ids(tokenizer, prompts, chat)
    eos = tokenizer.eos_token_id if eos_id is None else eos_id
    if not (out / "data" / "done").exists():
        say(f"1/2 data: greedy answers of {name} to up to {len(prompts)} prompts, at most {data_minutes:g} minutes")
        made = distill.generate_shards(decoder or decoding_model(model), ids, ["prompt"] * len(ids), out / "data",
                                       batch, max_new_tokens, eos, minutes=data_minutes, progress=progress)
        say(f"{made} answer tokens made in {time.time() - started:.0f} s")
    shards = sorted((out / "data").glob("shard_*.safetensors"))
    if len(shards) * batch >= len(ids):  # every prompt answered: later runs skip the data stage
        (out / "data" / "done").touch()
    if not shards:
        raise ValueError("no training data was made (the data budget ran out before the first batch)")
    data = distill.load_shards(shards)
    say(f"2/2 training on {len(data)} answer positions from {len(shards)} shards")
    embed = model.get_output_embeddings().weight.detach().float()
    heads, vocab, metrics = training.fit_heads(data, embed, cfg, out / "run", token_embed=model.get_input_embeddings(),
                                               progress=progress)
    metrics["data"] = {"prompts": len(prompts), "shards": len(shards), "answer_positions": len(data),
                       "chat_template": chat, "max_new_tokens": max_new_tokens}
    metrics["config"] = dataclasses.asdict(cfg)
    heads_io.save_heads(heads, out / "heads.safetensors", vocab, {"metrics": metrics, "base": info})
    (out / "metrics.json").write_text(json.dumps({"base": info, **metrics}, indent=1))
    return metrics
