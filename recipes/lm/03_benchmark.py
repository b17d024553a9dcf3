"""The comparison a user would make, in one run on the same prompts: HF greedy ``generate``, HF prompt-lookup decoding,
our greedy decoding on the native Llama, and ours blockwise for k = 2..5 and k = auto (chosen per step from measured
costs: decoding/policy.py), at batch 1 and batch 8, 128 new tokens.

Methods are interleaved within each repeat (so load changes hit all of them alike) and the median over repeats of each
method's tokens/s is reported; speedups are against HF greedy in the same run and batch. Writes
``results/lm/summary.json`` (flat records with the fields ../shared/tools/check-results names: method, drafter, dtype,
k, policy, nodes, tree, batch, temperature, tokens_per_s, speedup (over HF fp32 greedy), speedup_same_dtype,
speedup_vs_greedy (over our greedy, same dtype), mean_accepted, identical (to HF greedy, same dtype), same_as_greedy,
n, cpu), ``details.json`` (per-repeat times, step-cost ratios, load average, the k chosen by k = auto),
``benchmark.md`` and plots. Every method runs in float32 and in bfloat16 (``--dtypes``).

    python recipes/lm/03_benchmark.py --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path

from blockwise import blockwise, greedy  # before torch: importing blockwise sets OMP_WAIT_POLICY
from blockwise.decoding.common import DecodeStats
from blockwise.decoding.policy import auto_policy
from blockwise.eval.records import format_k_chosen, merge_rows, method_spec, pyplot
from blockwise.eval.reference import hf_generate
from blockwise.eval.step_cost import step_cost
from blockwise.eval.timing import cpu_label, git_commit
from blockwise.model.invariant import cpu_has_bf16
from blockwise.tasks.hf import HFCausalLM, load_smollm2
from blockwise.tasks.lm.heads_io import ASSET, load_heads
from blockwise.tasks.lm.prompts import chat_ids
from blockwise.tasks.llama import Llama, NativeLM

import torch
from tqdm.auto import tqdm

HERE = Path(__file__).resolve().parent


def hf_run(hf, prompts, max_new, eos_id, pad_id, lookup: int | None = None):
    """HF greedy (or prompt-lookup) ``generate``, the library's reference, as (rows, no stats) like ``ours_run``."""
    return hf_generate(hf, prompts, max_new, eos_id, pad_id, lookup=lookup), None


def ours_run(lm, prompts, max_new, eos_id, k: int | str | None):
    if isinstance(k, str) and k.startswith("tree:"):  # a dynamic tree of N nodes, or "autoN": budget chosen per step
        tree_k, tree = method_spec("tree" + k.split(":")[1], lm.num_heads)
        out = blockwise(lm, prompts, max_new, k=tree_k, eos_id=eos_id, tree=tree)
    else:
        out = greedy(lm, prompts, max_new, eos_id=eos_id) if k is None else \
            blockwise(lm, prompts, max_new, k=k, eos_id=eos_id)
    return out.tokens, out.stats



