"""How often a chain copied from the text (decoding/lookup.py) would be right, on our greedy answers to the benchmark
prompts (SmolLM2, bf16, one thread): at every step of a lookup-only decode (root = the next greedy token), the
continuation after the last 3..``min_ngram`` tokens' latest earlier occurrence is compared with what greedy produced
next. Prints the share of steps with at least one right copied token and the tokens per call a lookup-only decode
would accept. A probe, not a benchmark (no timing).

    python recipes/lm/probes/lookup_gain.py --max-new 128
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from blockwise import greedy  # before torch: importing blockwise sets OMP_WAIT_POLICY
from blockwise.decoding.lookup import Lookup
from blockwise.lm import decoding_model
from blockwise.tasks.hf import load_smollm2
from blockwise.tasks.lm.prompts import chat_ids

import torch

HERE = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-new", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=7, help="tokens copied per step")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    tokenizer, hf = load_smollm2()
    lm = decoding_model(hf, None, None, "bfloat16", tokenizer)
    prompts = [chat_ids(tokenizer, p["text"]) for p in json.loads((HERE / "prompts.json").read_text())]
    answers = [greedy(lm, [p], args.max_new, eos_id=tokenizer.eos_token_id).tokens[0] for p in prompts]
    for min_ngram in (1, 2):
        lookup = Lookup(tokens=args.tokens, min_ngram=min_ngram)
        steps = hits = 0
        for prompt, answer in zip(prompts, answers):
            i = 0
            while i < len(answer):
                chain = lookup.propose(prompt + answer[:i + 1])
                right = 0
                while right < len(chain) and i + 1 + right < len(answer) and chain[right] == answer[i + 1 + right]:
                    right += 1
                steps, hits, i = steps + 1, hits + (right > 0), i + 1 + right
        tokens = sum(map(len, answers))
        print(f"{min_ngram}..3-grams: {hits / steps:.1%} of steps copy at least one right token; lookup alone would "
              f"accept {tokens / steps:.2f} tokens per call ({len(answers)} answers, {tokens} tokens)")


if __name__ == "__main__":
    main()
