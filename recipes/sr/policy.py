"""k = auto against greedy and fixed k on super-resolution test images, in one run (issue 16).

The shipped ×4 model (src/blockwise/assets/sr_x4.safetensors, fine tuned: the Both regime with ε = 2, and exact), the
first ``--n`` Fashion-MNIST test images, batch sizes ``--batches``; methods interleaved within each repeat, medians of
``--repeats``. Speedup is over greedy decoding of the same model in the same run and batch. k = auto measures this
machine's costs in the warm-up (once; cached), never in a timed run.

Writes ``results/sr/policy/<cpu tag>/`` (summary.json, table.md) and puts the rows into results/sr/summary.json
(replacing this recipe's earlier rows for that CPU), with the fields ../shared/tools/check-results names.

    python recipes/sr/policy.py --n 8
    ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2 python recipes/sr/policy.py --n 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from blockwise import Acceptance  # before torch: importing blockwise sets OMP_WAIT_POLICY
from blockwise.decoding.policy import auto_policy
from blockwise.eval.records import cpu_folder, format_k_chosen, merge_rows, method_spec, spec_fields
from blockwise.eval.timing import cpu_label, git_commit
from blockwise.tasks import superres as sr

import torch

ASSET = Path(__file__).resolve().parents[2] / "src" / "blockwise" / "assets" / "sr_x4.safetensors"
RUN = "policy"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8, help="test images")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--ks", default="2,4,6,10,auto", help="methods: block sizes, auto, treeN (a dynamic tree of N "
                    "nodes), treeautoN (its node budget chosen per step, up to N)")
    ap.add_argument("--run", default=RUN, help="the tag of this run's rows in results/sr/summary.json")
    ap.add_argument("--eps", type=float, default=2.0, help="ε of the Both rows (0: exact rows only)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--out", default="results/sr/policy")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
    model, meta = sr.load_sr(ASSET, dtype=getattr(torch, args.dtype))
    factor, layout = meta["factor"], meta["source"]
    originals = sr.load_fashion_mnist().test[: args.n]
    lows = sr.downsample(originals, factor)
    rules = {"Fine tuning": Acceptance()} | ({"Both": Acceptance("distance", eps=args.eps)} if args.eps else {})
    ks = args.ks.split(",")
    specs = {spec: method_spec(spec, model.num_heads) for spec in ks} | {"1": (1, None)}
    cpu = cpu_label()
    records, chosen = [], {}
    for batch in map(int, args.batches.split(",")):
        methods = [("greedy", None, "1")] + [("blockwise", name, k) for name in rules for k in ks]
        for method, rule, spec in methods:  # warm-up; k = auto measures this machine's costs here
            k, tree = specs[spec]
            if k == "auto":
                src = sr.sources(lows[:batch], factor, layout)
                policy = auto_policy(model, [[sr.BOS]] * len(src), src, sr.HIGH * sr.HIGH, tree=tree)
                policy.costs.prepare(batch)
            sr.upsample(model, lows[:1], factor, method, k=k, accept=rules.get(rule, Acceptance()), batch_size=batch,
                        layout=layout, tree=tree)
        times, outs = {m: [] for m in methods}, {}
        for r in range(args.repeats):
            for m in (methods if r % 2 == 0 else methods[::-1]):
                k, tree = specs[m[2]]
                out = sr.upsample(model, lows, factor, m[0], k=k, accept=rules.get(m[1], Acceptance()),
                                  batch_size=batch, layout=layout, tree=tree)
                times[m].append(out.seconds)
                outs[m] = out
        greedy = outs[("greedy", None, "1")]
        greedy_s = statistics.median(times[("greedy", None, "1")])
        for (method, rule, spec), out in outs.items():
            k, tree = specs[spec]
            auto = k == "auto"
            s = statistics.median(times[(method, rule, spec)])
            if auto:
                chosen[f"{rule}, batch {batch}" + (" (tree nodes)" if tree else "")] = out.stats.k_chosen
            records.append({"regime": rule or "greedy (fine-tuned model)",
                            "eps": rules[rule].eps if rule else None, "min_block": 1 if rule else None,
                            "batch": batch, "mean_accepted": round(out.stats.mean_accepted, 3),
                            "speedup": round(greedy_s / s, 3), "speedup_vs_greedy": round(greedy_s / s, 3),
                            "psnr": round(sr.psnr(out.images, originals), 2),
                            "psnr_greedy": round(sr.psnr(greedy.images, originals), 2),
                            "psnr_vs_greedy": None if method == "greedy" else
                            round(sr.psnr(out.images, greedy.images), 2),
                            "ssim": round(sr.ssim(out.images, originals), 4), "n": len(lows), "dtype": args.dtype,
                            **spec_fields(k, tree), "cpu": cpu, "seconds": round(s, 3), "run": args.run})
            print(f"batch {batch} {rule or method} {spec}: {s:.2f} s, {greedy_s / s:.2f}x greedy, "
                  f"k̂ {out.stats.mean_accepted:.2f}" + (f", chosen {out.stats.k_chosen}" if auto else ""), flush=True)
    out_dir = cpu_folder(args.out, cpu)
    info = {"commit": git_commit(), "minutes": round((time.time() - started) / 60, 1), "cpu": cpu,
            "threads": args.threads, "args": vars(args), "k_chosen": chosen}
    (out_dir / "summary.json").write_text(json.dumps({"meta": info, "records": records}, indent=1) + "\n")
    lines = [f"# Super-resolution ×{factor}: blockwise (blocks, trees, auto) vs greedy ({cpu}, {args.dtype}, run "
             f"{args.run})", "",
             f"Commit {info['commit']}, {info['minutes']} min, {args.threads} thread(s), the first {len(lows)} test "
             f"images, medians of {args.repeats} interleaved repeats. `vs greedy`: greedy's time / this method's, same "
             "run and batch; PSNR against the originals (greedy's in the last column).", "",
             "| batch | regime | k | tree | nodes | seconds | vs greedy | tokens per call | PSNR | PSNR vs greedy | "
             "greedy PSNR |", "|---" * 11 + "|"]
    for r in records:
        k = "auto" if r["policy"] == "auto" and r["tree"] == "chain" else r["k"] or ("–" if r["tree"] != "chain" else 1)
        nodes = "auto" if r["policy"] == "auto" and r["tree"] != "chain" else r["nodes"]
        pvg = "–" if r["psnr_vs_greedy"] is None else f"{r['psnr_vs_greedy']:.2f}"
        lines.append(f"| {r['batch']} | {r['regime']} | {k} | {r['tree']} | {nodes} | {r['seconds']:.2f} | {r['speedup_vs_greedy']:.2f} | "
                     f"{r['mean_accepted']:.2f} | {r['psnr']:.2f} | {pvg} | {r['psnr_greedy']:.2f} |")
    lines += ["", "k = auto, iterations at each k: " + "; ".join(
        f"{b}: " + format_k_chosen(c) for b, c in chosen.items())]
    (out_dir / "table.md").write_text("\n".join(lines) + "\n")
    if Path("results/sr/summary.json").exists():
        merge_rows("results/sr/summary.json", records, args.run, cpu)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
