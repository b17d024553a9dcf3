"""Tokens per call of candidate trees on the SmolLM2 benchmark prompts (no timing): chain vs static vs dynamic trees.

    python recipes/lm/probes/tree_acceptance.py --n 8 --max-new 96
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from blockwise import blockwise, greedy
from blockwise.decoding.tree import DynamicTree, StaticTree, tree_decode
from blockwise.tasks.hf import load_smollm2
from blockwise.tasks.lm.heads_io import load_heads
from blockwise.tasks.lm.prompts import chat_ids
from blockwise.tasks.llama import Llama, NativeLM

import torch

HERE = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new", type=int, default=96)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--trees", default="chain3,chain5,dyn:16:4:4,dyn:32:5:4,dyn:64:5:6")
    args = ap.parse_args()
    torch.set_num_threads(2)
    tokenizer, hf = load_smollm2()
    heads, vocab = load_heads()
    dt = getattr(torch, args.dtype)
    lm = NativeLM(Llama.from_hf(hf).cast(dt), heads.to(dt), proposal_vocab=vocab)
    texts = json.loads((HERE / "prompts.json").read_text())[: args.n]
    prompts = [chat_ids(tokenizer, p["text"]) for p in texts]
    eos = tokenizer.eos_token_id
    ref = [greedy(lm, [p], args.max_new, eos_id=eos).tokens[0] for p in prompts]
    for spec in args.trees.split(","):
        if spec.startswith("chain"):
            shape = StaticTree.chain(int(spec[5:]))
        elif spec.startswith("dyn"):
            _, n, d, t, *rest = spec.split(":")
            shape = DynamicTree(int(n), int(d), int(t), spine=rest != ["nospine"])
        else:
            shape = StaticTree(json.loads(Path(spec).read_text()))
        calls = toks = same = 0
        for p, r in zip(prompts, ref):
            out = tree_decode(lm, [p], args.max_new, shape, eos_id=eos)
            calls += out.stats.iterations
            toks += out.stats.tokens
            same += out.tokens[0] == r
        print(f"{spec:>16}  nodes {shape.nodes:3d}  tokens/call {toks / calls:.3f}  identical {same}/{len(prompts)}",
              flush=True)


if __name__ == "__main__":
    main()
