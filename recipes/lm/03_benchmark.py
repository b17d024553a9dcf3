"""The comparison a user would make, in one run on the same prompts: HF greedy ``generate``, HF prompt-lookup decoding,
our greedy decoding on the native Llama, and ours blockwise for k = 2..5, at batch 1 and batch 8, 128 new tokens.

Methods are interleaved within each repeat (so load changes hit all of them alike) and the median over repeats of each
method's tokens/s is reported; speedups are against HF greedy in the same run and batch. Writes
``results/lm/summary.json`` (flat records: method, k, batch, tokens_per_s, speedup, mean_accepted, identical, n),
``details.json`` (per-repeat times, step-cost ratios, load average, head agreement), ``README.md`` and plots.

    python recipes/lm/03_benchmark.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from blockwise import blockwise, greedy
from blockwise.tasks.hf import HFCausalLM, load_smollm2
from blockwise.tasks.lm_heads import ASSET, chat_ids, load_heads
from blockwise.tasks.llama import Llama, NativeLM

HERE = Path(__file__).resolve().parent


def hf_run(hf, prompts, max_new, eos_id, pad_id, lookup: int | None = None):
    """HF ``generate(do_sample=False)`` on a left-padded batch; new tokens per row, cut after end-of-sequence."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    extra = {"prompt_lookup_num_tokens": lookup} if lookup else {}
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False, eos_token_id=eos_id,
                          pad_token_id=pad_id, **extra)
    rows = [r[: r.index(eos_id) + 1] if eos_id in r else r for r in out[:, width:].tolist()]
    return rows, None


def ours_run(lm, prompts, max_new, eos_id, k: int | None):
    out = greedy(lm, prompts, max_new, eos_id=eos_id) if k is None else \
        blockwise(lm, prompts, max_new, k=k, eos_id=eos_id)
    return out.tokens, out.stats


