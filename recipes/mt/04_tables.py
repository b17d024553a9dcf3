#!/usr/bin/env python3
"""Stage 4: the paper's Tables 1 and 4 on our data — BLEU, mean accepted block size, identical-to-greedy counts,
and wall-clock speedup over greedy decoding of the same model at batch 1, 8 and 32, in one run.

Writes results/mt/summary.json (one record per measured cell: regime, k, accept, batch, bleu, mean_accepted, speedup,
identical, n), results/mt/tables.md, plots, and results/mt/run.json (commit, machine, wall-clock time of the recipe).
BLEU and acceptance use the whole test split at batch 32; timings use the first ``--timing-n`` test sentences, medians
of ``--repeats`` runs, greedy and blockwise of the same model measured back to back.

    OMP_WAIT_POLICY=PASSIVE python recipes/mt/04_tables.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from blockwise import Acceptance, BlockwiseModel  # before torch: importing blockwise sets OMP_WAIT_POLICY
from blockwise.eval.records import pyplot
from blockwise.eval.timing import environment
from blockwise.model.blockwise_model import join_heads
from blockwise.tasks.translation import Corpus, bleu, translate

import torch

KS = (1, 2, 4, 6, 8, 10)
APPROX = {"top2": Acceptance("top_k", top_k=2), "top3": Acceptance("top_k", top_k=3)}


def record(regime, k, accept, batch, bleu_=None, mean_accepted=None, speedup=None, identical=None, n=None, **extra):
    return {"regime": regime, "k": k, "accept": accept, "batch": batch, "bleu": bleu_, "mean_accepted": mean_accepted,
            "speedup": speedup, "identical": identical, "n": n, **extra}


def timed(model, corpus, sentences, method, k, batch, repeats):
    runs = [translate(model, corpus, sentences, method, k=k, batch_size=batch).seconds for _ in range(repeats)]
    return statistics.median(runs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/mt")
    ap.add_argument("--models", default="models/mt")
    ap.add_argument("--regimes", default="regular,distillation,finetune,both")
    ap.add_argument("--n", type=int, default=0, help="test sentences for BLEU/acceptance (0: all)")
    ap.add_argument("--timing-n", type=int, default=100)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="results/mt")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="decode in this dtype (greedy and blockwise alike; bfloat16 verifies blocks more cheaply here)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.time()
    corpus = Corpus(args.data)
    english, german = corpus.lines("test", "en"), corpus.lines("test", "de")
    if args.n:
        english, german = english[: args.n], german[: args.n]
    timing_en = english[: args.timing_n]
    batches = [int(b) for b in args.batches.split(",")]
    records, histograms = [], {}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    dtype = getattr(torch, args.dtype)
    baseline = BlockwiseModel.load(Path(args.models) / "baseline.safetensors", dtype=dtype)
    g = translate(baseline, corpus, english, "greedy", progress=True)
    b4 = translate(baseline, corpus, english, "beam", beam_size=4, progress=True)
    records.append(record("baseline", 1, "exact", 32, bleu(g.hypotheses, german), 1.0, 1.0, len(english), len(english),
                          decoder="greedy"))
    records.append(record("baseline", None, None, 32, bleu(b4.hypotheses, german), None, None, None, len(english),
                          decoder="beam4"))
    print(f"baseline: greedy BLEU {records[0]['bleu']:.2f}, beam-4 BLEU {records[1]['bleu']:.2f}", flush=True)

    for regime in args.regimes.split(","):
        path = Path(args.models) / f"{regime}.safetensors"
        heads_only = Path(args.models) / f"{regime}.heads.safetensors"
        if not path.exists() and heads_only.exists():  # frozen-base regimes are committed as heads alone
            join_heads(Path(args.models) / "baseline.safetensors", heads_only, path)
        if not path.exists():
            print(f"skipping {regime}: no {path}", flush=True)
            continue
        model = BlockwiseModel.load(path, dtype=dtype)
        ref = translate(model, corpus, english, "greedy")
        greedy_bleu = bleu(ref.hypotheses, german)
        for accept_name, rule in [("exact", Acceptance())] + (list(APPROX.items()) if regime == "both" else []):
            for k in KS:
                if k > model.num_heads or (accept_name != "exact" and k == 1):
                    continue
                res = translate(model, corpus, english, "blockwise", k=k, accept=rule)
                same = sum(a == b for a, b in zip(res.token_ids, ref.token_ids))
                score = bleu(res.hypotheses, german)
                histograms[f"{regime}/{accept_name}/k={k}"] = res.stats.block_sizes
                records.append(record(regime, k, accept_name, 32, score, res.stats.mean_accepted, None, same,
                                      len(english), greedy_bleu=greedy_bleu))
                print(f"{regime:>12} {accept_name:>5} k={k:<2} BLEU {score:6.2f} (greedy {greedy_bleu:.2f}) "
                      f"mean accepted {res.stats.mean_accepted:5.2f} identical {same}/{len(english)}", flush=True)
                if accept_name != "exact":
                    continue
                for batch in batches:
                    t_greedy = timed(model, corpus, timing_en, "greedy", 1, batch, args.repeats)
                    t_block = timed(model, corpus, timing_en, "blockwise", k, batch, args.repeats)
                    speed = translate(model, corpus, timing_en, "blockwise", k=k, batch_size=batch)
                    records.append(record(regime, k, "exact", batch, None, speed.stats.mean_accepted,
                                          t_greedy / t_block, None, len(timing_en), greedy_s=t_greedy,
                                          blockwise_s=t_block))
                    print(f"{'':>12} batch {batch:<3} speedup {t_greedy / t_block:5.2f}x "
                          f"(greedy {t_greedy:.2f}s, blockwise {t_block:.2f}s)", flush=True)
        (out / "summary.json").write_text(json.dumps(records, indent=1) + "\n")  # after every regime: never lost

    env = environment()
    env["recipe_minutes"] = (time.time() - started) / 60
    env["dtype"] = args.dtype
    (out / "run.json").write_text(json.dumps(env, indent=1) + "\n")
    (out / "histograms.json").write_text(json.dumps(histograms, indent=1) + "\n")
    write_tables(records, out, env)
    write_plots(records, histograms, out)
    return 0


def write_tables(records, out: Path, env: dict) -> None:
    from collections import defaultdict

    cell = defaultdict(dict)
    for r in records:
        if r["regime"] != "baseline" and r["batch"] == 32 and r["bleu"] is not None:
            cell[(r["regime"], r["accept"])][r["k"]] = r
    regimes = [x for x in ("regular", "distillation", "finetune", "both") if (x, "exact") in cell]
    base = {r.get("decoder"): r for r in records if r["regime"] == "baseline"}
    lines = ["# Translation en→de: blockwise parallel decoding on our data", "",
             f"Commit {env['commit']}, {env['cpu']}, {env['threads']} threads, recipe {env['recipe_minutes']:.0f} min.",
             "", f"Baseline: greedy BLEU {base['greedy']['bleu']:.2f}, beam-4 BLEU {base['beam4']['bleu']:.2f} "
             f"(n = {base['greedy']['n']}).", "",
             "## Table 1: BLEU / mean accepted block size (exact)", "",
             "| k | " + " | ".join(regimes) + " |", "|---" * (len(regimes) + 1) + "|"]
    for k in KS:
        row = [f"{cell[(g, 'exact')][k]['bleu']:.2f} / {cell[(g, 'exact')][k]['mean_accepted']:.2f}"
               if k in cell[(g, 'exact')] else "–" for g in regimes]
        lines.append(f"| {k} | " + " | ".join(row) + " |")
    if ("both", "top2") in cell:
        lines += ["", "## Approximate (top-k) on Both: BLEU / mean accepted block size", "", "| k | top-2 | top-3 |",
                  "|---|---|---|"]
        for k in KS[1:]:
            row = [f"{cell[('both', a)][k]['bleu']:.2f} / {cell[('both', a)][k]['mean_accepted']:.2f}"
                   if k in cell[("both", a)] else "–" for a in ("top2", "top3")]
            lines.append(f"| {k} | " + " | ".join(row) + " |")
    speed = [r for r in records if r["speedup"] is not None and r["regime"] != "baseline"]
    if speed:
        lines += ["", "## Table 4: wall-clock speedup over greedy of the same model (exact)", "",
                  "| regime | batch | " + " | ".join(f"k={k}" for k in KS) + " |", "|---" * (len(KS) + 2) + "|"]
        for regime in regimes:
            for batch in sorted({r["batch"] for r in speed}):
                by_k = {r["k"]: r for r in speed if r["regime"] == regime and r["batch"] == batch}
                lines.append(f"| {regime} | {batch} | " + " | ".join(
                    f"{by_k[k]['speedup']:.2f}×" if k in by_k else "–" for k in KS) + " |")
    ident = [r for r in records if r["accept"] == "exact" and r["identical"] is not None and r["regime"] != "baseline"]
    if ident:
        lines += ["", f"Exact mode, outputs identical to greedy: {sum(r['identical'] for r in ident)} of "
                      f"{sum(r['n'] for r in ident)} (all regimes and k)."]
    (out / "tables.md").write_text("\n".join(lines) + "\n")


def write_plots(records, histograms, out: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for regime in ("regular", "distillation", "finetune", "both"):
        rows = sorted([r for r in records if r["regime"] == regime and r["accept"] == "exact" and r["batch"] == 32
                       and r["bleu"] is not None], key=lambda r: r["k"])
        if not rows:
            continue
        axes[0].plot([r["k"] for r in rows], [r["mean_accepted"] for r in rows], "o-", label=regime)
        axes[2].plot([r["mean_accepted"] for r in rows], [r["bleu"] for r in rows], "o-", label=regime)
        sp = sorted([r for r in records if r["regime"] == regime and r["speedup"] is not None and r["batch"] == 1],
                    key=lambda r: r["k"])
        axes[1].plot([r["k"] for r in sp], [r["speedup"] for r in sp], "o-", label=f"{regime}, batch 1")
    axes[0].set(xlabel="k", ylabel="mean accepted block size", title="Mean accepted block size")
    axes[1].axhline(1.0, color="grey", lw=0.8)
    axes[1].set(xlabel="k", ylabel="speedup over greedy", title="Wall-clock speedup (batch 1)")
    axes[2].set(xlabel="mean accepted block size", ylabel="BLEU", title="Quality vs block size")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "mt_curves.png", dpi=110)
    key = max((h for h in histograms if h.startswith("both/exact")), default=None,
              key=lambda h: int(h.split("=")[1]))
    if key:
        fig, ax = plt.subplots(figsize=(6, 4))
        counts = histograms[key]
        ax.bar(range(1, len(counts)), counts[1:])
        ax.set(xlabel="accepted block size k̂", ylabel="iterations", title=f"Accepted block sizes ({key})")
        fig.tight_layout()
        fig.savefig(out / "mt_histogram.png", dpi=110)


if __name__ == "__main__":
    sys.exit(main())
