"""Our heads served by vLLM, side by side with vLLM's greedy and n-gram speculator and with our own decoder:
SmolLM2-135M-Instruct, the benchmark prompts (recipes/lm/prompts.json), batch 1, greedy, float32, one thread each.

1. `blockwise export` of the residual heads (recipes/engines/residual_heads.py) to vLLM's Medusa form, and of SmolLM2
   (de-quantised from its GGUF) to a Hugging Face folder vLLM loads.
2. vLLM (CPU build, its own environment: bash recipes/engines/00_vllm.sh), eager mode: greedy, n-gram speculation
   (prompt lookup) and Medusa with our heads, each with K speculative tokens; its own acceptance counters.
3. Ours on the same prompts: greedy, blockwise with the same residual heads (k = K + 1) and with the shipped chained
   heads.

Outputs are compared token for token with vLLM's greedy and ours. Timing: medians over repeats of tokens/s (prompt
evaluation included, model loading not). Writes results/engines/vllm/{README.md, details.json} and the rows of system
"vllm" (and ours, method "... (vllm run)") into results/engines/summary.json. Nothing else may run meanwhile.

    python recipes/engines/vllm_benchmark.py                   # ~20 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from blockwise import blockwise, greedy  # before torch: importing blockwise sets OMP_WAIT_POLICY
from blockwise.eval.timing import cpu_label, environment
from blockwise.export.vllm import export_vllm
from blockwise.tasks.hf import SMOLLM2_NAME, load_smollm2
from blockwise.tasks.llama import Llama, NativeLM
from blockwise.tasks.lm.heads_io import ASSET, load_heads
from blockwise.tasks.lm.prompts import chat_ids

import torch

ROOT = Path(__file__).resolve().parents[2]
VLLM = ROOT / ".venv-vllm" / "bin" / "python"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heads", default="runs/engines/residual", help="residual heads folder (residual_heads.py)")
    ap.add_argument("--export", default="runs/engines/vllm-export", help="where the exported folders go")
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--max-new", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--k", type=int, default=3, help="speculative tokens per step (ours: blocks of k+1 tokens)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for vLLM and ours alike (default 1)")
    ap.add_argument("--out", default=str(ROOT / "results" / "engines" / "vllm"))
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from OUT/details.json")
    return ap.parse_args(argv)


def ours(lm, prompts, max_new, eos, k):
    rows, calls, seconds = [], 0, []
    for p in prompts:
        t = time.perf_counter()
        out = greedy(lm, [p], max_new, eos_id=eos) if k == 1 else blockwise(lm, [p], max_new, k=k, eos_id=eos)
        seconds.append(time.perf_counter() - t)
        rows.append(out.tokens[0])
        calls += out.stats.calls - 1  # the prompt's call excluded, as for vLLM's steps
    return {"tokens": rows, "seconds": seconds, "steps": calls}


def vllm(request: dict, threads: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(request, f)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_OMP_THREADS_BIND": f"0-{threads - 1}",
           "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([str(VLLM), str(Path(__file__).with_name("vllm_run.py")), f.name], capture_output=True,
                          text=True, env=env)
    os.unlink(f.name)
    line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"vLLM failed:\n{done.stderr[-4000:]}")
    return json.loads(line[len("RESULT "):])


def main(argv=None) -> None:
    args = parse_args(argv)
    if not VLLM.exists():
        raise SystemExit(f"no vLLM environment at {VLLM}: run bash recipes/engines/00_vllm.sh")
    torch.set_num_threads(args.threads)
    started = time.time()
    tokenizer, hf = load_smollm2()
    bench = json.loads((ROOT / "recipes" / "lm" / "prompts.json").read_text())[: args.prompts]
    prompts = [chat_ids(tokenizer, p["text"]) for p in bench]
    eos = tokenizer.eos_token_id
    heads, vocab = load_heads(Path(args.heads) / "heads.safetensors")
    chain, chain_vocab = load_heads(ASSET)
    export = Path(args.export)
    if not (export / "medusa" / "config.json").exists():
        export_vllm(heads, hf, tokenizer, export, SMOLLM2_NAME)
    base = Llama.from_hf(hf).cast(torch.float32)
    del hf
    k = args.k + 1
    lms = {"greedy": (NativeLM(base), 1),
           f"blockwise k={k}, residual heads": (NativeLM(base, heads, proposal_vocab=vocab), k),
           f"blockwise k={k}, chained heads (shipped)": (NativeLM(base, chain, proposal_vocab=chain_vocab), k)}

    if args.report_only:
        details = json.loads((Path(args.out) / "details.json").read_text())
        return report(args, details["vllm"], details["ours"], len(prompts), details["minutes"], details["environment"])
    print("vLLM ...", flush=True)
    v = vllm({"base": str((export / "base").resolve()), "medusa": str((export / "medusa").resolve()),
              "prompts": prompts, "max_new": args.max_new, "repeats": args.repeats, "k": args.k,
              "methods": ["greedy", "ngram", "medusa"], "batch": 1}, args.threads)
    print("ours ...", flush=True)
    for lm, k in lms.values():  # warm-up
        ours(lm, [prompts[0][:8]], 4, eos, k)
    mine = {name: [ours(lm, prompts, args.max_new, eos, k) for _ in range(args.repeats)]
            for name, (lm, k) in lms.items()}

    report(args, v, mine, len(prompts), (time.time() - started) / 60, environment())


def report(args, v: dict, mine: dict, n_prompts: int, minutes: float, env: dict) -> None:
    """Records, details.json, README.md and the rows of results/engines/summary.json from the runs."""
    reference = v["greedy"]["runs"][0]["tokens"]
    our_greedy = mine["greedy"][0]["tokens"]
    cpu = cpu_label()
    records = []
    for system, results in (("vllm", {m: r["runs"] for m, r in v.items()}), ("blockwise", mine)):
        for method, runs in results.items():
            n_tok = sum(len(t) for t in runs[0]["tokens"])
            speed = statistics.median(n_tok / sum(r["seconds"]) for r in runs)
            if system == "vllm":  # every step gives one token plus the drafts it accepted; n-gram drafts only
                # where the text repeats, so 1 + accepted / drafts would overstate it: count the steps instead
                accepted = runs[0]["counters"].get("vllm:spec_decode_num_accepted_tokens", 0)
                rows = len(runs[0]["tokens"])  # the prompts' own steps (the first token each) left out, as for ours
                per_step = (n_tok - rows) / max(n_tok - rows - accepted, 1)
            else:
                per_step = (n_tok - len(runs[0]["tokens"])) / max(runs[0]["steps"], 1)
            same_vllm = sum(a == b for a, b in zip(runs[0]["tokens"], reference))
            same_ours = sum(a == b for a, b in zip(runs[0]["tokens"], our_greedy))
            records.append({"system": system, "method": method, "dtype": "float32", "batch": 1,
                            "threads": args.threads, "tokens_per_s": round(speed, 2),
                            "mean_accepted": round(per_step, 3),
                            "n": n_prompts, "cpu": cpu, "k": args.k + 1 if method != "greedy" else 1,
                            "same_as_vllm_greedy": same_vllm, "same_as_our_greedy": same_ours,
                            "max_new_tokens": args.max_new, "repeats": args.repeats})
    vg = next(r["tokens_per_s"] for r in records if r["system"] == "vllm" and r["method"] == "greedy")
    for r in records:
        r["vs_vllm_greedy"] = round(r["tokens_per_s"] / vg, 3)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "details.json").write_text(json.dumps({"environment": env, "args": vars(args), "records": records,
                                                  "vllm": v, "ours": mine, "minutes": minutes}, indent=1))
    summary = ROOT / "results" / "engines" / "summary.json"
    kept = [r for r in json.loads(summary.read_text())
            if not (r.get("run") == "vllm" and r["threads"] == args.threads
                    and r.get("speculative_tokens", 3) == args.k)] if summary.exists() else []
    keys = ("system", "method", "dtype", "batch", "threads", "tokens_per_s", "mean_accepted", "n", "cpu")
    summary.write_text(json.dumps(kept + [{**{k: r[k] for k in keys}, "run": "vllm", "k": r["k"],
                                           "speculative_tokens": args.k,
                                           "same_as_vllm_greedy": r["same_as_vllm_greedy"],
                                           "vs_vllm_greedy": r["vs_vllm_greedy"]} for r in records], indent=1) + "\n")
    threads = "one thread" if args.threads == 1 else f"{args.threads} threads"
    lines = [f"# vLLM serving our heads: SmolLM2-135M-Instruct, batch 1, greedy, float32, {threads}", "",
             f"`python recipes/engines/vllm_benchmark.py --k {args.k} --prompts {args.prompts} --max-new "
             f"{args.max_new} --repeats {args.repeats} --threads {args.threads} --out {args.out}` at commit "
             f"`{env.get('commit')}`, {minutes:.0f} minutes; CPU "
             f"{env.get('cpu', '')} ({cpu}), vLLM CPU build (vllm-cpu 0.32.0, eager mode). Tokens/s: median "
             f"over repeats, prompt evaluation included, model loading not. Tokens per step: new tokens after each "
             f"prompt's first per model step (vLLM: steps = tokens - accepted drafts, from its own counters "
             f"`vllm:spec_decode_num_accepted_tokens`; ours: model calls).", "",
             "| system | method | tokens/s | × vLLM greedy | tokens per step | = vLLM greedy | = our greedy |",
             "|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['system']} | {r['method']} | {r['tokens_per_s']:.1f} | {r['vs_vllm_greedy']:.2f} | "
                     f"{r['mean_accepted']:.2f} | {r['same_as_vllm_greedy']}/{r['n']} | "
                     f"{r['same_as_our_greedy']}/{r['n']} |")
    (out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