def step_cost(session_factory, prompt, max_t: int, repeats: int) -> dict:
    """Median seconds of one call feeding T tokens and scoring them (T = 1..max_t) after a prompt, batch 1."""
    out = {}
    for T in range(1, max_t + 1):
        s = session_factory()
        s.feed(torch.tensor([prompt]))
        held = s.lengths.clone()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            s.scores(s.feed(torch.full((1, T), 1000)))
            times.append(time.perf_counter() - t)
            s.truncate(held)
        out[T] = statistics.median(times)
    return {f"T{T}": round(v / out[1], 3) for T, v in out.items()} | {"T1_ms": round(1000 * out[1], 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", default=str(HERE / "prompts.json"))
    ap.add_argument("--heads", default=str(ASSET))
    ap.add_argument("--out", default="results/lm")
    ap.add_argument("--max-new", type=int, default=128)
    ap.add_argument("--ks", default="2,3,4,5")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--n1", type=int, default=8, help="prompts at batch 1")
    ap.add_argument("--n8", type=int, default=16, help="prompts at batch 8 (two batches of 8)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lookup", type=int, default=10, help="prompt_lookup_num_tokens for HF prompt lookup")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    tokenizer, hf = load_smollm2()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    heads, vocab = load_heads(args.heads)
    native = NativeLM(Llama.from_hf(hf), heads, proposal_vocab=vocab)
    texts = json.loads(Path(args.prompts).read_text())
    all_ids = [chat_ids(tokenizer, p["text"]) for p in texts]
    ks = [int(k) for k in args.ks.split(",")]

    methods = [("hf_greedy", None, lambda P: hf_run(hf, P, args.max_new, eos, pad)),
               ("hf_prompt_lookup", None, lambda P: hf_run(hf, P, args.max_new, eos, pad, lookup=args.lookup)),
               ("greedy", None, lambda P: ours_run(native, P, args.max_new, eos, None))]
    methods += [("blockwise", k, (lambda k: lambda P: ours_run(native, P, args.max_new, eos, k))(k)) for k in ks]

    records, details = [], {"runs": {}, "notes": []}
    for batch in [int(b) for b in args.batches.split(",")]:
        n = args.n1 if batch == 1 else args.n8
        groups = [all_ids[i: i + batch] for i in range(0, n, batch)]
        for name, k, run in methods:  # warm-up, untimed
            try:
                run(groups[0][:1] if batch == 1 else groups[0])
            except Exception as e:  # HF assisted decoding refuses batch > 1
                details["notes"].append(f"{name} batch {batch}: {type(e).__name__}: {str(e)[:200]}")
        times = {(m, k): [] for m, k, _ in methods}
        outputs, stats = {}, {}
        skip = {(m, k) for m, k, _ in methods if any(f"{m} batch {batch}:" in s for s in details["notes"])}
        for r in range(args.repeats):
            order = methods if r % 2 == 0 else methods[::-1]
            for name, k, run in order:
                if (name, k) in skip:
                    continue
                t, rows, blocks = time.perf_counter(), [], []
                for group in groups:
                    got, st = run(group)
                    rows += got
                    blocks.append(st)
                times[(name, k)].append(time.perf_counter() - t)
                outputs[(name, k)], stats[(name, k)] = rows, blocks
            print(f"batch {batch} repeat {r + 1}/{args.repeats} done, load {os.getloadavg()[0]:.2f}", flush=True)
        ref = outputs[("hf_greedy", None)]
        produced = sum(len(r) for r in ref)
        base_tps = None
        for name, k, _ in methods:
            key = (name, k)
            rec = {"method": name, "k": k, "batch": batch, "tokens_per_s": None, "speedup": None,
                   "mean_accepted": None, "identical": None, "n": n}
            if key not in skip:
                tokens = sum(len(r) for r in outputs[key])
                tps = tokens / statistics.median(times[key])
                base_tps = tps if name == "hf_greedy" else base_tps
                rec.update(tokens_per_s=round(tps, 2), speedup=round(tps / base_tps, 3),
                           identical=None if name == "hf_greedy" else outputs[key] == ref)
                if name == "greedy":
                    rec["mean_accepted"] = 1.0
                if name == "blockwise":
                    st = stats[key]
                    rec["mean_accepted"] = round(sum(s.tokens for s in st) / sum(s.blocks for s in st), 3)
                details["runs"][f"{name}{'' if k is None else f'_k{k}'}_b{batch}"] = {
                    "seconds": [round(t, 3) for t in times[key]], "tokens": tokens,
                    "differing_rows": [i for i, (a, b) in enumerate(zip(outputs[key], ref)) if a != b],
                    "identical_to_our_greedy": outputs[key] == outputs[("greedy", None)]}
            records.append(rec)
        details["runs"][f"tokens_b{batch}"] = produced
        if batch == 1:
            details["sample_outputs"] = {texts[i]["text"]: tokenizer.decode(ref[i]) for i in range(min(3, n))}

    prompt = all_ids[0]
    details["step_cost_native"] = step_cost(lambda: native.start(1, 1024), prompt, 6, 9)
    details["step_cost_hf"] = step_cost(lambda: HFCausalLM(hf).start(1, 1024), prompt, 6, 9)
    details["load_average_at_end"] = os.getloadavg()
    details["machine"] = {"cpus": os.cpu_count(), "threads": args.threads, "torch": torch.__version__,
                          "platform": platform.platform()}
    details["heads"] = str(args.heads)
    details["args"] = vars(args)
    (out_dir / "summary.json").write_text(json.dumps(records, indent=1))
    (out_dir / "details.json").write_text(json.dumps(details, indent=1, default=str))
    write_report(records, details, out_dir)
    print(json.dumps(records, indent=1))


def write_report(records: list[dict], details: dict, out_dir: Path) -> None:
    lines = ["# SmolLM2-135M-Instruct: blockwise decoding vs Hugging Face generate (CPU, float32)", "",
             f"Load average at the end of the run: {', '.join(f'{x:.2f}' for x in details['load_average_at_end'])} "
             f"on {details['machine']['cpus']} cores, {details['machine']['threads']} threads (a shared, noisy "
             "machine: compare only within this run).", "",
             "| method | k | batch | tokens/s | speedup vs HF greedy | mean accepted | identical | prompts |",
             "|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "–" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))  # noqa: E731
    for r in records:
        lines.append("| " + " | ".join(fmt(r[f]) for f in ("method", "k", "batch", "tokens_per_s", "speedup",
                                                             "mean_accepted", "identical", "n")) + " |")
    lines += ["", "Step cost (one call feeding T tokens and scoring them, batch 1, relative to T = 1):", "",
              "| model | " + " | ".join(f"T={t}" for t in range(1, 7)) + " | T=1 ms |", "|---" * 8 + "|"]
    for name in ("native", "hf"):
        sc = details[f"step_cost_{name}"]
        lines.append(f"| {name} | " + " | ".join(str(sc[f"T{t}"]) for t in range(1, 7)) + f" | {sc['T1_ms']} |")
    if details["notes"]:
        lines += ["", "Notes:"] + [f"- {n}" for n in details["notes"]]
    (out_dir / "README.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, batch in zip(axes, sorted({r["batch"] for r in records})):
        rows = [r for r in records if r["batch"] == batch and r["tokens_per_s"] is not None]
        labels = [r["method"] + (f" k={r['k']}" if r["k"] else "") for r in rows]
        ax.bar(labels, [r["tokens_per_s"] for r in rows], color=["#999" if r["method"].startswith("hf") else "#37c"
                                                                 for r in rows])
        ax.set_title(f"batch {batch}: tokens/s (higher is better)")
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(out_dir / "tokens_per_s.png", dpi=120)
    fig, ax = plt.subplots(figsize=(5, 4))
    for batch in sorted({r["batch"] for r in records}):
        rows = [r for r in records if r["batch"] == batch and r["method"] == "blockwise"]
        ax.plot([r["k"] for r in rows], [r["mean_accepted"] for r in rows], "o-", label=f"mean accepted, batch {batch}")
        ax.plot([r["k"] for r in rows], [r["speedup"] for r in rows], "s--", label=f"speedup, batch {batch}")
    ax.set_xlabel("k")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "accepted_and_speedup.png", dpi=120)


if __name__ == "__main__":
    main()
