"""The feature-level drafter against the shipped chained heads, in one run on the benchmark prompts (issue 18):
Hugging Face greedy ``generate`` (the speedup baseline), our greedy, and blockwise decoding with each drafter at
k = 3, 4 and k = auto and with a dynamic 16-node tree (each optionally with lookup drafts, "auto+L6"), batch 1 and 8,
greedy (exact: every output is compared with our greedy's). Also the drafter's own cost: the time of one draft of
k - 1 tokens (catch-up included) against one verification call.

Methods alternate on every prompt group; tokens/s is the median over repeats, a speedup the median of the repeats'
paired ratios (``eval.timing``). Writes results/lm/drafter/{summary.json, details.json, benchmark.md, tokens_per_s.png}
and puts its rows into results/lm/summary.json (run "drafter" or --run, replacing that run's rows of the same cpu).
Nothing else may run meanwhile.

    python recipes/lm/07_drafter_benchmark.py --drafter runs/lm/drafter/heads.safetensors   # default: the shipped one
    python recipes/lm/07_drafter_benchmark.py --n1 1 --n8 8 --max-new 8 --repeats 1 --out /tmp/d --no-merge  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from blockwise import blockwise, greedy  # before torch: importing blockwise sets OMP_WAIT_POLICY
from blockwise.decoding.common import DecodeStats, prefill
from blockwise.decoding.policy import auto_policy
from blockwise.eval.records import format_k_chosen, lookup_spec, merge_rows, method_spec, pyplot, spec_fields
from blockwise.eval.reference import hf_generate
from blockwise.eval.timing import cpu_label, git_commit, interleaved, paired_ratio, rates
from blockwise.tasks.hf import load_smollm2
from blockwise.tasks.llama import Llama, NativeLM
from blockwise.tasks.lm.heads_io import ASSET, heads_file, load_heads
from blockwise.tasks.lm.prompts import chat_ids

import torch

HERE = Path(__file__).resolve().parent


def drafter_cost(lm, prompt: list[int], k: int, repeats: int = 20) -> dict:
    """ms of one verification call feeding k tokens, and of one draft of k - 1 tokens after it (batch 1)."""
    session, hidden = prefill(lm, [prompt], len(prompt) + 4 * repeats * k + 16, None)
    given = session.scores(hidden).argmax(-1)
    drafts = session.proposals(hidden, given, k)
    call, draft = [], []
    for _ in range(repeats):
        block = torch.cat([given[:, None], drafts.argmax(-1)], 1)
        start = session.lengths.clone()
        t = time.perf_counter()
        hidden = session.feed(block)
        scores = session.scores(hidden)
        call.append(time.perf_counter() - t)
        session.truncate(start + 2)  # as if two tokens were accepted
        given = scores[:, 1].argmax(-1)
        hidden = hidden[:, 1]
        t = time.perf_counter()
        drafts = session.proposals(hidden, given, k)
        draft.append(time.perf_counter() - t)
    call_ms, draft_ms = 1000 * statistics.median(call), 1000 * statistics.median(draft)
    return {"k": k, "call_ms": round(call_ms, 2), "draft_ms": round(draft_ms, 2),
            "draft_share": round(draft_ms / (call_ms + draft_ms), 3)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", default=str(HERE / "prompts.json"))
    ap.add_argument("--drafter", default="drafter", help="the feature-level drafter's file (default: the shipped one)")
    ap.add_argument("--heads", default=str(ASSET), help="the heads to compare with (default: the shipped ones)")
    ap.add_argument("--out", default="results/lm/drafter")
    ap.add_argument("--max-new", type=int, default=96)
    ap.add_argument("--methods", default="3,4,auto,tree16", help="block sizes, auto, and dynamic trees treeN; a "
                    "suffix +LN adds a lookup draft of N copied tokens per call (auto+L6)")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--n1", type=int, default=8, help="prompts at batch 1")
    ap.add_argument("--n8", type=int, default=16, help="prompts at batch 8")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-merge", action="store_true", help="do not put the rows into results/lm/summary.json")
    ap.add_argument("--run", default="drafter", help="the rows' run name in results/lm/summary.json (a merge replaces "
                    "that run's rows of the same cpu)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()

    tokenizer, hf = load_smollm2()
    dt = getattr(torch, args.dtype)
    hf = hf.to(dt)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    base = Llama.from_hf(hf).cast(dt)
    models = {}
    for path in (args.heads, args.drafter):
        heads, vocab = load_heads(path)
        models[f"{heads.cfg.kind}: {heads_file(path).name}"] = NativeLM(base, heads.to(dt), proposal_vocab=vocab)
    plain = next(iter(models.values()))
    texts = json.loads(Path(args.prompts).read_text())
    all_ids = [chat_ids(tokenizer, p["text"]) for p in texts]

    methods = [("hf_greedy", None, None, lambda P: (hf_generate(hf, P, args.max_new, eos, pad), None)),
               ("greedy", None, None, lambda P: greedy(plain, P, args.max_new, eos_id=eos))]
    for name, lm in models.items():
        for spec in args.methods.split(","):
            base_spec, lookup = lookup_spec(spec)  # "auto+L6": with a copied chain of 6 tokens per call
            k, tree = method_spec(base_spec, lm.num_heads)
            methods.append(("tree" if tree is not None else "blockwise", name, spec,
                            (lambda lm, k, tree, lookup: lambda P: blockwise(
                                lm, P, args.max_new, k=k, eos_id=eos, tree=tree, lookup=lookup))(lm, k, tree, lookup)))
    cpu = cpu_label()
    records, details = [], {"runs": {}, "k_chosen": {}, "drafter_cost": {}}
    for name, lm in models.items():
        details["drafter_cost"][name] = [drafter_cost(lm, all_ids[0], k) for k in (3, 4, 5)]
    for batch in [int(b) for b in args.batches.split(",")]:
        n = args.n1 if batch == 1 else args.n8
        groups = [all_ids[i: i + batch] for i in range(0, n, batch)]
        for lm in models.values():
            auto_policy(lm, groups[0], None, args.max_new).costs.prepare(batch)  # k = auto's costs, measured once
        for m in methods:  # warm-up, untimed
            m[3](groups[0][:1] if batch == 1 else groups[0])
        times, outputs, stats, counts = interleaved({i: (lambda run: lambda group, r, g: run(group))(m[3])
                                             for i, m in enumerate(methods)}, groups, args.repeats, f"batch {batch}")
        rate = rates(times, counts)  # tokens/s per repeat
        tps = {i: statistics.median(rate[i]) for i in rate}
        for i, (method, drafter, spec, _) in enumerate(methods):
            fields = spec_fields(*method_spec(lookup_spec(spec)[0], models[drafter].num_heads)) if spec else \
                {"k": 1, "nodes": 1, "tree": "chain", "policy": "fixed"}
            fields["lookup"] = lookup_spec(spec)[1].tokens if spec and lookup_spec(spec)[1] else None
            auto = fields["policy"] == "auto"
            rec = {"method": method, "drafter": drafter, "dtype": args.dtype, "spec": spec, **fields, "batch": batch,
                   "temperature": 0.0, "tokens_per_s": round(tps[i], 2),
                   "speedup": round(paired_ratio(rate[i], rate[0]), 3),
                   "speedup_vs_greedy": round(paired_ratio(rate[i], rate[1]), 3), "mean_accepted": None,
                   "identical": sum(a == b for a, b in zip(outputs[i], outputs[0])),
                   "same_as_greedy": sum(a == b for a, b in zip(outputs[i], outputs[1])), "n": n, "cpu": cpu,
                   "threads": args.threads}
            if method == "hf_greedy":
                rec.update(k=None, nodes=1, identical=None)
            st = [s for s in stats[i] if s is not None]
            if st and method in ("blockwise", "tree"):
                total = DecodeStats()
                for s in st:
                    total.merge(s)
                rec["mean_accepted"] = round(total.mean_accepted, 3)
                if auto:
                    details["k_chosen"][f"{drafter} {spec} b{batch}"] = format_k_chosen(total.k_chosen)
            details["runs"][f"{method} {drafter} {spec} b{batch}"] = {
                "seconds": [round(t, 3) for t in times[i]], "tokens": counts[i]}
            records.append(rec)
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
    r0 = records[0]
    lines = [f"# Feature-level drafter vs chained heads on SmolLM2-135M-Instruct ({r0['dtype']}, {r0['threads']} "
             f"threads, cpu {r0['cpu']}, commit {details['commit']}, {details['minutes']} min)", "",
             "Greedy (exact) decoding of the benchmark prompts. tokens/s: median over repeats; speedups in the same "
             "run. `same as greedy`: outputs equal to our greedy's, out of n.", "",
             "| batch | drafter | k or tree | tokens/s | tokens/call | vs our greedy | vs HF greedy | same as greedy |",
             "|---|---|---|---|---|---|---|---|"]
    for r in records:
        k = r["spec"] or ("—" if r["k"] is None else r["k"])
        acc = "—" if r["mean_accepted"] is None else f"{r['mean_accepted']:.2f}"
        lines.append(f"| {r['batch']} | {r['drafter'] or r['method']} | {k} | {r['tokens_per_s']:.1f} | {acc} "
                     f"| {r['speedup_vs_greedy']:.2f} | {r['speedup']:.2f} | {r['same_as_greedy']}/{r['n']} |")
    lines += ["", "A draft's cost (batch 1, one draft of k - 1 tokens after a verification call of k tokens):", "",
              "| drafter | k | call ms | draft ms | draft's share of a step |", "|---|---|---|---|---|"]
    for name, rows in details["drafter_cost"].items():
        for c in rows:
            lines.append(f"| {name} | {c['k']} | {c['call_ms']} | {c['draft_ms']} | {c['draft_share']:.1%} |")
    if details["k_chosen"]:
        lines += ["", "k = auto (block sizes) and treeautoN (node budgets) chose: " +
                  "; ".join(f"{key}: {v}" for key, v in details["k_chosen"].items())]
    (out_dir / "benchmark.md").write_text("\n".join(lines) + "\n")
    plt = pyplot()
    if plt is None:
        return
    batches = sorted({r["batch"] for r in records})
    fig, axes = plt.subplots(1, len(batches), figsize=(11, 4), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        rows = [r for r in records if r["batch"] == batch]
        labels = [f"{(r['drafter'] or r['method']).split(':')[0]} {r['spec'] or ''}".strip() for r in rows]
        ax.bar(range(len(rows)), [r["tokens_per_s"] for r in rows],
               color=["grey" if r["drafter"] is None else "tab:blue" if r["drafter"].startswith("chain")
                      else "tab:orange" for r in rows])
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"batch {batch}")
        ax.set_ylabel("tokens/s")
    fig.suptitle(f"SmolLM2 greedy: chained heads (blue) vs feature drafter (orange), {r0['dtype']}, cpu {r0['cpu']}")
    fig.tight_layout()
    fig.savefig(out_dir / "tokens_per_s.png", dpi=120)


if __name__ == "__main__":
    main()
