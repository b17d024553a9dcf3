"""Ours against llama.cpp on the same CPU, the same GGUF (SmolLM2-135M-Instruct Q4_1) and the same prompts, batch 1,
greedy: our greedy, blockwise k = 3 and k = auto (and trees) with float32, bfloat16, int8 and int4 weights
(``Llama.with_weights``), and llama.cpp's greedy and prompt-lookup drafting, at 1 and 2 threads. Also the quality of
our quantized models: greedy agreement with our float32 greedy on the prompts, and perplexity on held-out text (the
licence texts every Debian machine has, /usr/share/common-licenses).

Needs llama.cpp in its own environment (``bash recipes/engines/00_llamacpp.sh``, ~20 minutes to build); without it,
and under the AVX2 imitation (which llama.cpp's own kernels ignore) without its AVX2-only build (``AVX2=1 bash
recipes/engines/00_llamacpp.sh``, used there instead), the llama.cpp rows are left out. Timing: methods alternate within each repeat, in an order that rotates (llama.cpp
first every other repeat); medians over repeats of each method's tokens/s (prompt evaluation included, model loading
not). Writes {summary.json, details.json, README.md, speed.png} in --out (--merge: its rows into
results/engines/summary.json too). Nothing else may run meanwhile (2 cores).

    python recipes/engines/benchmark.py                      # ~25 minutes
    python recipes/engines/benchmark.py --prompts 2 --max-new 16 --repeats 1 --out /tmp/engines   # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from blockwise import blockwise, greedy  # before torch: importing blockwise sets OMP_WAIT_POLICY
from blockwise.decoding.policy import auto_policy
from blockwise.eval.records import lookup_spec, merge_rows, method_spec, pyplot, spec_fields
from blockwise.eval.timing import cpu_label, environment, imitated
from blockwise.tasks.hf import load_smollm2, smollm2_path
from blockwise.lm import decoding_model
from blockwise.tasks.llama import Llama
from blockwise.tasks.lm.heads_io import DEFAULT_HEADS, SHIPPED, heads_file, load_heads
from blockwise.tasks.lm.prompts import chat_ids

import torch
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[2]
LLAMACPP = ROOT / ".venv-llamacpp"  # its environment (recipes/engines/00_llamacpp.sh)
LLAMACPP_AVX2 = ROOT / ".venv-llamacpp-avx2"  # the AVX2-only build (AVX2=1 bash recipes/engines/00_llamacpp.sh)
HELD_OUT = ["/usr/share/common-licenses/GPL-3", "/usr/share/common-licenses/Apache-2.0"]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=6, help="benchmark prompts (recipes/lm/prompts.json), default 6")
    ap.add_argument("--max-new", type=int, default=64, help="new tokens per prompt (default 64)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--weights", default="float32,int8,int4")
    ap.add_argument("--methods", default="greedy,3,auto,auto+L6",
                    help="ours: greedy, fixed k, auto, treeN (a dynamic N-node tree), treeautoN; a suffix +LN adds "
                         "lookup drafts of N copied tokens per call (auto+L6)")
    ap.add_argument("--heads", default="drafter", help="proposal heads: a shipped name (" + ", ".join(SHIPPED) +
                    f"; default drafter, {DEFAULT_HEADS.name}) or a heads file")
    ap.add_argument("--lookup", type=int, default=3, help="llama.cpp prompt-lookup tokens per draft (0: none)")
    ap.add_argument("--ppl-windows", type=int, default=4, help="held-out windows of 256 tokens for perplexity")
    ap.add_argument("--out", default=str(ROOT / "results" / "engines"))
    ap.add_argument("--merge", default=None, help="also put the records into this summary.json (e.g. "
                    "results/engines/summary.json), replacing its earlier rows of this recipe (run \"engines\") "
                    "on this CPU")
    return ap.parse_args(argv)


def ours(lm, prompts, max_new, eos, method):
    rows, stats, seconds = [], [], 0.0
    for p in prompts:
        t = time.perf_counter()
        if method == "greedy":
            out = greedy(lm, [p], max_new, eos_id=eos)
        else:
            # k = auto: a fresh policy per prompt, as `blockwise generate` has, on the costs measured beforehand
            spec, lookup = lookup_spec(method)  # "auto+L6": with a copied chain of 6 tokens per call
            k, tree = method_spec(spec, lm.num_heads)
            out = blockwise(lm, [p], max_new, k=k, tree=tree, eos_id=eos, lookup=lookup)
        seconds += time.perf_counter() - t
        rows.append(out.tokens[0])
        stats.append(out.stats)
    n = sum(len(r) for r in rows)
    return {"tokens": rows, "seconds": seconds, "tokens_per_s": n / seconds,
            "mean_accepted": sum(s.tokens for s in stats) / max(sum(s.blocks for s in stats), 1)}


def llamacpp_python() -> Path | None:
    """The Python of the llama.cpp build to compare with: the native one; under the AVX2 imitation (PyTorch's kernels
    capped below this CPU), whose variables llama.cpp's own kernels ignore, only an AVX2-only build (its environment
    marked ``ISA`` AVX2 by the build script), else none: its rows would be a faster CPU's."""
    venv = LLAMACPP_AVX2 if imitated() else LLAMACPP
    if venv is LLAMACPP_AVX2 and not (venv / "ISA").exists():
        return None
    python = venv / "bin" / "python"
    return python if python.exists() else None


