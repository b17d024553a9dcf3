"""Tokens per call when decoding held-out prompts (issue 18's "held-out and on the benchmark prompts alike"): the
first N held-out prompts of recipes/lm/09_drafter_prompts.py (templates no training prompt uses), greedy (exact),
batch 1, bf16, with the shipped drafter and chained heads at k = 4 and in a 16-node dynamic tree. No timing.

    python recipes/lm/probes/drafter_heldout_decode.py --n 16
"""

import argparse
import json

from blockwise import blockwise, greedy  # before torch: importing blockwise sets OMP_WAIT_POLICY

import torch

from blockwise.decoding.common import DecodeStats
from blockwise.eval.records import method_spec
from blockwise.tasks.hf import load_smollm2
from blockwise.tasks.llama import Llama, NativeLM
from blockwise.tasks.lm.heads_io import ASSET, DRAFTER_ASSET, load_heads

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--prompts", default="data/lm/drafter_v3/prompts.jsonl")
ap.add_argument("--n", type=int, default=16)
ap.add_argument("--max-new", type=int, default=96)
args = ap.parse_args()
torch.set_num_threads(1)
rows = [json.loads(line) for line in open(args.prompts)]
held = [r for r in rows if r["held_out"]][: args.n]
tok, hf = load_smollm2()
base = Llama.from_hf(hf).cast(torch.bfloat16)
eos = tok.eos_token_id
plain = NativeLM(base)
out = {"n": len(held), "templates": sorted({r["template"] for r in held}), "max_new": args.max_new}
for name, path in (("feature drafter", DRAFTER_ASSET), ("chained heads", ASSET)):
    heads, vocab = load_heads(path)
    lm = NativeLM(base, heads.to(torch.bfloat16), proposal_vocab=vocab)
    for spec in ("4", "tree16"):
        k, tree = method_spec(spec, lm.num_heads)
        total, same = DecodeStats(), 0
        for r in held:
            o = blockwise(lm, [r["ids"]], args.max_new, k=k, tree=tree, eos_id=eos)
            same += o.tokens == greedy(plain, [r["ids"]], args.max_new, eos_id=eos).tokens
            total.merge(o.stats)
        out[f"{name} {spec}"] = {"tokens_per_call": round(total.mean_accepted, 3), "same_as_greedy": same}
        print(name, spec, out[f"{name} {spec}"], flush=True)
print(json.dumps(out))
