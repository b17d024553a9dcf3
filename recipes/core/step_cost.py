#!/usr/bin/env python3
"""Step-cost benchmark: one blockwise verification call against one greedy step.

A greedy step feeds 1 token and scores it with p1. A blockwise iteration (combined scoring and proposal) feeds the k
proposed tokens, scores all k with p1 (verification) and runs the k heads at the last accepted position (the next
proposal). The ratio verify/greedy bounds the wall-clock speedup: speedup ≈ mean accepted block size / ratio.
Our cache already holds the last accepted token, so k positions are fed (the issue's "k+1 positions" counts it).

    OMP_WAIT_POLICY=PASSIVE python recipes/core/step_cost.py            # writes results/core/step_cost.{json,md}
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from blockwise import BlockwiseModel, HeadsConfig, preset  # before torch: importing blockwise sets OMP_WAIT_POLICY
from blockwise.eval.step_cost import step_cost
from blockwise.eval.timing import environment

import torch


def measure(preset_name: str, vocab: int, batch: int, ks: list[int], context: int, repeats: int,
            dtype: torch.dtype = torch.float32, threads: int = 2) -> list[dict]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = preset(preset_name, vocab_size=vocab)
    model = BlockwiseModel(cfg, HeadsConfig(num_heads=max(ks), d_hidden=cfg.d_model)).eval().to(dtype)
    sources = [list(range(3, 3 + context))] * batch if cfg.encoder_decoder else None
    prefix = torch.randint(3, vocab, (batch, context))
    session = model.start(batch, context + max(ks) + 1, sources)
    session.feed(prefix)

    def next_proposal(h, best):  # at the last accepted position: p2..pk (p1's is among the verification scores)
        session.proposals(h[:, -1], best[:, -1], h.shape[1]).argmax(-1)

    # greedy step: feed 1 token, p1's argmax; verification: feed k, p1's argmax at all k, then the next proposal
    cost = step_cost(session, prefix[:, :max(ks)], ks, repeats, then=next_proposal)
    records = []
    greedy = cost.ms[1]
    for k in ks:
        verify = cost.ms[k]
        records.append({"preset": preset_name, "dtype": str(dtype).replace("torch.", ""), "threads": threads,
                        "vocab": vocab,
                        "batch": batch, "k": k, "greedy_ms": round(greedy, 3),
                        "verify_ms": round(verify, 3), "ratio": round(verify / greedy, 3)})
        print(f"{preset_name:>6} {str(dtype)[6:]:>8} threads={threads} V={vocab:<6} batch={batch:<3} k={k:<3} greedy {greedy:8.2f} ms  "
              f"verify {verify:8.2f} ms  ratio {verify / greedy:5.2f}", flush=True)
    return records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="tiny,base", help="comma-separated model presets (default: tiny,base)")
    ap.add_argument("--vocab", type=int, default=8000, help="vocabulary size (default 8000: our translation vocabulary)")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--ks", default="2,4,8,10")
    ap.add_argument("--context", type=int, default=32, help="tokens already cached (and source length)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts to measure")
    ap.add_argument("--dtypes", default="float32,bfloat16", help="weights/activations dtypes to measure")
    ap.add_argument("--out", default="results/core")
    ap.add_argument("--note", default="", help="a sentence on the conditions of the run, added to the markdown")
    args = ap.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]
    records = []
    for threads in (int(t) for t in args.threads.split(",")):
        for dtype in args.dtypes.split(","):
            for name in args.presets.split(","):
                for batch in (int(b) for b in args.batches.split(",")):
                    records += measure(name, args.vocab, batch, ks, args.context, args.repeats, getattr(torch, dtype),
                                       threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "step_cost.json").write_text(json.dumps(records, indent=1) + "\n")
    env = environment()
    lines = ["# Step cost: one blockwise verification call vs one greedy step", "",
             f"`{' '.join(['python', 'recipes/core/step_cost.py'] + (argv if argv is not None else sys.argv[1:]))}`", "",
             f"Machine: {env['cpu']}, {env['cores']} cores, torch {env['torch']}, load average "
             f"{env['load_avg_1m']:.2f}, commit {env['commit']}. Medians of {args.repeats} repeats, {args.context} "
             f"tokens cached, heads d_hidden = d_model. {args.note}", "",
             "| preset | dtype | threads | batch | k | greedy ms | verify ms | ratio |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['preset']} | {r['dtype']} | {r['threads']} | {r['batch']} | {r['k']} | {r['greedy_ms']:.2f} | {r['verify_ms']:.2f} | "
              f"{r['ratio']:.2f} |" for r in records]
    (out / "step_cost.md").write_text("\n".join(lines) + "\n")
    (out / "environment.json").write_text(json.dumps(env, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
