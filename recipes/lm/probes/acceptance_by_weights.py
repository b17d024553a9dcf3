"""Does quantizing the base lower the shipped heads' acceptance? Tokens per call of blockwise decoding (exact) with the
shipped heads, per weight precision, on the 16 benchmark prompts (recipes/lm/prompts.json), batch 1. No timing: the
figures do not depend on the machine's load (they do on the CPU's kernels: each precision decodes its own text).

    python recipes/lm/probes/acceptance_by_weights.py --weights float32,bfloat16,int8,int4 --k 3 --max-new 128 \
        --out results/engines/avx512_bf16/acceptance
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import time
from pathlib import Path

from blockwise import blockwise  # before torch: importing blockwise sets OMP_WAIT_POLICY
from blockwise.eval.timing import cpu_label
from blockwise.lm import decoding_model
from blockwise.tasks.hf import load_smollm2
from blockwise.tasks.lm.heads_io import ASSET, load_heads
from blockwise.tasks.lm.prompts import chat_ids

import torch
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[3]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="float32,bfloat16,int8,int4")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--max-new", type=int, default=128)
    ap.add_argument("--out", default=None, help="write README.md and acceptance.json here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    started = time.time()
    tokenizer, hf = load_smollm2()
    heads, vocab = load_heads(ASSET)
    texts = json.load(open(ROOT / "recipes/lm/prompts.json"))
    prompts = [chat_ids(tokenizer, p["text"]) for p in texts]
    rows = {}
    for w in args.weights.split(","):
        lm = decoding_model(hf, copy.deepcopy(heads), vocab, w, tokenizer)
        per = []
        for p in tqdm(prompts, desc=w):
            out = blockwise(lm, [p], args.max_new, k=args.k, eos_id=tokenizer.eos_token_id)
            per.append((out.stats.tokens, out.stats.blocks))
        rates = [t / b for t, b in per]
        rows[w] = {"tokens_per_call": sum(t for t, _ in per) / sum(b for _, b in per), "per_prompt": rates,
                   "stdev_per_prompt": statistics.stdev(rates), "tokens": sum(t for t, _ in per)}
        print(w, round(rows[w]["tokens_per_call"], 3), flush=True)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=ROOT).stdout.strip()
        minutes = (time.time() - started) / 60
        json.dump({"k": args.k, "max_new_tokens": args.max_new, "prompts": len(prompts), "commit": commit,
                   "cpu": cpu_label(), "minutes": round(minutes, 1), "rows": rows}, open(out / "acceptance.json", "w"),
                  indent=1)
        lines = [f"# Tokens per call of the shipped heads by weight precision (k = {args.k}, exact)", "",
                 f"`python recipes/lm/probes/acceptance_by_weights.py --weights {args.weights} --k {args.k} "
                 f"--max-new {args.max_new} --out {args.out}` at `{commit}`, {minutes:.0f} minutes; CPU "
                 f"{cpu_label()}, 1 thread, the {len(prompts)} benchmark prompts, up to {args.max_new} new tokens "
                 "each. "
                 "Each precision decodes its own greedy text, so part of a difference is the text's.", "",
                 "| weights | tokens/call | per-prompt stdev | tokens |", "|---|---|---|---|"]
        lines += [f"| {w} | {r['tokens_per_call']:.3f} | {r['stdev_per_prompt']:.3f} | {r['tokens']} |"
                  for w, r in rows.items()]
        (out / "README.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
