"""k = auto with a dynamic tree: the node budgets TreePolicy chooses, and what they would cost, without timing noise
(issue 17). Each prompt is decoded (bf16, batch 1, one thread, exact: the output is greedy's whatever the budgets) with
the current TreePolicy, optionally with the TreePolicy of an older commit, and with fixed budgets; a decode's modeled
time is the sum over its steps of the machine's cached cost of the budget it fed (``Costs``, measured once), so
policies are compared on the same costs, free of the host's noise (±10-30% between repeats at batch 8 here).

    python recipes/lm/probes/tree_policy_modeled.py --old a5a6944~1 --prompts 12
"""
import argparse
import collections
import importlib.util
import inspect
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from blockwise import blockwise  # before torch: importing blockwise sets OMP_WAIT_POLICY
from blockwise.decoding.policy import TreePolicy, auto_policy
from blockwise.decoding.tree import DynamicTree
from blockwise.tasks.hf import load_smollm2
from blockwise.tasks.llama import Llama, NativeLM
from blockwise.tasks.lm.heads_io import ASSET, load_heads
from blockwise.tasks.lm.prompts import chat_ids

import torch

ROOT = Path(__file__).resolve().parents[3]


def old_tree_policy(commit: str):
    """TreePolicy as it was at ``commit`` (its policy.py, imported from a temporary copy)."""
    source = subprocess.run(["git", "show", f"{commit}:src/blockwise/decoding/policy.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    source = source.replace("from .. import diskcache", "from blockwise import diskcache")
    source = source.replace("from .interface import", "from blockwise.decoding.interface import")
    path = Path(tempfile.mkdtemp()) / "old_policy.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_policy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TreePolicy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", help="also run the TreePolicy of this commit")
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--max-new", type=int, default=96)
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--fixed", default="4,8,16", help="fixed budgets to compare with")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tok, hf = load_smollm2()
    base = Llama.from_hf(hf).cast(torch.bfloat16)
    texts = json.loads((ROOT / "recipes/lm/prompts.json").read_text())
    prompts = [chat_ids(tok, p["text"]) for p in texts[:args.prompts]]
    policies = [("current", TreePolicy)] + ([(f"at {args.old}", old_tree_policy(args.old))] if args.old else [])
    for name in ("drafter", str(ASSET)):
        heads, vocab = load_heads(name)
        lm = NativeLM(base, heads.to(torch.bfloat16), proposal_vocab=vocab)
        tree = DynamicTree(args.nodes, lm.num_heads - 1, top=4)
        measured = auto_policy(lm, prompts[:1], None, args.max_new, tree=tree, progress=True)
        ms = measured.costs.at(1)
        print(f"{Path(name).name}: ms per step by budget {dict(sorted((k, round(v, 1)) for k, v in ms.items()))}")
        runs = [(label, cls) for label, cls in policies] + [(f"fixed {n}", int(n)) for n in args.fixed.split(",")]
        for label, how in runs:
            tokens = steps = 0
            total, chosen = 0.0, collections.Counter()
            for p in prompts:
                if isinstance(how, int):
                    out = blockwise(lm, [p], args.max_new, eos_id=tok.eos_token_id,
                                    tree=DynamicTree(how, lm.num_heads - 1, top=4))
                    counts = {how: out.stats.calls - 1}
                else:
                    prior = {"prior": heads.expected_accepted or ()} if "prior" in inspect.signature(how).parameters \
                        else {}  # as default_tree_policy makes it (older TreePolicies took no prior)
                    out = blockwise(lm, [p], args.max_new, eos_id=tok.eos_token_id, k="auto", tree=tree,
                                    policy=how(measured.costs, measured.budgets, **prior))
                    counts = {n: c for n, c in enumerate(out.stats.k_chosen) if c}
                for n, c in counts.items():
                    total += c * ms[n]
                    chosen[n] += c
                tokens += out.stats.tokens
                steps += out.stats.calls - 1
            print(f"  {label:14s} modeled {1000 * tokens / total:5.1f} tok/s (greedy {1000 / ms[1]:.1f}), "
                  f"{tokens / steps:.2f} tokens per step, budgets {dict(sorted(chosen.items()))}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