def step_costs(lm, prompt, max_t: int, repeats: int) -> dict:
    """One call feeding T tokens and scoring them (T = 1..max_t) after a prompt, batch 1: cost relative to T = 1."""
    session = lm.start(1, 1024)
    session.feed(torch.tensor([prompt]))
    cost = step_cost(session, torch.full((1, max_t), 1000), range(1, max_t + 1), repeats)
    return {f"T{T}": round(v, 3) for T, v in cost.ratio.items()} | {"T1_ms": round(cost.ms[1], 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", default=str(HERE / "prompts.json"))
    ap.add_argument("--heads", default=str(ASSET))
    ap.add_argument("--out", default="results/lm")
    ap.add_argument("--max-new", type=int, default=128)
    ap.add_argument("--ks", default="2,3,4,5,auto", help="fixed block sizes, and 'auto' (the policy)")
    ap.add_argument("--trees", default="16,32,auto64",
                    help="dynamic candidate trees: N nodes per call, or autoN (the node budget chosen per step from "
                         "measured costs, up to N); empty: none")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--dtypes", default="float32,bfloat16",
                    help="every method runs in each (HF too); speedup is over HF greedy in float32, "
                         "speedup_same_dtype over HF greedy in the same dtype")
    ap.add_argument("--n1", type=int, default=8, help="prompts at batch 1")
    ap.add_argument("--n8", type=int, default=16, help="prompts at batch 8 (two batches of 8), and at any batch > 1 "
                                                       "(the prompts repeat past the 16 of prompts.json)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hf-dtypes", default=None, help="dtypes of the Hugging Face rows (default: every --dtypes)")
    ap.add_argument("--lookup", type=int, default=10, help="prompt_lookup_num_tokens for HF prompt lookup (0: skip it)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--merge-into", default=None, help="also put the rows into this summary.json (replacing rows of "
                    "the same --run tag and cpu), e.g. results/lm/summary.json for a run written to another --out")
    ap.add_argument("--run", default=None, help="a tag stored in every row (with --merge-into)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()

    tokenizer, hf32 = load_smollm2()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    heads32, vocab = load_heads(args.heads)
    texts = json.loads(Path(args.prompts).read_text())
    all_ids = [chat_ids(tokenizer, p["text"]) for p in texts]
    # more rows than prompts (--n8 32 for a batch of 32): the prompts again, in order
    all_ids = [all_ids[i % len(all_ids)] for i in range(max(len(all_ids), args.n1, args.n8))]
    ks = [k if k == "auto" else int(k) for k in args.ks.split(",") if k]
    ks += [f"tree:{t}" for t in args.trees.split(",") if t]
    dtypes = args.dtypes.split(",")

    methods, natives = [], {}  # methods: (name, dtype, k, run)
    for dt in dtypes:
        torch_dt = getattr(torch, dt)
        hf = hf32 if dt == "float32" else copy.deepcopy(hf32).to(torch_dt)
        native = natives[dt] = NativeLM(Llama.from_hf(hf32).cast(torch_dt), copy.deepcopy(heads32).to(torch_dt),
                                        proposal_vocab=vocab)
        if dt in (args.hf_dtypes or args.dtypes).split(","):
            methods += [("hf_greedy", dt, None, (lambda hf: lambda P: hf_run(hf, P, args.max_new, eos, pad))(hf))]
        if args.lookup and dt in (args.hf_dtypes or args.dtypes).split(","):
            methods += [("hf_prompt_lookup", dt, None,
                         (lambda hf: lambda P: hf_run(hf, P, args.max_new, eos, pad, lookup=args.lookup))(hf))]
        methods += [("greedy", dt, None, (lambda m: lambda P: ours_run(m, P, args.max_new, eos, None))(native))]
        methods += [("blockwise", dt, k, (lambda m, k: lambda P: ours_run(m, P, args.max_new, eos, k))(native, k))
                    for k in ks]

    records, details = [], {"runs": {}, "notes": [], "k_chosen": {}}
    cpu = cpu_label()
    drafter = f"heads: {Path(args.heads).name} ({heads32.cfg.kind}, num_heads={heads32.num_heads})"
    for batch in [int(b) for b in args.batches.split(",")]:
        n = args.n1 if batch == 1 else args.n8
        groups = [all_ids[i: i + batch] for i in range(0, n, batch)]
        skip = set()  # methods that refused this batch size
        for name, dt, k, run in methods:  # warm-up, untimed
            if k == "auto":  # this machine's costs at every batch size a decode shrinks through, measured once
                auto_policy(natives[dt], groups[0], None, args.max_new).costs.prepare(batch)
            if isinstance(k, str) and k.startswith("tree:auto"):
                tree = method_spec("tree" + k.split(":")[1], natives[dt].num_heads)[1]
                auto_policy(natives[dt], groups[0], None, args.max_new, tree=tree).costs.prepare(batch)
            try:
                run(groups[0][:1] if batch == 1 else groups[0])
            except Exception as e:  # HF assisted decoding refuses batch > 1
                skip.add((name, dt, k))
                details["notes"].append(f"{name} {dt} batch {batch}: {type(e).__name__}: {str(e)[:200]}")
        keys = [(m, dt, k) for m, dt, k, _ in methods]
        times = {key: [] for key in keys}
        outputs, stats = {}, {}
        bar = tqdm(total=args.repeats * (len(methods) - len(skip)), desc=f"batch {batch}", dynamic_ncols=True)
        for r in range(args.repeats):
            order = methods if r % 2 == 0 else methods[::-1]
            for name, dt, k, run in order:
                if (name, dt, k) in skip:
                    continue
                t, rows, blocks = time.perf_counter(), [], []
                for group in groups:
                    got, st = run(group)
                    rows += got
                    blocks.append(st)
                times[(name, dt, k)].append(time.perf_counter() - t)
                outputs[(name, dt, k)], stats[(name, dt, k)] = rows, blocks
                bar.update(1)
                bar.set_postfix(load=f"{os.getloadavg()[0]:.2f}")
        bar.close()
        tps = {key: sum(len(r) for r in outputs[key]) / statistics.median(times[key]) for key in keys if key not in skip}
        for name, dt, k in keys:
            key = (name, dt, k)
            tree = k.split(":")[1] if isinstance(k, str) and k.startswith("tree:") else None
            auto, lookup = k == "auto" or (tree or "").startswith("auto"), name == "hf_prompt_lookup"
            rec = {"method": name, "drafter": drafter if name == "blockwise" else
                   f"prompt lookup ({args.lookup} tokens)" if lookup else None,
                   "dtype": dt, "k": None if auto else heads32.num_heads if tree else k,
                   "policy": "auto" if auto else None if lookup else "fixed",
                   "nodes": None if auto or lookup else int(tree) if tree else k or 1,
                   "tree": "dynamic" if tree else "chain", "batch": batch, "temperature": 0.0,
                   "tokens_per_s": None, "speedup": None, "speedup_same_dtype": None, "speedup_vs_greedy": None,
                   "mean_accepted": None, "identical": None, "same_as_greedy": None, "n": n, "cpu": cpu}
            if key not in skip:
                ref, ours = outputs.get(("hf_greedy", dt, None)), outputs[("greedy", dt, None)]
                rec.update(tokens_per_s=round(tps[key], 2),
                           speedup=round(tps[key] / tps[("hf_greedy", "float32", None)], 3)
                           if ("hf_greedy", "float32", None) in tps else None,
                           speedup_same_dtype=round(tps[key] / tps[("hf_greedy", dt, None)], 3)
                           if ("hf_greedy", dt, None) in tps else None,
                           speedup_vs_greedy=round(tps[key] / tps[("greedy", dt, None)], 3),
                           identical=None if name == "hf_greedy" or ref is None else
                           sum(a == b for a, b in zip(outputs[key], ref)),
                           same_as_greedy=sum(a == b for a, b in zip(outputs[key], ours)))
                if name == "greedy":
                    rec["mean_accepted"] = 1.0
                if name == "blockwise":
                    st = stats[key]
                    rec["mean_accepted"] = round(sum(s.tokens for s in st) / sum(s.blocks for s in st), 3)
                    if auto:
                        total = DecodeStats()
                        for s in st:
                            total.merge(s)
                        details["k_chosen"][f"{dt}_b{batch}" + (f"_tree_{tree}" if tree else "")] = total.k_chosen
                details["runs"][f"{name}_{dt}{'' if k is None else f'_k{k}'}_b{batch}"] = {
                    "seconds": [round(t, 3) for t in times[key]], "tokens": sum(len(r) for r in outputs[key]),
                    "rows_differing_from_hf_greedy": None if ref is None else
                    [i for i, (a, b) in enumerate(zip(outputs[key], ref)) if a != b],
                    "rows_differing_from_our_greedy": [i for i, (a, b) in enumerate(zip(outputs[key], ours))
                                                       if a != b]}
            records.append(rec)
        if batch == 1:
            ref = outputs.get(("hf_greedy", dtypes[0], None)) or outputs[("greedy", dtypes[0], None)]
            details["sample_outputs"] = {texts[i]["text"]: tokenizer.decode(ref[i]) for i in range(min(3, n))}

    prompt = all_ids[0]
    for dt, native in natives.items():
        details[f"step_cost_native_{dt}"] = step_costs(native, prompt, 6, 9)
    details["step_cost_hf_float32"] = step_costs(HFCausalLM(hf32), prompt, 6, 9)
    details["load_average_at_end"] = os.getloadavg()
    details["machine"] = {"cpus": os.cpu_count(), "threads": args.threads, "torch": torch.__version__,
                          "platform": platform.platform(), "cpu_has_bf16": cpu_has_bf16(), "isa": cpu}
    details["commit"] = git_commit()
    details["minutes"] = round((time.time() - started) / 60, 1)
    details["heads"] = str(args.heads)
    details["args"] = vars(args)
    if args.run:
        records = [r | {"run": args.run} for r in records]
    (out_dir / "summary.json").write_text(json.dumps(records, indent=1))
    if args.merge_into:
        merge_rows(args.merge_into, records, args.run, cpu)
    (out_dir / "details.json").write_text(json.dumps(details, indent=1, default=str))
    write_report(records, details, out_dir)
    print((out_dir / "benchmark.md").read_text())


def write_report(records: list[dict], details: dict, out_dir: Path) -> None:
    m = details["machine"]
    lines = ["# SmolLM2-135M-Instruct: blockwise decoding vs Hugging Face generate (CPU)", "",
             f"Commit {details['commit']}, {details['minutes']} min, {m['cpus']} cores, {m['threads']} threads, "
             f"torch {m['torch']}, native bf16: {m['cpu_has_bf16']}. Load average at the end: "
             f"{', '.join(f'{x:.2f}' for x in details['load_average_at_end'])}. Medians of "
             f"{details['args']['repeats']} repeats, methods interleaved; CPU kernels: {m['isa']}. `speedup`: over HF "
             "greedy in float32, same batch; `same dtype`: over HF greedy in the row's dtype; `vs greedy`: over our "
             "greedy in the row's dtype. `identical` / `= our greedy`: outputs equal to HF's / our greedy's in the "
             "row's dtype (of `prompts`). k = auto: chosen per step (counts below).", "",
             "| method | dtype | k | batch | tokens/s | speedup | same dtype | vs greedy | mean accepted | identical "
             "| = our greedy | prompts |", "|---" * 12 + "|"]
    fmt = lambda v: "–" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))  # noqa: E731
    for r in records:
        cells = [fmt(r[f]) for f in ("method", "dtype", "k", "batch", "tokens_per_s", "speedup", "speedup_same_dtype",
                                     "speedup_vs_greedy", "mean_accepted", "identical", "same_as_greedy", "n")]
        cells[2] = "auto" if r["policy"] == "auto" and r["tree"] == "chain" else cells[2]
        if r["tree"] == "dynamic":
            cells[0] = f"blockwise, dynamic tree of {r['nodes'] or 'auto'} nodes"
        lines.append("| " + " | ".join(cells) + " |")
    if details.get("k_chosen"):
        lines += ["", "k = auto, iterations at each k (trees: at each node budget):", ""]
        lines += [f"- {run}: " + (format_k_chosen(c).replace("k=", "nodes=") if "tree" in run else format_k_chosen(c))
                  for run, c in details["k_chosen"].items()]
    lines += ["", "Step cost (one call feeding T tokens and scoring them, batch 1, relative to T = 1):", "",
              "| model | " + " | ".join(f"T={t}" for t in range(1, 7)) + " | T=1 ms |", "|---" * 8 + "|"]
    for name in [k[len("step_cost_"):] for k in details if k.startswith("step_cost_")]:
        sc = details[f"step_cost_{name}"]
        lines.append(f"| {name} | " + " | ".join(str(sc[f"T{t}"]) for t in range(1, 7)) + f" | {sc['T1_ms']} |")
    if details["notes"]:
        lines += ["", "Notes:"] + [f"- {n}" for n in details["notes"]]
    (out_dir / "benchmark.md").write_text("\n".join(lines) + "\n")
    plt = pyplot()
    if plt is None:
        return
    batches = sorted({r["batch"] for r in records})
    fig, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 4.5), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        rows = [r for r in records if r["batch"] == batch and r["tokens_per_s"] is not None]
        labels = [r["method"] + (f" tree {r['nodes'] or 'auto'}" if r["tree"] == "dynamic" else " k=auto"
                                 if r["policy"] == "auto" else f" k={r['k']}" if r["k"] else "")
                  + (" bf16" if r["dtype"] == "bfloat16" else " fp32") for r in rows]
        colors = [("#bbb" if r["dtype"] == "float32" else "#777") if r["method"].startswith("hf") else
                  ("#7ad" if r["dtype"] == "float32" else "#15a") for r in rows]
        ax.barh(labels, [r["tokens_per_s"] for r in rows], color=colors)
        ax.invert_yaxis()
        ax.set_title(f"batch {batch}: tokens/s (grey: Hugging Face, blue: ours)")
    fig.tight_layout()
    fig.savefig(out_dir / "tokens_per_s.png", dpi=120)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for batch in batches:
        for dt, style in (("float32", "--"), ("bfloat16", "-")):
            rows = [r for r in records if r["batch"] == batch and r["method"] == "blockwise" and r["dtype"] == dt
                    and r["speedup_vs_greedy"] is not None and r["tree"] == "chain"]
            fixed = [r for r in rows if r["policy"] == "fixed"]
            if fixed:
                line, = ax.plot([r["k"] for r in fixed], [r["speedup_vs_greedy"] for r in fixed], "s" + style,
                                label=f"over our greedy, {dt}, batch {batch}")
                for r in rows:
                    if r["policy"] == "auto":
                        ax.axhline(r["speedup_vs_greedy"], color=line.get_color(), ls=style, lw=0.8, alpha=0.7,
                                   label=f"k = auto, {dt}, batch {batch}")
    rows = [r for r in records if r["method"] == "blockwise" and r["batch"] == batches[0] and r["policy"] == "fixed"
            and r["dtype"] == records[0]["dtype"] and r["tree"] == "chain"]  # k̂ is the same in every dtype (exact decoding)
    ax.plot([r["k"] for r in rows], [r["mean_accepted"] for r in rows], "ko:", label=f"mean accepted, batch {batches[0]}")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("k")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "accepted_and_speedup.png", dpi=120)


if __name__ == "__main__":
    main()
