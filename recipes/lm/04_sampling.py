"""Sampling on SmolLM2-135M-Instruct, in one run on the benchmark prompts: Hugging Face's sampling ``generate`` (and
its prompt-lookup sampling, batch 1 only), our plain sampling, and our speculative sampling (blocks of k = 3, k = auto,
a dynamic 16-node tree; Medusa's lossy typical acceptance for reference), at temperatures 0.7 and 1.0 (no top-k/top-p
cut), batch 1 and 8; greedy rows (ours and HF's) as the baselines the summary's speedup fields are defined against.

Methods alternate on every prompt group (``eval.timing.interleaved``). Sampled outputs are not compared token by token
(another draw is another sequence); their exactness is the statistical tests' business (tests/test_sampling.py). Another
draw also has another length, so a rate is each repeat's tokens over its own seconds; tokens/s is the median over
repeats, a speedup the median of the repeats' paired ratios (``eval.timing.paired_ratio``). Writes
results/lm/sampling/{summary.json, details.json, benchmark.md, tokens_per_s.png} and puts its rows into
results/lm/summary.json (run "sampling", or --run; replacing that run's rows of the same cpu). Nothing else may run
meanwhile (2 cores).

    python recipes/lm/04_sampling.py                 # ~25 minutes on a 2-core CPU
    python recipes/lm/04_sampling.py --n1 1 --n8 8 --max-new 8 --repeats 1 --out /tmp/sampling --no-merge   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from blockwise import Sampling, blockwise, greedy, sample  # before torch: importing blockwise sets OMP_WAIT_POLICY
from blockwise.decoding.common import DecodeStats
from blockwise.decoding.policy import auto_policy
from blockwise.eval.records import format_k_chosen, merge_rows, method_spec, pyplot, spec_fields
from blockwise.eval.reference import hf_generate
from blockwise.eval.timing import cpu_label, git_commit, interleaved, paired_ratio, rates
from blockwise.tasks.hf import load_smollm2
from blockwise.tasks.llama import Llama, NativeLM
from blockwise.tasks.lm.heads_io import DEFAULT_HEADS, heads_file, load_heads
from blockwise.tasks.lm.prompts import chat_ids

import torch

HERE = Path(__file__).resolve().parent


def hf_sample(hf, prompts, max_new, eos, pad, temperature, seed, lookup=None):
    """HF ``generate(do_sample=True)`` at ``temperature`` (no top-k/top-p cut) on the left-padded batch."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    extra = {"prompt_lookup_num_tokens": lookup} if lookup else {}
    torch.manual_seed(seed)
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                          max_new_tokens=max_new, eos_token_id=eos, pad_token_id=pad, **extra)
    rows = out[:, width:].tolist()
    return [r[: r.index(eos) + 1] if eos in r else r for r in rows], None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", default=str(HERE / "prompts.json"))
    ap.add_argument("--heads", default=str(DEFAULT_HEADS),
                    help="heads file, or a shipped one by name: drafter (default), chain")
    ap.add_argument("--out", default="results/lm/sampling")
    ap.add_argument("--max-new", type=int, default=64)
    ap.add_argument("--temperatures", default="0.7,1.0")
    ap.add_argument("--methods", default="3,auto,tree16,typical3",
                    help="speculative sampling methods: k, auto, treeN, treeautoN, typicalK (Medusa's lossy rule)")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--n1", type=int, default=6, help="prompts at batch 1")
    ap.add_argument("--n8", type=int, default=16, help="prompts at batch 8")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--lookup", type=int, default=10, help="HF prompt-lookup sampling's tokens (0: skip it)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run", default="sampling", help="the run's name in results/lm/summary.json (rows of the same "
                    "run and cpu are replaced)")
    ap.add_argument("--no-merge", action="store_true", help="do not put the rows into results/lm/summary.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()

    tokenizer, hf = load_smollm2()
    dt = getattr(torch, args.dtype)
    hf = hf.to(dt)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    heads, vocab = load_heads(args.heads)
    lm = NativeLM(Llama.from_hf(hf).cast(dt), heads.to(dt), proposal_vocab=vocab)
    texts = json.loads(Path(args.prompts).read_text())
    all_ids = [chat_ids(tokenizer, p["text"]) for p in texts]
    temperatures = [float(t) for t in args.temperatures.split(",")]
    drafter = f"heads: {heads_file(args.heads).name} ({heads.cfg.kind}, num_heads={heads.num_heads})"

    def ours(spec, temperature):
        """(name, fields, run) of one of our methods; temperature 0: greedy (spec None) or nothing else."""
        if spec is None:
            if temperature == 0:
                return "greedy", {"k": 1, "nodes": 1, "tree": "chain", "policy": "fixed"}, \
                    lambda P, s: greedy(lm, P, args.max_new, eos_id=eos)
            return "sample", {"k": 1, "nodes": 1, "tree": "chain", "policy": "fixed"}, \
                lambda P, s: sample(lm, P, args.max_new, Sampling(temperature, seed=s), eos_id=eos)
        typical = 0.09 if spec.startswith("typical") else None  # Medusa's default threshold
        k, tree = method_spec(spec.removeprefix("typical"), lm.num_heads)
        name = "typical" if typical else "tree" if tree is not None else "blockwise"

        def run(P, s):
            return blockwise(lm, P, args.max_new, k=k, eos_id=eos, tree=tree,
                             sampling=Sampling(temperature, seed=s, typical=typical))
        return name, spec_fields(k, tree), run

    methods = []  # (name, temperature, fields, run(prompts, seed) -> DecodeOutput or (rows, None))
    methods.append(("hf_greedy", 0.0, {"k": None, "nodes": 1, "tree": "chain", "policy": "fixed"},
                    lambda P, s: (hf_generate(hf, P, args.max_new, eos, pad), None)))
    name, fields, run = ours(None, 0.0)
    methods.append((name, 0.0, fields, run))
    for T in temperatures:
        methods.append(("hf_sample", T, {"k": None, "nodes": 1, "tree": "chain", "policy": "fixed"},
                        (lambda T: lambda P, s: hf_sample(hf, P, args.max_new, eos, pad, T, s))(T)))
        if args.lookup:
            methods.append(("hf_prompt_lookup_sample", T, {"k": None, "nodes": None, "tree": "chain", "policy": None},
                            (lambda T: lambda P, s: hf_sample(hf, P, args.max_new, eos, pad, T, s, args.lookup))(T)))
        for spec in [None] + [m for m in args.methods.split(",") if m]:
            name, fields, run = ours(spec, T)
            methods.append((name, T, fields | {"spec": spec}, run))

    cpu = cpu_label()
    records, details = [], {"runs": {}, "notes": [], "k_chosen": {}}
    for batch in [int(b) for b in args.batches.split(",")]:
        n = args.n1 if batch == 1 else args.n8
        groups = [all_ids[i: i + batch] for i in range(0, n, batch)]
        for sampling in (None, Sampling(1.0)):  # k = auto's costs (greedy's and sampling's), measured once
            auto_policy(lm, groups[0], None, args.max_new, sampling=sampling).costs.prepare(batch)
        skip = set()
        for i, (name, T, fields, run) in enumerate(methods):  # warm-up, untimed
            try:
                run(groups[0][:1] if batch == 1 else groups[0], 0)
            except Exception as error:  # HF prompt lookup refuses batches of more than one row
                skip.add(i)
                details["notes"].append(f"{name} T={T} batch {batch}: {type(error).__name__}: {str(error)[:200]}")
        times, outputs, stats, counts = interleaved(
            {i: (lambda run: lambda group, r, g: run(group, args.seed + 1000 * r + g))(methods[i][3])
             for i in range(len(methods)) if i not in skip}, groups, args.repeats, f"batch {batch}")
        rate = rates(times, counts)  # tokens/s per repeat: sampled lengths differ between repeats
        tps = {i: statistics.median(rate[i]) for i in rate}
        index = {(m[0], m[1]): i for i, m in enumerate(methods)}
        for i, (name, T, fields, run) in enumerate(methods):
            rec = {"method": name, "drafter": drafter if name in ("blockwise", "tree", "typical") else
                   f"prompt lookup ({args.lookup} tokens)" if "lookup" in name else None,
                   "dtype": args.dtype, "k": fields["k"], "policy": fields["policy"], "nodes": fields["nodes"],
                   "tree": fields["tree"], "batch": batch, "temperature": T, "tokens_per_s": None, "speedup": None,
                   "speedup_vs_greedy": None, "speedup_vs_sample": None, "speedup_vs_hf_sample": None,
                   "mean_accepted": None, "identical": None, "same_as_greedy": None, "n": n, "cpu": cpu,
                   "threads": args.threads, "spec": fields.get("spec"), "lossy": name == "typical"}
            if i in tps:
                rel = {key: round(paired_ratio(rate[i], rate[index[ref]]), 3)
                       if ref in index and index[ref] in rate else None
                       for key, ref in (("speedup", ("hf_greedy", 0.0)), ("speedup_vs_greedy", ("greedy", 0.0)),
                                        ("speedup_vs_sample", ("sample", T)),
                                        ("speedup_vs_hf_sample", ("hf_sample", T)))}
                rec.update(tokens_per_s=round(tps[i], 2), **rel)
                if T == 0:
                    rec.update(speedup_vs_sample=None, speedup_vs_hf_sample=None)
                    rec["identical"] = None if name == "hf_greedy" else \
                        sum(a == b for a, b in zip(outputs[i], outputs[index[("hf_greedy", 0.0)]]))
                    rec["same_as_greedy"] = sum(a == b for a, b in zip(outputs[i], outputs[index[("greedy", 0.0)]]))
                st = [s for s in stats[i] if s is not None]
                if st:
                    rec["mean_accepted"] = round(sum(s.tokens for s in st) / sum(s.blocks for s in st), 3)
                    if fields["policy"] == "auto":
                        total = DecodeStats()
                        for s in st:
                            total.merge(s)
                        details["k_chosen"][f"{name}_T{T}_b{batch}"] = format_k_chosen(total.k_chosen)
                details["runs"][f"{name}_{fields.get('spec')}_T{T}_b{batch}"] = {
                    "seconds": [round(t, 3) for t in times[i]], "tokens": counts[i]}
            records.append(rec)
        if batch == 1:
            details["sample_outputs"] = {f"{m[0]} {m[2].get('spec') or ''} T={m[1]}": tokenizer.decode(outputs[i][0])
                                         for i, m in enumerate(methods) if i in outputs}
    details.update(commit=git_commit(), minutes=round((time.time() - started) / 60, 1), args=vars(args), cpu=cpu,
                   torch=torch.__version__, load_average_at_end=os.getloadavg())
    records = [r | {"run": args.run} for r in records]
    (out_dir / "summary.json").write_text(json.dumps(records, indent=1) + "\n")
    (out_dir / "details.json").write_text(json.dumps(details, indent=1, default=str) + "\n")
    if not args.no_merge:
        merge_rows("results/lm/summary.json", records, args.run, cpu)
    write_report(records, details, out_dir)
    print((out_dir / "benchmark.md").read_text())


def write_report(records: list[dict], details: dict, out_dir: Path) -> None:
    lines = [f"# Sampling on SmolLM2-135M-Instruct ({records[0]['dtype']}, {records[0]['threads']} threads, "
             f"cpu {records[0]['cpu']}, commit {details['commit']}, {details['minutes']} min)", "",
             "tokens/s: median over repeats. Speedups in the same run: vs our plain sampling at the same temperature, "
             "vs Hugging Face's sampling `generate`, vs our greedy. `typical` is Medusa's typical acceptance: faster "
             "but **not** the model's distribution.", "",
             "| batch | T | method | k | nodes | tokens/s | tokens/call | vs our sampling | vs HF sampling | "
             "vs our greedy |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        def f(x, fmt="{:.2f}"):
            return "—" if x is None else fmt.format(x)
        k = "auto" if r["policy"] == "auto" else f(r["k"], "{}")
        lines.append(f"| {r['batch']} | {r['temperature']:g} | {r['method']} | {k} | {f(r['nodes'], '{}')} "
                     f"| {f(r['tokens_per_s'], '{:.1f}')} | {f(r['mean_accepted'])} "
                     f"| {f(r['speedup_vs_sample'])} | {f(r['speedup_vs_hf_sample'])} | {f(r['speedup_vs_greedy'])} |")
    if details["k_chosen"]:
        lines += ["", "k = auto chose: " + "; ".join(f"{key}: {v}" for key, v in details["k_chosen"].items())]
    if details["notes"]:
        lines += ["", "Notes: " + "; ".join(details["notes"])]
    (out_dir / "benchmark.md").write_text("\n".join(lines) + "\n")
    plt = pyplot()
    if plt is None:
        return
    sampled = [r for r in records if r["temperature"] > 0 and r["tokens_per_s"] is not None]
    labels = list(dict.fromkeys((r["method"], r["spec"] or "") for r in sampled))
    fig, axes = plt.subplots(1, len({r["batch"] for r in sampled}), figsize=(11, 4), squeeze=False)
    for ax, batch in zip(axes[0], sorted({r["batch"] for r in sampled})):
        temps = sorted({r["temperature"] for r in sampled})
        width = 0.8 / max(len(temps), 1)
        for j, T in enumerate(temps):
            vals = [next((r["tokens_per_s"] for r in sampled if r["batch"] == batch and r["temperature"] == T and
                          (r["method"], r["spec"] or "") == m), 0) for m in labels]
            ax.bar([x + j * width for x in range(len(labels))], vals, width, label=f"T = {T:g}")
        ax.set_xticks([x + width * (len(temps) - 1) / 2 for x in range(len(labels))])
        ax.set_xticklabels([f"{m} {s}".strip() for m, s in labels], rotation=30, ha="right", fontsize=8)
        ax.set_title(f"batch {batch}")
        ax.set_ylabel("tokens/s")
        ax.legend()
    fig.suptitle(f"SmolLM2 sampling, {records[0]['dtype']}, cpu {records[0]['cpu']}")
    fig.tight_layout()
    fig.savefig(out_dir / "tokens_per_s.png", dpi=120)


if __name__ == "__main__":
    main()
