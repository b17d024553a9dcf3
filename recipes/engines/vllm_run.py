"""Runs vLLM (its CPU build, in its own environment: recipes/engines/00_vllm.sh) on prompts given as token ids,
greedy, and prints one JSON object: per method, per repeat, the generated token ids of every prompt, the seconds, and
vLLM's own speculative-decoding counters. Called by recipes/engines/vllm_benchmark.py; not part of blockwise.

    .venv-vllm/bin/python recipes/engines/vllm_run.py REQUEST.json
with REQUEST {"base": HF_FOLDER, "medusa": FOLDER or null, "prompts": [[ids]], "max_new": N, "repeats": R,
              "methods": ["greedy", "ngram", "medusa"], "k": K (speculative tokens), "batch": B, "eager": true}
Batch 1 runs the prompts one at a time (one request in flight); batch B > 1 submits B prompts per generate call.
"""

from __future__ import annotations

import json
import os
import sys
import time


def counters(llm) -> dict:
    """vLLM's speculative-decoding counters (``vllm:spec_decode_*``), summed over their label sets."""
    out = {}
    for metric in llm.get_metrics():
        if metric.name.startswith("vllm:spec_decode"):
            value = getattr(metric, "value", None)
            if value is None and hasattr(metric, "values"):
                value = sum(metric.values)
            if isinstance(value, (int, float)):
                out[metric.name] = out.get(metric.name, 0) + value
    return out


def main() -> None:
    from vllm import LLM, SamplingParams, TokensPrompt

    request = json.load(open(sys.argv[1]))
    params = SamplingParams(temperature=0.0, max_tokens=request["max_new"], ignore_eos=False)
    result = {}
    for method in request["methods"]:
        spec = None
        if method == "ngram":
            spec = {"method": "ngram", "num_speculative_tokens": request["k"], "prompt_lookup_max": 4,
                    "prompt_lookup_min": 2}
        elif method == "medusa":
            spec = {"method": "medusa", "model": request["medusa"], "num_speculative_tokens": request["k"]}
        started = time.time()
        llm = LLM(model=request["base"], dtype="float32", max_model_len=request.get("max_model_len", 2048),
                  enforce_eager=request.get("eager", True),
                  speculative_config=spec, disable_log_stats=False, seed=0)
        load_s = time.time() - started
        prompts = [TokensPrompt(prompt_token_ids=p) for p in request["prompts"]]
        llm.generate(prompts[:1], SamplingParams(temperature=0.0, max_tokens=4), use_tqdm=False)  # warm-up
        runs = []
        for _ in range(request["repeats"]):
            before = counters(llm)
            tokens, seconds = [], []
            batch = request.get("batch", 1)
            for s in range(0, len(prompts), batch):
                t = time.perf_counter()
                outs = llm.generate(prompts[s: s + batch], params, use_tqdm=False)
                seconds.append(time.perf_counter() - t)
                tokens += [list(o.outputs[0].token_ids) for o in outs]
            after = counters(llm)
            runs.append({"tokens": tokens, "seconds": seconds,
                         "counters": {k: after[k] - before.get(k, 0) for k in after}})
        result[method] = {"runs": runs, "load_s": load_s, "spec": spec}
        del llm
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    main()
