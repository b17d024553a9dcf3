"""Where a blockwise step's time goes on a CPU (SmolLM2 with the shipped drafter, batch 1): the cost of one call by
tokens fed, how much of it is matrix products and how many ATen calls it makes; a k = 4 draft right after a call
against the same draft again (cache state), after evicting the caches, and after a 20 ms sleep; and what int4/int8
matrices in the drafter's layer buy, per draft and end to end. A probe (issue 18, "the drafter's steps cost <= 15% of
a call"): it prints and writes JSON, nothing else runs meanwhile.

    python recipes/lm/probes/draft_cost_anatomy.py --out results/lm/drafter/draft_cost_anatomy_avx512_bf16.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from blockwise import blockwise  # before torch: importing blockwise sets OMP_WAIT_POLICY

import torch

from blockwise.decoding.common import prefill
from blockwise.eval.timing import cpu_label, environment, interleaved, median_ms, paired_ratio, rates
from blockwise.model.quant import QuantizedMatrix
from blockwise.tasks.hf import load_smollm2
from blockwise.tasks.llama import MATRICES, Llama, NativeLM
from blockwise.tasks.lm.heads_io import DRAFTER_ASSET, load_heads
from blockwise.tasks.lm.prompts import chat_ids

HERE = Path(__file__).resolve().parents[1]


def seconds_to_ms(xs) -> float:
    """The median of timings in seconds, in ms."""
    return round(1000 * statistics.median(xs), 3)


def with_quantized_drafter(base, heads, vocab, bits: int | None):
    """A NativeLM whose drafter's four layer matrices are int8/int4 (bf16 activations, ``QuantizedMatrix``)."""
    if bits is None:
        return NativeLM(base, heads.to(torch.bfloat16), proposal_vocab=vocab)
    copy = heads.to(torch.bfloat16).copy()
    for name in MATRICES:
        copy.layer.quantized[name] = QuantizedMatrix(getattr(copy.layer, name).t().float(), bits)
    return NativeLM(base, copy, proposal_vocab=vocab)


def call_costs(lm, prompt, repeats: int) -> dict:
    """ms of feed + scores per tokens fed, and the ATen calls and matrix-product ms of one 1- and one 8-token call."""
    from torch.profiler import profile

    session, _ = prefill(lm, [prompt], len(prompt) + 64, None)
    start = session.lengths.clone()
    out = {}
    for T in (1, 2, 4, 8, 16):
        tokens = torch.randint(0, 1000, (1, T))

        def call() -> None:  # one call, then the cache back to where it was
            session.scores(session.feed(tokens))
            session.truncate(start)

        out[f"T{T}_ms"] = round(median_ms(call, repeats), 3)
        if T in (1, 8):
            with profile() as prof:
                session.feed(tokens)
                session.truncate(start)
            events = prof.key_averages()
            out[f"T{T}_aten_calls"] = sum(e.count for e in events)
            out[f"T{T}_products_ms"] = round(sum(e.self_cpu_time_total for e in events
                                                 if "linear" in e.key) / 1000, 2)
    return out


def draft_states(lm, prompt, repeats: int) -> dict:
    """ms of a k = 4 draft (catch-up pass over 2 accepted entries + 2 more passes, 3 projections) in four states."""
    session, hidden = prefill(lm, [prompt], len(prompt) + 8 * repeats + 64, None)
    given = session.scores(hidden).argmax(-1)
    flush = torch.ones(128 * 2 ** 20 // 4)  # 128 MB: more than the last-level cache
    res = {"after a 4-token call": [], "again (hot)": [], "after evicting the caches": [], "after a 20 ms sleep": []}
    for _ in range(repeats):
        start = session.lengths.clone()
        h = session.feed(torch.tensor([[5, 6, 7, 8]]))
        session.scores(h)
        session.truncate(start + 2)
        for state in res:
            if state == "after evicting the caches":
                flush.add_(1)
            elif state == "after a 20 ms sleep":
                time.sleep(0.02)
            t = time.perf_counter()
            session.proposals(h[:, 1], given, 4)
            res[state].append(time.perf_counter() - t)
    return {state: seconds_to_ms(v) for state, v in res.items()}


def end_to_end(models: dict, prompts, eos, repeats: int) -> dict:
    """tokens/s and tokens per call of k = 4 with each drafter (``eval.timing.interleaved``: the drafters alternate on
    every prompt); a speedup is the median of the repeats' paired ratios to the bf16 drafter's rate."""
    runs = {name: (lambda lm: lambda prompt, r, g: blockwise(lm, [prompt], 96, k=4, eos_id=eos))(lm)
            for name, lm in models.items()}
    times, outputs, stats, counts = interleaved(runs, prompts, repeats, desc="k = 4, each drafter")
    first = next(iter(models))
    assert all(outputs[n] == outputs[first] for n in models), "outputs differ"  # exact whatever the drafts
    rate = rates(times, counts)
    return {n: {"tokens_per_s": round(statistics.median(rate[n]), 1),
                "tokens_per_call": round(counts[n][-1] / sum(st.calls for st in stats[n]), 3),
                "vs_bf16_drafter": round(paired_ratio(rate[n], rate[first]), 3)} for n in models}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=8, help="benchmark prompts for the end-to-end runs")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", default="results/lm/drafter/draft_cost_anatomy.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    started = time.time()
    tokenizer, hf = load_smollm2()
    base = Llama.from_hf(hf).cast(torch.bfloat16)
    heads, vocab = load_heads(DRAFTER_ASSET)
    texts = json.loads((HERE / "prompts.json").read_text())
    prompts = [chat_ids(tokenizer, t["text"]) for t in texts][: args.prompts]
    models = {"bf16 drafter": with_quantized_drafter(base, heads, vocab, None),
              "int8 drafter layer": with_quantized_drafter(base, heads, vocab, 8),
              "int4 drafter layer": with_quantized_drafter(base, heads, vocab, 4)}
    plain = models["bf16 drafter"]
    result = {"cpu": cpu_label(), "environment": environment(), "dtype": "bfloat16",
              "call_ms": call_costs(plain, prompts[0], args.repeats),
              "draft_k4_ms": {name: draft_states(lm, prompts[0], args.repeats) for name, lm in models.items()},
              "end_to_end_k4": end_to_end(models, prompts, tokenizer.eos_token_id, 3)}
    result["minutes"] = round((time.time() - started) / 60, 1)
    print(json.dumps(result, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