def llamacpp(prompts, max_new, eos, threads, repeats, lookup) -> dict | None:
    python = llamacpp_python()
    if python is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"model": str(smollm2_path()), "prompts": prompts, "max_new": max_new, "threads": threads,
                   "repeats": repeats, "eos": eos, "lookup": lookup}, f)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run([str(python), str(Path(__file__).with_name("llamacpp_run.py")), f.name],
                          capture_output=True, text=True, env=env, check=True)
    os.unlink(f.name)
    result = {}
    for name, reps in json.loads(done.stdout).items():
        result[name] = []
        for rep in reps:
            n = sum(len(r["tokens"]) for r in rep)
            seconds = sum(r["seconds"] for r in rep)
            calls = sum(r["calls"] for r in rep)
            result[name].append({"tokens": [r["tokens"] for r in rep], "seconds": seconds, "tokens_per_s": n / seconds,
                                 "mean_accepted": (n - len(rep)) / max(calls, 1)})  # first token: prompt's call
    return result


def held_out_ids(tokenizer, windows: int, length: int = 256) -> list[list[int]]:
    text = "\n".join(Path(p).read_text() for p in HELD_OUT if Path(p).exists())
    ids = tokenizer.encode(text)
    return [ids[i * length:(i + 1) * length] for i in range(min(windows, len(ids) // length))]


@torch.no_grad()
def perplexity(base: Llama, windows: list[list[int]]) -> float:
    nll, count = 0.0, 0
    for w in windows:
        tokens = torch.tensor([w])
        logits = base.lm_head(base(tokens)).float()[0, :-1]
        nll += float(torch.nn.functional.cross_entropy(logits, tokens[0, 1:], reduction="sum"))
        count += len(w) - 1
    return math.exp(nll / count)


def agreement(rows, reference) -> dict:
    same = sum(a == b for a, b in zip(rows, reference))
    prefix = []
    for a, b in zip(rows, reference):
        n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        prefix.append(n / max(len(b), 1))
    return {"identical": same, "n": len(reference), "mean_common_prefix": statistics.mean(prefix)}


def main(argv=None) -> None:
    args = parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    tokenizer, hf = load_smollm2()
    heads, vocab = load_heads(heads_file(args.heads))
    eos = tokenizer.eos_token_id
    prompts = [chat_ids(tokenizer, p["text"]) for p in json.load(open(ROOT / "recipes/lm/prompts.json"))]
    prompts = prompts[:args.prompts]
    weights = args.weights.split(",")
    # as `generate` makes them: int8 smoothed on the shipped calibration text, the heads in the activations' dtype
    # (a copy each: ``Module.to`` casts in place)
    models = {w: decoding_model(hf, copy.deepcopy(heads), vocab, w, tokenizer) for w in weights}
    windows = held_out_ids(tokenizer, args.ppl_windows)
    quality = {w: {"perplexity": perplexity(m.base, windows)} for w, m in models.items()}
    print("perplexity on held-out text:", {w: round(q["perplexity"], 3) for w, q in quality.items()}, flush=True)
    del hf
    methods = args.methods.split(",")
    threads = [int(t) for t in args.threads.split(",")]
    runs: dict[tuple, list[dict]] = {}
    for t in threads:
        torch.set_num_threads(t)
        for w, lm in models.items():  # warm-up, and the auto policy's costs measured outside the timed runs
            greedy(lm, [prompts[0][-8:]], 4, eos_id=eos)
            blockwise(lm, [prompts[0][-8:]], 4, k=2, eos_id=eos)
            # k = auto's costs, measured and cached on disk here (per context length), read back by the runs
            if any(m.startswith("auto") for m in methods):
                for p in prompts:
                    auto_policy(lm, [p], None, args.max_new, None, None, progress=True).costs.prepare(1)
    bar = tqdm(total=args.repeats * len(threads) * (len(weights) * len(methods) + 1), desc="benchmark")
    for r in range(args.repeats):
        for t in threads:
            torch.set_num_threads(t)
            # no precision and no method always first, and llama.cpp before ours every other repeat: whatever ran
            # right after llama.cpp's process ran ~15% slower on the AVX-512 host (our int4 greedy 41 vs 49 tok/s)
            order = list(models.items()) if r % 2 == 0 else list(models.items())[::-1]
            turn = methods[r % len(methods):] + methods[:r % len(methods)]
            if r % 2:
                theirs = llamacpp(prompts, args.max_new, eos, t, 1, args.lookup)
            for w, lm in order:
                for m in turn:
                    runs.setdefault(("blockwise", w, m, t), []).append(
                        ours(lm, prompts, args.max_new, eos, m))
                    bar.update()
            if r % 2 == 0:
                theirs = llamacpp(prompts, args.max_new, eos, t, 1, args.lookup)
            for name, reps in (theirs or {}).items():
                runs.setdefault(("llama.cpp", "Q4_1", name, t), []).extend(reps)
            bar.update()
    bar.close()
    reference = runs[("blockwise", "float32", "greedy", threads[0])][0]["tokens"] \
        if ("blockwise", "float32", "greedy", threads[0]) in runs else None
    python = llamacpp_python()
    records, details = [], {"environment": environment(), "quality": quality, "runs": {},
                            "llamacpp": None if python is None else "the AVX2-only build (no AVX-512)"
                            if python.parent.parent == LLAMACPP_AVX2 else "built for this CPU (GGML_NATIVE)"}
    cpu = cpu_label()
    for (system, w, m, t), reps in runs.items():
        speed = statistics.median(x["tokens_per_s"] for x in reps)
        own_greedy = runs.get((system, w, "greedy", t), reps)[0]["tokens"]
        method = ("greedy" if m == "greedy" else f"blockwise {m}" if m.startswith("tree") else f"blockwise k={m}") \
            if system == "blockwise" else m
        fields = spec_fields(*method_spec(lookup_spec(m)[0], 2)) if system == "blockwise" and m != "greedy" else \
            {"k": None, "nodes": 1 if system == "blockwise" else None, "tree": "chain", "policy": "fixed"}
        record = {"run": "engines", "system": system, "method": method, "dtype": w, "batch": 1, "threads": t,
                  "heads": heads_file(args.heads).name if system == "blockwise" and m != "greedy" else None,
                  "tokens_per_s": round(speed, 2), "mean_accepted": round(reps[0]["mean_accepted"], 3),
                  "n": len(reps[0]["tokens"]), "cpu": cpu,
                  "same_as_greedy": sum(a == b for a, b in zip(reps[0]["tokens"], own_greedy)),
                  "identical_to_float32_greedy": None if reference is None else
                  sum(a == b for a, b in zip(reps[0]["tokens"], reference)),
                  **fields, "temperature": 0.0,
                  "max_new_tokens": args.max_new, "repeats": len(reps),
                  "perplexity": quality.get(w, {}).get("perplexity")}
        records.append(record)
        details["runs"][f"{system}|{w}|{m}|{t}"] = [{k: v for k, v in x.items() if k != "tokens"} for x in reps]
    for t in threads:
        base = next((r["tokens_per_s"] for r in records if r["system"] == "blockwise" and r["dtype"] == "float32"
                     and r["method"] == "greedy" and r["threads"] == t), None)
        theirs = next((r["tokens_per_s"] for r in records if r["system"] == "llama.cpp" and r["method"] == "greedy"
                       and r["threads"] == t), None)
        for r in records:
            if r["threads"] == t:
                r["speedup_vs_float32_greedy"] = None if base is None else round(r["tokens_per_s"] / base, 3)
                r["vs_llamacpp_greedy"] = None if theirs is None else round(r["tokens_per_s"] / theirs, 3)
    if reference is not None:
        for w in weights:
            quality[w].update(agreement(runs[("blockwise", w, "greedy", threads[0])][0]["tokens"], reference))
        for name in {m for (s, _, m, _) in runs if s == "llama.cpp"}:
            quality[f"llama.cpp {name}"] = agreement(runs[("llama.cpp", "Q4_1", name, threads[0])][0]["tokens"],
                                                     reference)
    details["seconds"] = round(time.time() - started)
    details["args"] = vars(args)
    (out_dir / "summary.json").write_text(json.dumps(records, indent=1) + "\n")
    if args.merge:
        merge_rows(args.merge, records, "engines", cpu)
    (out_dir / "details.json").write_text(json.dumps(details, indent=1) + "\n")
    write_report(records, details, out_dir)
    print((out_dir / "README.md").read_text())


def write_report(records: list[dict], details: dict, out_dir: Path) -> None:
    env = details["environment"]
    options = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in details["args"].items()
                       if k not in ("out", "merge"))
    lines = ["# Ours vs llama.cpp: SmolLM2-135M-Instruct, batch 1, greedy output", "",
             f"`python recipes/engines/benchmark.py {options}`",
             f"at commit `{env['commit']}`, {details['seconds'] // 60} minutes; CPU {env['cpu']} "
             f"({records[0]['cpu']}), torch {env['torch']}. Tokens/s: median over repeats, prompt evaluation included."
             + (f" llama.cpp: {details['llamacpp']}." if details.get("llamacpp") else ""),
             "",
             "| system | method | weights | threads | tokens/s | × our float32 greedy | × llama.cpp greedy | "
             "tokens/call | same as own greedy | = our float32 greedy |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (r["threads"], r["system"] != "llama.cpp", r["dtype"], r["method"])):
        lines.append(f"| {r['system']} | {r['method']} | {r['dtype']} | {r['threads']} | {r['tokens_per_s']:.1f} | "
                     f"{r['speedup_vs_float32_greedy'] or '–'} | {r['vs_llamacpp_greedy'] or '–'} | "
                     f"{r['mean_accepted']:.2f} | {r['same_as_greedy']}/{r['n']} | "
                     f"{r['identical_to_float32_greedy']}/{r['n']} |")
    windows = details["args"]["ppl_windows"]
    lines += ["", f"Quality of the weights (perplexity on {windows} × 256 tokens of licence text "
                  "from /usr/share/common-licenses; greedy agreement with our float32 greedy on the prompts: identical "
                  "outputs, mean common prefix as a fraction):", "",
              "| weights | perplexity | identical | common prefix |", "|---|---|---|---|"]
    for w, q in details["quality"].items():
        ppl = f"{q['perplexity']:.3f}" if "perplexity" in q else "–"
        lines.append(f"| {w} | {ppl} | {q.get('identical', '–')}/{q.get('n', '–')} | "
                     f"{q.get('mean_common_prefix', float('nan')):.2f} |")
    (out_dir / "README.md").write_text("\n".join(lines) + "\n")
    plt = pyplot()
    if plt is None:
        return
    threads = sorted({r["threads"] for r in records})
    fig, axes = plt.subplots(1, len(threads), figsize=(6 * len(threads), 4.5), squeeze=False)
    for ax, t in zip(axes[0], threads):
        rows = [r for r in records if r["threads"] == t]
        rows.sort(key=lambda r: r["tokens_per_s"])
        labels = [f"{r['system']}: {r['method']} ({r['dtype']})" for r in rows]
        colors = ["tab:orange" if r["system"] == "llama.cpp" else "tab:blue" for r in rows]
        ax.barh(labels, [r["tokens_per_s"] for r in rows], color=colors)
        ax.set_xlabel("tokens/s (batch 1)")
        ax.set_title(f"{t} thread{'s' if t > 1 else ''}, {rows[0]['cpu']}")
    fig.tight_layout()
    fig.savefig(out_dir / "speed.png", dpi=110)


if __name__ == "__main__":
    main()
