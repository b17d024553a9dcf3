"""Runs llama.cpp (llama-cpp-python, in its own environment: recipes/engines/00_llamacpp.sh) on prompts given as token
ids, greedy and with its prompt-lookup drafting, and prints one JSON object: per method, per repeat, per prompt the
generated token ids, the seconds (prompt evaluation included, model loading not) and the number of model calls
(``Llama.eval``, prompt evaluation excluded). Called by recipes/engines/benchmark.py; not part of blockwise.

    .venv-llamacpp/bin/python recipes/engines/llamacpp_run.py REQUEST.json
with REQUEST {"model": GGUF, "prompts": [[ids]], "max_new": N, "threads": T, "repeats": R, "eos": ID, "lookup": 3}
"""

from __future__ import annotations

import json
import sys
import time


def run(llm, prompt: list[int], max_new: int, eos: int) -> dict:
    calls = [0]
    eval_ = llm.eval

    def counted(tokens):
        calls[0] += 1
        return eval_(tokens)

    llm.eval = counted
    try:
        out = []
        start = time.perf_counter()
        for token in llm.generate(list(prompt), top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0,
                                  reset=True):
            if token == eos:
                out.append(token)
                break
            out.append(token)
            if len(out) >= max_new:
                break
        seconds = time.perf_counter() - start
    finally:
        llm.eval = eval_
    return {"tokens": out, "seconds": seconds, "calls": calls[0] - 1}


def main() -> None:
    from llama_cpp import Llama
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    request = json.load(open(sys.argv[1]))
    methods = {"greedy": None}
    if request.get("lookup"):
        methods[f"prompt lookup {request['lookup']}"] = request["lookup"]
    result = {}
    for name, lookup in methods.items():
        draft = LlamaPromptLookupDecoding(num_pred_tokens=lookup) if lookup else None
        llm = Llama(model_path=request["model"], n_ctx=2048, n_threads=request["threads"],
                    n_threads_batch=request["threads"], verbose=False, draft_model=draft, logits_all=draft is not None)
        run(llm, request["prompts"][0][:8], 4, request["eos"])  # warm-up
        result[name] = [[run(llm, p, request["max_new"], request["eos"]) for p in request["prompts"]]
                        for _ in range(request["repeats"])]
        del llm
    print(json.dumps(result))


if __name__ == "__main__":
    main()
