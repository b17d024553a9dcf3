"""Two commits' SmolLM2 decoding, interleaved in one run: same tokens per call, same outputs, no slower?

For changes that must not move figures (a refactoring): each repeat runs the old commit and then the new one (the
order alternates) in fresh processes on the benchmark prompts, batch 1, one thread; each process times our greedy and
blockwise k per dtype once after a warm-up. Reports the median tokens/s per commit and method, their ratio, the mean
accepted block size and whether the outputs are identical across the two commits.

    python recipes/lm/probes/ab_commits.py --old 74e4cab --repeats 3      # new = the working tree
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def measure(args) -> None:
    """Child: load the model from this tree's sources, time each method once, print one JSON line."""
    import torch

    from blockwise import blockwise, greedy
    from blockwise.tasks.hf import load_smollm2
    from blockwise.tasks.llama import Llama, NativeLM
    try:  # where the heads file reader and the chat template live differs between commits
        from blockwise.tasks.lm.heads_io import load_heads
        from blockwise.tasks.lm.prompts import chat_ids
    except ImportError:
        from blockwise.tasks.lm_heads import chat_ids, load_heads

    torch.set_num_threads(args.threads)
    tokenizer, hf = load_smollm2()
    eos = tokenizer.eos_token_id
    texts = json.loads((ROOT / "recipes/lm/prompts.json").read_text())[: args.n]
    prompts = [chat_ids(tokenizer, p["text"]) for p in texts]
    out = {}
    for dt in args.dtypes.split(","):
        quantized = dt in ("int8", "int4")  # weights (Llama.with_weights, float32 activations and heads)
        torch_dt = torch.float32 if quantized else getattr(torch, dt)
        heads, vocab = load_heads(dtype=torch_dt)
        base = Llama.from_hf(hf)
        lm = NativeLM(base.with_weights(dt) if quantized else base.cast(torch_dt), heads, proposal_vocab=vocab)
        runs = [("greedy", lambda P: greedy(lm, P, args.max_new, eos_id=eos))]
        runs += [(f"k{k}", (lambda k: lambda P: blockwise(lm, P, args.max_new, k=k, eos_id=eos))(k))
                 for k in map(int, args.ks.split(","))]
        for name, run in runs:
            run(prompts[:1])  # warm-up
            t, tokens, blocks, produced = time.perf_counter(), [], 0, 0
            for p in prompts:
                o = run([p])
                tokens.append(o.tokens[0])
                blocks += o.stats.blocks
                produced += o.stats.tokens
            seconds = time.perf_counter() - t
            out[f"{dt} {name}"] = {"tokens_per_s": sum(map(len, tokens)) / seconds,
                                   "mean_accepted": produced / blocks,
                                   "outputs": hashlib.sha1(json.dumps(tokens).encode()).hexdigest()[:12]}
    print("RESULT " + json.dumps(out), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", default="74e4cab", help="the commit to compare against")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=8, help="benchmark prompts used")
    ap.add_argument("--max-new", type=int, default=128)
    ap.add_argument("--ks", default="3")
    ap.add_argument("--dtypes", default="bfloat16,float32", help="also int8, int4 (quantized weights)")
    ap.add_argument("--out", default=None, help="write the table (markdown) and the figures (JSON) here")
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        return measure(args)

    old_tree = Path(tempfile.mkdtemp(prefix="ab_old_"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old_tree), args.old], check=True,
                   capture_output=True)
    trees = {"old": old_tree, "new": ROOT}
    child = [sys.executable, str(Path(__file__).resolve()), "--measure", "--threads", str(args.threads), "--n",
             str(args.n), "--max-new", str(args.max_new), "--ks", args.ks, "--dtypes", args.dtypes]
    runs = {"old": [], "new": []}
    try:
        for r in range(args.repeats):
            for which in (("old", "new") if r % 2 == 0 else ("new", "old")):
                env = dict(os.environ, PYTHONPATH=str(trees[which] / "src"), OMP_WAIT_POLICY="PASSIVE")
                done = subprocess.run(child, env=env, capture_output=True, text=True, cwd=trees[which])
                line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
                if done.returncode or not line:
                    sys.exit(f"{which} ({trees[which]}) failed:\n{done.stderr[-3000:]}")
                runs[which].append(json.loads(line[0][7:]))
                print(f"repeat {r + 1}/{args.repeats} {which}: " + ", ".join(
                    f"{m} {v['tokens_per_s']:.1f} tok/s" for m, v in runs[which][-1].items()), flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)], capture_output=True)

    new_commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    lines = [f"| method | old {args.old} tok/s | new {new_commit} tok/s | new / old | k̂ old | k̂ new | same outputs |",
             "|---|---|---|---|---|---|---|"]
    figures = {}
    for m in runs["old"][0]:
        med = {w: statistics.median(x[m]["tokens_per_s"] for x in runs[w]) for w in runs}
        acc = {w: runs[w][0][m]["mean_accepted"] for w in runs}
        same = len({x[m]["outputs"] for w in runs for x in runs[w]}) == 1
        figures[m] = {"old_tokens_per_s": round(med["old"], 2), "new_tokens_per_s": round(med["new"], 2),
                      "ratio": round(med["new"] / med["old"], 3), "mean_accepted_old": round(acc["old"], 3),
                      "mean_accepted_new": round(acc["new"], 3), "same_outputs": same}
        lines.append(f"| {m} | {med['old']:.1f} | {med['new']:.1f} | {med['new'] / med['old']:.3f} | "
                     f"{acc['old']:.3f} | {acc['new']:.3f} | {'yes' if same else 'NO'} |")
    print("\n".join(lines))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        meta = {"old": args.old, "new": new_commit, "repeats": args.repeats, "threads": args.threads, "n": args.n,
                "max_new": args.max_new, "command": " ".join(sys.argv)}
        (out / "ab.json").write_text(json.dumps({"meta": meta, "figures": figures, "runs": runs}, indent=1) + "\n")
        (out / "ab.md").write_text(f"`{meta['command']}` (medians of {args.repeats} interleaved repeats, batch 1, "
                                   f"{args.threads} thread(s), {args.n} prompts × {args.max_new} tokens)\n\n"
                                   + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
