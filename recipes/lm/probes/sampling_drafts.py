"""Probe (issue 19): how should the heads draft under sampling? Tokens per call of exact speculative sampling on the
first 6 benchmark prompts (64 new tokens, batch 1, float32) for
  --mode pointmass: proposals drawn from the heads' q̃ (k = 3, 4) vs each head's most likely token (a point-mass q,
                    which is what ``StaticTree.chain(k)`` does under sampling);
  --mode tau:       q̃ at temperature T·τ instead of T (τ = 0.7, 1.0, 1.4, 2.0; any q keeps the output exact).
Only counts are printed (no timing). Run at 93419ff+dirty (pointmass) and 0dde464 (tau): 1.45 vs 1.44 (T = 0.7) and
1.45 vs 1.28 (T = 1.0) at k = 3; τ moved tokens per call by at most ±0.04 at T = 0.7 and τ > 1 lost at T = 1.0.

    python recipes/lm/probes/sampling_drafts.py --mode pointmass
    python recipes/lm/probes/sampling_drafts.py --mode tau
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from blockwise import Sampling, StaticTree, blockwise
from blockwise.decoding import sampling as sampling_module
from blockwise.tasks.hf import load_smollm2
from blockwise.tasks.llama import Llama, NativeLM
from blockwise.tasks.lm.heads_io import ASSET, load_heads
from blockwise.tasks.lm.prompts import chat_ids

import torch

HERE = Path(__file__).resolve().parents[1]


def tokens_per_call(lm, ids, eos, temperature, **kw) -> float:
    tokens = blocks = 0
    for i, prompt in enumerate(ids):
        out = blockwise(lm, [prompt], 64, eos_id=eos, sampling=Sampling(temperature, seed=i), **kw)
        tokens, blocks = tokens + out.stats.tokens, blocks + out.stats.blocks
    return tokens / blocks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["pointmass", "tau"], default="pointmass")
    args = ap.parse_args()
    torch.set_num_threads(2)
    tokenizer, hf = load_smollm2()
    heads, vocab = load_heads(ASSET)
    lm = NativeLM(Llama.from_hf(hf), heads, proposal_vocab=vocab)
    texts = json.loads((HERE / "prompts.json").read_text())[:6]
    ids = [chat_ids(tokenizer, t["text"]) for t in texts]
    eos = tokenizer.eos_token_id
    for T in (0.7, 1.0):
        if args.mode == "pointmass":
            for k in (3, 4):
                drawn = tokens_per_call(lm, ids, eos, T, k=k)
                point = tokens_per_call(lm, ids, eos, T, tree=StaticTree.chain(k))
                print(f"T={T} k={k}: sampled q {drawn:.2f}, point-mass q {point:.2f} tokens/call", flush=True)
        else:
            real = sampling_module.draft_block
            for tau in (0.7, 1.0, 1.4, 2.0):
                sampling_module.draft_block = lambda session, s, *a, tau=tau: real(
                    session, dataclasses.replace(s, temperature=s.temperature * tau), *a)
                print(f"T={T} q at T*{tau}: {tokens_per_call(lm, ids, eos, T, k=3):.3f} tokens/call", flush=True)
            sampling_module.draft_block = real


if __name__ == "__main__":
    main()
