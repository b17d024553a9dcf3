"""k = auto against greedy and fixed k on the translation test sentences, in one run (issue 16).

The shipped English-German model (src/blockwise/assets/mt_both.safetensors; or --model, optionally with another
model's heads, --heads: e.g. the frozen-base Distillation regime's, issue 17), exact acceptance, the first ``--n`` test
sentences, batch sizes ``--batches``; methods interleaved within each repeat, medians of ``--repeats``. Speedup is
over our greedy decoding in the same run, batch and dtype (the median of the repeats' paired ratios); ``identical`` counts outputs equal to greedy's. The cost
measurement of k = auto happens in the warm-up (once per machine; cached) and is never timed.

Writes ``results/mt/policy/<cpu tag>/`` (summary.json, table.md) and puts the same rows into results/mt/summary.json
(replacing this recipe's earlier rows for that CPU), with the fields ../shared/tools/check-results names.

    python recipes/mt/05_policy.py --test data/mt/test.en --n 200
    ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2 python recipes/mt/05_policy.py ...
    python recipes/mt/05_policy.py --model models/mt/baseline.safetensors --heads \
        models/mt_self/distillation.heads.safetensors --regime distillation --ks 6,tree16,tree64x8 --run trees-frozen
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from blockwise.decoding.policy import auto_policy  # before torch: importing blockwise sets OMP_WAIT_POLICY
from blockwise.cli import UserError
from blockwise.cli_translate import find_spm
from blockwise.eval.records import cpu_folder, format_k_chosen, merge_rows, method_spec, spec_fields
from blockwise.eval.timing import cpu_label, git_commit, paired_ratio
from blockwise.model import BlockwiseModel
from blockwise.model.blockwise_model import join_heads
from blockwise.tasks.translation import BOS, EOS, Corpus, bleu, translate

import torch

ASSETS = Path(__file__).resolve().parents[2] / "src" / "blockwise" / "assets"
RUN = "05_policy"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--test", default="data/mt/test.en", help="English test sentences (the .de beside it: BLEU)")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--ks", default="2,4,8,10,auto", help="methods: block sizes, auto, treeN (a dynamic tree of N "
                    "nodes; treeNxT: T guesses per expanded node, default 4), treeautoN (its node budget chosen per "
                    "step, up to N)")
    ap.add_argument("--model", default=str(ASSETS / "mt_both.safetensors"),
                    help="translation checkpoint (default: the shipped Both model); its sentencepiece model beside it, "
                         "else the shipped one")
    ap.add_argument("--heads", default=None, help="a heads-only file (recipes/mt/03_heads.py) put onto --model's base "
                    "instead of its heads: e.g. --model models/mt/baseline.safetensors --heads "
                    "models/mt_self/distillation.heads.safetensors (the frozen-base Distillation regime)")
    ap.add_argument("--regime", default="both (shipped)", help="the regime named in the rows")
    ap.add_argument("--run", default=RUN, help="the tag of this run's rows in results/mt/summary.json")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--out", default="results/mt/policy")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
    model_path = Path(args.model)
    if args.heads:  # the base's weights with these heads, as one checkpoint (join_heads: the heads' metadata)
        joined = Path(tempfile.mkdtemp()) / "model.safetensors"
        join_heads(model_path, args.heads, joined)
        model_path = joined
    model = BlockwiseModel.load(model_path, dtype=getattr(torch, args.dtype))
    try:  # the sentencepiece model beside --model, as `blockwise translate` finds it; a base checkpoint may have none
        spm = find_spm(Path(args.model))
    except UserError:
        spm = ASSETS / "mt_both.spm.model"
    corpus = Corpus.from_spm(spm)
    test = Path(args.test)
    sentences = test.read_text(encoding="utf-8").splitlines()[: args.n]
    refs_path = test.with_suffix(".de")
    refs = refs_path.read_text(encoding="utf-8").splitlines()[: args.n] if refs_path.exists() else None
    methods = [("greedy", "1")] + [("blockwise", k) for k in args.ks.split(",")]
    specs = {spec: method_spec(spec, model.num_heads) for _, spec in methods}
    cpu = cpu_label()
    records, chosen = [], {}
    for batch in map(int, args.batches.split(",")):
        for method, spec in methods:  # warm-up; k = auto measures this machine's costs here, once per batch bucket
            k, tree = specs[spec]
            if k == "auto":
                src = [s + [EOS] for s in corpus.encode(sentences[:batch])]
                policy = auto_policy(model, [[BOS]] * len(src), src, 64, tree=tree)
                policy.costs.prepare(batch)
            translate(model, corpus, sentences[:batch], method, k=k, batch_size=batch, tree=tree)
        times, outs = {m: [] for m in methods}, {}
        for r in range(args.repeats):
            # the order rotates every repeat: a method run right after a heavy one (k = 10) ran ~8% slower here (batch
            # 8: auto 0.87x greedy with k = 10 before it in the run, 0.96x without), so no method may keep one
            # neighbour; speedups pair each repeat's times
            for m in methods[r % len(methods):] + methods[:r % len(methods)]:
                k, tree = specs[m[1]]
                out = translate(model, corpus, sentences, m[0], k=k, batch_size=batch, tree=tree)
                times[m].append(out.seconds)
                outs[m] = out
        for (method, spec), out in outs.items():
            k, tree = specs[spec]
            auto = k == "auto"
            s = statistics.median(times[(method, spec)])
            # a speedup is the median of the repeats' paired ratios (the same outputs every repeat: seconds compare)
            speedup = paired_ratio([1 / x for x in times[(method, spec)]], [1 / x for x in times[("greedy", "1")]])
            if auto:
                chosen[f"batch {batch}" + (" (tree nodes)" if tree else "")] = out.stats.k_chosen
            records.append({"regime": args.regime, "spec": spec, "accept": "exact", "batch": batch,
                            "bleu": bleu(out.hypotheses, refs) if refs else None,
                            "mean_accepted": round(out.stats.mean_accepted, 3), "speedup": round(speedup, 3),
                            "speedup_vs_greedy": round(speedup, 3),
                            "identical": sum(a == b for a, b in zip(out.token_ids, outs[("greedy", "1")].token_ids)),
                            "n": len(sentences), "decoder": method, "dtype": args.dtype, **spec_fields(k, tree),
                            "cpu": cpu, "seconds": round(s, 3), "run": args.run})
            print(f"batch {batch} {method} {spec}: {s:.2f} s, {speedup:.2f}x greedy, "
                  f"k̂ {out.stats.mean_accepted:.2f}" + (f", chosen {out.stats.k_chosen}" if auto else ""), flush=True)
    out_dir = cpu_folder(args.out, cpu)
    meta = {"commit": git_commit(), "minutes": round((time.time() - started) / 60, 1), "cpu": cpu,
            "threads": args.threads, "args": vars(args), "k_chosen": chosen}
    (out_dir / "summary.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1) + "\n")
    lines = [f"# Translation: blockwise (blocks, trees, auto) vs greedy ({cpu}, {args.dtype}, run {args.run})", "",
             f"Model: {args.model}" + (f" with the heads of {args.heads}" if args.heads else "") +
             f" ({args.regime}).", "",
             f"Commit {meta['commit']}, {meta['minutes']} min, {args.threads} thread(s), the first {len(sentences)} "
             f"test sentences, medians of {args.repeats} interleaved repeats. `vs greedy`: the median over repeats of "
             "our greedy's time / this method's in the same repeat (same run and batch).", "",
             "| batch | method | k | tree | nodes | seconds | vs greedy | tokens per call | identical | BLEU |",
             "|---" * 10 + "|"]
    for r in records:
        bl = "–" if r["bleu"] is None else f"{r['bleu']:.2f}"
        k = "auto" if r["policy"] == "auto" and r["tree"] == "chain" else r["k"] or "–"
        nodes = "auto" if r["policy"] == "auto" and r["tree"] != "chain" else r["nodes"]
        lines.append(f"| {r['batch']} | {r['decoder']} {r['spec'] if r['tree'] != 'chain' else ''} | {k} | {r['tree']} | {nodes} | {r['seconds']:.2f} | {r['speedup_vs_greedy']:.2f} | "
                     f"{r['mean_accepted']:.2f} | {r['identical']}/{r['n']} | {bl} |")
    lines += ["", "k = auto, iterations at each k: " + "; ".join(
        f"{b}: " + format_k_chosen(c) for b, c in chosen.items())]
    (out_dir / "table.md").write_text("\n".join(lines) + "\n")
    if Path("results/mt/summary.json").exists():
        merge_rows("results/mt/summary.json", records, args.run, cpu)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
