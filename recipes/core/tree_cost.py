#!/usr/bin/env python3
"""The cost of one call feeding T = 1..64 candidate-tree nodes to SmolLM2-135M (native Llama), relative to a greedy
step (issue 17 item 6): what a node budget can afford on this machine. Batch 1 and 8, float32 and bfloat16, one
thread (``--threads 1,2``: each count in turn); each call feeds a random tree of T nodes (depth <= 5; ``--chain``: a
block of T tokens) after a prompt of ``--context`` tokens and takes p1's argmax at every node. Writes
results/core/<cpu>/tree_cost.{json,md} (chain_cost with ``--chain``).

    OMP_WAIT_POLICY=PASSIVE python recipes/core/tree_cost.py
    ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2 python recipes/core/tree_cost.py
"""

from __future__ import annotations

import argparse
import json
import time

from blockwise.decoding.tree import Tree  # before torch: importing blockwise sets OMP_WAIT_POLICY
from blockwise.eval.records import cpu_folder
from blockwise.eval.step_cost import step_cost
from blockwise.eval.timing import cpu_label, git_commit
from blockwise.tasks.hf import load_smollm2
from blockwise.tasks.llama import Llama, NativeLM

import torch


def random_tree(batch: int, n: int, depth: int = 5, seed: int = 0) -> Tree:
    g = torch.Generator().manual_seed(seed + n)
    parents, levels = [-1], [0]
    for i in range(1, n):
        options = [j for j in range(i) if levels[j] < depth]
        p = options[int(torch.randint(len(options), (1,), generator=g))]
        parents.append(p)
        levels.append(levels[p] + 1)
    return Tree.from_parents(torch.zeros(batch, n, dtype=torch.long), torch.tensor([parents] * batch))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ts", default="2,4,8,16,32,64")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--dtypes", default="bfloat16,float32")
    ap.add_argument("--context", type=int, default=160)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", default="1", help="thread counts, comma-separated")
    ap.add_argument("--chain", action="store_true", help="feed the T tokens as a block (causal), not as a random tree; "
                                                         "writes chain_cost.{json,md}")
    ap.add_argument("--out", default="results/core")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    started = time.time()
    _, hf = load_smollm2()
    ts = [int(t) for t in args.ts.split(",")]
    rows = []
    for n_threads, dtype in [(n, d) for n in threads for d in args.dtypes.split(",")]:
        torch.set_num_threads(n_threads)
        lm = NativeLM(Llama.from_hf(hf).cast(getattr(torch, dtype)))
        for batch in map(int, args.batches.split(",")):
            session = lm.start(batch, args.context + max(ts) + 1)
            session.feed(torch.randint(3, 1000, (batch, args.context)))
            tokens = torch.randint(3, 1000, (batch, max(ts)))
            cost = step_cost(session, tokens, ts, repeats=args.repeats,
                             tree=None if args.chain else lambda n: random_tree(batch, n))
            for t, ms in cost.ms.items():
                rows.append({"dtype": dtype, "threads": n_threads, "batch": batch, "T": t, "ms": round(ms, 2),
                             "ratio": round(cost.ratio[t], 3)})
            ratios = {t: round(r, 2) for t, r in cost.ratio.items()}
            print(dtype, f"{n_threads} thread(s)", batch, ratios, f"T=1 {cost.ms[1]:.1f} ms", flush=True)
    cpu = cpu_label()
    out = cpu_folder(args.out, cpu)
    meta = {"commit": git_commit(), "cpu": cpu, "threads": threads, "context": args.context, "repeats": args.repeats,
            "minutes": round((time.time() - started) / 60, 1), "model": "SmolLM2-135M-Instruct (native Llama)"}
    name = "chain_cost" if args.chain else "tree_cost"
    (out / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    fed = "a block of T tokens" if args.chain else "a random tree of T nodes (depth <= 5)"
    command = f"python recipes/core/tree_cost.py --threads {args.threads}" + " --chain" * args.chain
    lines = [f"# One call feeding {fed} vs a greedy step: SmolLM2-135M, {cpu}", "",
             f"`{command}` at {meta['commit']}, {meta['minutes']} min; medians of {args.repeats}, {args.context} "
             f"tokens cached; {fed}, p1's argmax at every one. Ratio = time of the T-token call / time of the 1-token "
             "call, same dtype, threads and batch.", "",
             "| dtype | threads | batch | " + " | ".join(f"T={t}" for t in [1] + ts) + " | T=1 ms |",
             "|---|---|---|" + "---|" * (len(ts) + 2)]
    for n_threads, dtype in [(n, d) for n in threads for d in args.dtypes.split(",")]:
        for batch in map(int, args.batches.split(",")):
            sel = {r["T"]: r for r in rows if (r["dtype"], r["batch"], r["threads"]) == (dtype, batch, n_threads)}
            lines.append(f"| {dtype} | {n_threads} | {batch} | " +
                         " | ".join(f"{sel[t]['ratio']:.2f}" for t in [1] + ts) + f" | {sel[1]['ms']:.1f} |")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
