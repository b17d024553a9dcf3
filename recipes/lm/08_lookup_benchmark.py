"""Lookup drafts (decoding/lookup.py) on SmolLM2-135M-Instruct, in one run on the benchmark prompts: Hugging Face
greedy ``generate`` and its prompt-lookup decoding (batch 1: HF refuses it for batches), our greedy, and our blockwise
decoding with the shipped chained heads at each ``--methods`` entry, without and with a copied chain of
``--lookup`` tokens grafted onto every call's block or tree. Greedy (exact): every output is compared with our
greedy's and with HF's.

Methods alternate on every prompt group; tokens/s is the median over repeats, a speedup the median of the repeats'
paired ratios (``eval.timing``). Writes {out}/{summary.json, details.json, benchmark.md, tokens_per_s.png} and puts its
rows into results/lm/summary.json (run "lookup", replacing that run's rows of the same cpu and weights). Nothing else
may run meanwhile.

    python recipes/lm/08_lookup_benchmark.py --weights bfloat16 --threads 1 --out results/lm/lookup/avx512_bf16
    python recipes/lm/08_lookup_benchmark.py --n1 1 --n8 8 --max-new 8 --repeats 1 --out /tmp/l --no-merge  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from blockwise import blockwise, greedy  # before torch: importing blockwise sets OMP_WAIT_POLICY
from blockwise.decoding.common import DecodeStats
from blockwise.decoding.lookup import Lookup
from blockwise.decoding.policy import auto_policy
from blockwise.eval.records import format_k_chosen, merge_rows, method_spec, pyplot, spec_fields
from blockwise.eval.reference import hf_generate
from blockwise.eval.timing import cpu_label, git_commit, interleaved, paired_ratio, rates
from blockwise.tasks.hf import load_smollm2
from blockwise.tasks.lm.heads_io import ASSET, load_heads
from blockwise.tasks.lm.prompts import chat_ids
from blockwise.tasks.llama import Llama, NativeLM

import torch

HERE = Path(__file__).resolve().parent


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", default=str(HERE / "prompts.json"))
    ap.add_argument("--out", default="results/lm/lookup")
    ap.add_argument("--max-new", type=int, default=128)
    ap.add_argument("--methods", default="3,auto,tree8", help="block sizes, auto, and dynamic trees treeN/treeautoN")
    ap.add_argument("--lookup", type=int, default=6, help="tokens copied per call")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--weights", default="bfloat16", choices=["float32", "bfloat16", "int8", "int4"])
    ap.add_argument("--n1", type=int, default=16, help="prompts at batch 1")
    ap.add_argument("--n8", type=int, default=16, help="prompts at batch 8")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-merge", action="store_true", help="do not put the rows into results/lm/summary.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()

    tokenizer, hf = load_smollm2()
    act = torch.bfloat16 if args.weights == "bfloat16" else torch.float32  # quantized weights: float32 activations
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    base = Llama.from_hf(hf).with_weights(args.weights)
    hf = hf.to(act)
    heads, vocab = load_heads(ASSET)
    lm = NativeLM(base, heads.to(act), proposal_vocab=vocab)
    texts = json.loads(Path(args.prompts).read_text())
    all_ids = [chat_ids(tokenizer, p["text"]) for p in texts]
    all_ids = [all_ids[i % len(all_ids)] for i in range(max(len(all_ids), args.n1, args.n8))]
    copies = Lookup(tokens=args.lookup)

    def ours(spec, lookup):
        k, tree = method_spec(spec, lm.num_heads)
        return lambda P: blockwise(lm, P, args.max_new, k=k, eos_id=eos, tree=tree, lookup=lookup)

    # (method, drafter, spec, run(prompts) -> DecodeOutput or (rows, None), batch 1 only)
    methods = [("hf_greedy", None, None, lambda P: (hf_generate(hf, P, args.max_new, eos, pad), None), False),
               ("hf_lookup", "prompt lookup", None,
                lambda P: (hf_generate(hf, P, args.max_new, eos, pad, lookup=args.lookup), None), True),
               ("greedy", None, None, lambda P: greedy(lm, P, args.max_new, eos_id=eos), False)]
    for spec in args.methods.split(","):
        tree = method_spec(spec, lm.num_heads)[1] is not None
        for lookup in (None, copies):
            methods.append(("tree" if tree else "blockwise", "chain" if lookup is None else "chain+lookup", spec,
                            ours(spec, lookup), False))
    cpu = cpu_label()
    records, details = [], {"runs": {}, "k_chosen": {}}
    for batch in [int(b) for b in args.batches.split(",")]:
        n = args.n1 if batch == 1 else args.n8
        groups = [all_ids[i: i + batch] for i in range(0, n, batch)]
        chosen = [i for i, m in enumerate(methods) if batch == 1 or not m[4]]
        for spec in args.methods.split(","):  # k = auto's costs, measured once, before anything is timed
            k, tree = method_spec(spec, lm.num_heads)
            if k == "auto":
                auto_policy(lm, groups[0], None, args.max_new, tree=tree).costs.prepare(batch)
        for i in chosen:  # warm-up, untimed
            methods[i][3](groups[0][:1] if batch == 1 else groups[0])
        times, outputs, stats, counts = interleaved({i: (lambda run: lambda group, r, g: run(group))(methods[i][3])
                                             for i in chosen}, groups, args.repeats, f"batch {batch}")
        rate = rates(times, counts)  # tokens/s per repeat
        tps = {i: statistics.median(rate[i]) for i in rate}
        for i in chosen:
            method, drafter, spec, _, _ = methods[i]
            fields = spec_fields(*method_spec(spec, lm.num_heads)) if spec else \
                {"k": 1, "nodes": 1, "tree": "chain", "policy": "fixed"}
            rec = {"method": method, "drafter": drafter, "dtype": args.weights, "spec": spec, **fields,
                   "lookup": args.lookup if drafter in ("chain+lookup", "prompt lookup") else None, "batch": batch,
                   "temperature": 0.0, "tokens_per_s": round(tps[i], 2),
                   "speedup": round(paired_ratio(rate[i], rate[0]), 3),
                   "speedup_vs_greedy": round(paired_ratio(rate[i], rate[2]), 3), "mean_accepted": None,
                   "identical": sum(a == b for a, b in zip(outputs[i], outputs[0])),
                   "same_as_greedy": sum(a == b for a, b in zip(outputs[i], outputs[2])), "n": n, "cpu": cpu,
                   "threads": args.threads}
            if method == "hf_greedy":
                rec.update(k=None, nodes=1, identical=None)
            if method == "hf_lookup":
                rec.update(k=None, nodes=None, tree="chain", policy="fixed")
            st = [s for s in stats[i] if s is not None]
            if st:
                total = DecodeStats()
                for s in st:
                    total.merge(s)
                rec["mean_accepted"] = round(total.mean_accepted, 3)
                if fields["policy"] == "auto":
                    details["k_chosen"][f"{drafter} {spec} b{batch}"] = format_k_chosen(total.k_chosen)
            details["runs"][f"{method} {drafter} {spec} b{batch}"] = {
                "seconds": [round(t, 3) for t in times[i]], "tokens": counts[i]}
            records.append(rec)
    details.update(commit=git_commit(), minutes=round((time.time() - started) / 60, 1), args=vars(args), cpu=cpu,
                   torch=torch.__version__, load_average_at_end=os.getloadavg())
    records = [r | {"run": f"lookup {args.weights}"} for r in records]
    (out_dir / "summary.json").write_text(json.dumps(records, indent=1) + "\n")
    (out_dir / "details.json").write_text(json.dumps(details, indent=1, default=str) + "\n")
    if not args.no_merge:
        merge_rows("results/lm/summary.json", records, f"lookup {args.weights}", cpu)
    write_report(records, details, out_dir)
    print((out_dir / "benchmark.md").read_text())


def write_report(records: list[dict], details: dict, out_dir: Path) -> None:
    r0 = records[0]
    lines = [f"# Lookup drafts on SmolLM2-135M-Instruct ({r0['dtype']} weights, {r0['threads']} thread(s), cpu "
             f"{r0['cpu']}, commit {details['commit']}, {details['minutes']} min)", "",
             "Greedy (exact) decoding of the benchmark prompts, the shipped chained heads; `+ lookup`: every call also "
             f"verifies up to {details['args']['lookup']} tokens copied from the text so far. tokens/s: median over "
             "repeats; speedups in the same run. `same as greedy`: outputs equal to our greedy's, out of n.", "",
             "| batch | method | k or tree | tokens/s | tokens/call | vs our greedy | vs HF greedy | same as greedy |",
             "|---|---|---|---|---|---|---|---|"]
    for r in records:
        what = {"hf_greedy": "HF greedy", "hf_lookup": "HF prompt lookup", "greedy": "our greedy"}.get(
            r["method"], "heads" if r["drafter"] == "chain" else "heads + lookup")
        k = r["spec"] or "—"
        acc = "—" if r["mean_accepted"] is None else f"{r['mean_accepted']:.2f}"
        lines.append(f"| {r['batch']} | {what} | {k} | {r['tokens_per_s']:.1f} | {acc} | {r['speedup_vs_greedy']:.2f} "
                     f"| {r['speedup']:.2f} | {r['same_as_greedy']}/{r['n']} |")
    if details["k_chosen"]:
        lines += ["", "k = auto chose: " + "; ".join(f"{key}: {v}" for key, v in details["k_chosen"].items())]
    (out_dir / "benchmark.md").write_text("\n".join(lines) + "\n")
    plt = pyplot()
    if plt is None:
        return
    batches = sorted({r["batch"] for r in records})
    fig, axes = plt.subplots(1, len(batches), figsize=(11, 4), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        rows = [r for r in records if r["batch"] == batch]
        labels = [{"hf_greedy": "HF greedy", "hf_lookup": "HF lookup", "greedy": "greedy"}.get(
            r["method"], f"{r['spec']}{' +L' if r['drafter'] == 'chain+lookup' else ''}") for r in rows]
        colours = ["lightgrey" if r["method"].startswith("hf") else "grey" if r["method"] == "greedy" else
                   "tab:blue" if r["drafter"] == "chain" else "tab:orange" for r in rows]
        ax.bar(range(len(rows)), [r["tokens_per_s"] for r in rows], color=colours)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"batch {batch}")
        ax.set_ylabel("tokens/s")
    fig.suptitle(f"SmolLM2 greedy: heads alone (blue) vs heads + lookup (orange), {r0['dtype']}, cpu {r0['cpu']}")
    fig.tight_layout()
    fig.savefig(out_dir / "tokens_per_s.png", dpi=120)


if __name__ == "__main__":
    main()
