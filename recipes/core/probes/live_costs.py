"""Probe (issue 16): k = auto started from a cost table that a burst of load spoiled, with and without the iterations'
own times correcting it (``decoding.policy.Costs.observe``), against greedy in the same run.

The table is the one this machine cached once for the shipped translation model at batch 1 (float32, one thread,
AVX-512 EPYC, 2026-12-05): k = 1 / 2 / 3 at 1.63 / 1.64 / 1.76 ms where those iterations take ~1.2 / 2.0 / 2.3, so
that by the table 2- and 3-token blocks always pay. Both policies start from it (in memory: the disk cache is not
touched), each keeps what it learned from sentence to sentence (as ``blockwise translate`` does); "blind" has no
clock, "live" has one. The sentences go one per decode (batch 1), the three methods alternating on every sentence
(``eval.timing.interleaved``), each repeat timed whole; ratios are medians of the repeats' paired ratios. Every
output is checked against greedy's. Nothing else may run meanwhile.

    python recipes/core/probes/live_costs.py --n 40 --repeats 5 --out results/core/live_costs_avx512.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from blockwise import blockwise, greedy  # before torch: importing blockwise sets OMP_WAIT_POLICY

import torch

from blockwise.cli_translate import DEFAULT_MODEL, load_translator
from blockwise.decoding.policy import Costs, Policy, held_out_expected, prior_from_expected
from blockwise.eval.timing import cpu_label, environment, interleaved, paired_ratio, rates
from blockwise.tasks.translation import BOS, EOS

HERE = Path(__file__).resolve().parents[3]
SPOILT = {1: 1.627, 2: 1.64, 3: 1.755, 4: 2.535, 5: 2.87, 6: 2.946, 7: 3.227, 8: 3.269, 9: 3.719, 10: 3.833}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=40, help="test sentences (data/mt/test.en), one decode each")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None, help="JSON file to write")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, corpus = load_translator(str(DEFAULT_MODEL))
    lines = (HERE / "data" / "mt" / "test.en").read_text().splitlines()[:args.n]
    sources = [s + [EOS] for s in corpus.encode(lines)]
    prior = prior_from_expected(held_out_expected(model) or [])
    k_max = model.num_heads
    policies = {"blind": Policy(Costs({1: dict(SPOILT)}), prior, k_max),
                "live": Policy(Costs({1: dict(SPOILT)}), prior, k_max, clock=time.perf_counter)}

    def run(method):
        def one(src, repeat, g):
            limit = 2 * len(src) + 10
            if method == "greedy":
                return greedy(model, [[BOS]], limit, eos_id=EOS, sources=[src])
            return blockwise(model, [[BOS]], limit, eos_id=EOS, sources=[src], policy=policies[method])
        return one

    start = time.perf_counter()
    times, outputs, stats, counts = interleaved({m: run(m) for m in ("greedy", "blind", "live")}, sources,
                                                args.repeats, "live costs")
    rate = rates(times, counts)
    same = {m: sum(a == b for a, b in zip(outputs[m], outputs["greedy"])) for m in ("blind", "live")}
    chosen = {m: [sum(s.k_chosen[k] if k < len(s.k_chosen) else 0 for s in stats[m]) for k in range(1, 4)]
              for m in ("blind", "live")}
    result = {
        "cpu": cpu_label(), "environment": environment(), "sentences": args.n, "repeats": args.repeats,
        "spoilt_table_ms": SPOILT,
        "speedup_vs_greedy": {m: round(paired_ratio(rate[m], rate["greedy"]), 3) for m in ("blind", "live")},
        "tokens_per_call": {m: round(counts[m][-1] / sum(s.calls for s in stats[m]), 3) for m in ("blind", "live")},
        "k_chosen_last_repeat_k1_k2_k3": chosen,
        "same_as_greedy": same,
        "live_costs_ms": {k: round(v, 3) for k, v in policies["live"].costs.at(1).items()},
        "minutes": round((time.perf_counter() - start) / 60, 1),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
