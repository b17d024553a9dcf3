"""Probe (issue 16): simulate k = auto on measured cost tables, to tune the policy without timing anything.

Reads the cost tables k = auto measured on this machine (``costs.json`` in ``blockwise.diskcache.cache_dir()``,
or --costs), picks the entries whose key contains --match, and runs ``Policy`` against rows whose proposal i is
accepted with probability a_i once proposals 2..i-1 were (--accept, a_2,a_3,..., the last repeated). Prints the
policy's tokens per second relative to greedy's (greedy = 1 token per c(B, 1)) and what it chose, per batch size,
averaged over --seeds. Policy options (probe_every, probe_budget, weight, margin, half_life) pass as --set NAME=VALUE.

    python recipes/core/probes/policy_sim.py --match "BlockwiseModel|" --accept 0.33,0.25,0.2
    python recipes/core/probes/policy_sim.py --match NativeLM --accept 0.48,0.45,0.35,0.3 --set probe_budget=1
"""

from __future__ import annotations

import argparse
import collections
import json
import random

from blockwise.decoding.policy import Costs, Policy
from blockwise.diskcache import cache_dir


def simulate(table: dict[int, dict[int, float]], accept: list[float], batch: int, tokens: int, seed: int,
             **options) -> tuple[float, collections.Counter]:
    rng = random.Random(seed)
    k_max = max(table[batch])
    policy = Policy(Costs(table), [], k_max, **options)
    ms, made, chosen = 0.0, 0.0, collections.Counter()
    while made < tokens:
        k = policy.choose(batch)
        chosen[k] += 1
        ms += table[batch][k]
        k_hat = []
        for _ in range(batch):
            j = 1
            while j < k and rng.random() < accept[min(j - 1, len(accept) - 1)]:
                j += 1
            k_hat.append(j)
        policy.observe(k_hat if k > 1 else (), k)
        made += sum(k_hat) / batch
    return made * table[batch][1] / ms, chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--costs", default=str(cache_dir() / "costs.json"))
    ap.add_argument("--match", default="", help="use the cost tables whose key contains this")
    ap.add_argument("--accept", default="0.5", help="a_2,a_3,...: acceptance per depth (the last one repeats)")
    ap.add_argument("--tokens", type=int, default=3000, help="tokens per row and simulation")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a Policy option")
    args = ap.parse_args()
    options = {name: float(value) if "." in value else int(value)
               for name, value in (item.split("=", 1) for item in args.set)}
    accept = [float(a) for a in args.accept.split(",")]
    with open(args.costs, encoding="utf-8") as f:
        tables = {key: {int(b): {int(k): v for k, v in row.items()} for b, row in table.items()}
                  for key, table in json.load(f).items() if args.match in key}
    if not tables:
        raise SystemExit(f"no cost table in {args.costs} matches {args.match!r}: run k = auto once on this machine")
    for key, table in tables.items():
        print(key)
        for batch in sorted(table):
            runs = [simulate(table, accept, batch, args.tokens, seed, **options) for seed in range(args.seeds)]
            chosen = sum((c for _, c in runs), collections.Counter())
            share = ", ".join(f"k={k} {n / sum(chosen.values()):.0%}" for k, n in sorted(chosen.items()))
            print(f"  batch {batch:>3}: {sum(r for r, _ in runs) / len(runs):.3f}x greedy  ({share})")


if __name__ == "__main__":
    main()
