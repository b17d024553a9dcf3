"""The reference our decoders are compared with: Hugging Face ``generate`` on the same batch of prompts.

One function for the tests (exactness against ``generate(do_sample=False)``) and the LM benchmark (HF greedy and HF
prompt-lookup decoding as baselines), so both run the very same call.
"""

from __future__ import annotations

from typing import Sequence

import torch


def hf_generate(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, eos_id: int | None,
                pad_id: int = 0, lookup: int | None = None) -> list[list[int]]:
    """Greedy ``model.generate(do_sample=False)`` on the left-padded batch of ``prompts``; the new tokens of each row,
    cut after its first ``eos_id`` (kept). ``lookup``: HF prompt-lookup decoding instead
    (``prompt_lookup_num_tokens=lookup``; HF refuses it for batches of more than one row)."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    extra = {"prompt_lookup_num_tokens": lookup} if lookup else {}
    with torch.no_grad():
        out = model.generate(ids.to(model.device), attention_mask=mask.to(model.device), do_sample=False,
                             max_new_tokens=max_new_tokens, eos_token_id=eos_id, pad_token_id=pad_id, **extra)
    rows = out[:, width:].tolist()
    return [row[: row.index(eos_id) + 1] if eos_id is not None and eos_id in row else row for row in rows]
