"""Self-distillation data: SmolLM2's own greedy answers to varied instruction prompts, with final hidden states.

Resumable: one shard per batch under --out; a rerun skips the shards already written. Stop it any time.

    python recipes/lm/01_generate_data.py --minutes 50
    python recipes/lm/01_generate_data.py --prompt-set chat --dtype bfloat16 --minutes 45   # general chat requests
    python recipes/lm/01_generate_data.py --prompt-set chat2 --dtype bfloat16 --minutes 45  # ~3,800 more, other lists
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import blockwise  # noqa: F401  before torch: importing blockwise sets OMP_WAIT_POLICY

import torch

from blockwise.data.sources.debian import debian_descriptions
from blockwise.data.sources.ding import ding_phrases
from blockwise.data.sources.kjv import kjv_passages
from blockwise.tasks.lm.distill import generate_shards
from blockwise.tasks.lm.prompts import build_chat_prompts, build_prompts, chat_ids
from blockwise.tasks.hf import load_smollm2
from blockwise.tasks.llama import Llama, NativeLM


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/lm", help="where recipes/lm/00_setup.sh put the English text")
    ap.add_argument("--out", default=None, help="shards folder (default data/lm/distill, data/lm/distill_chat or "
                    "data/lm/distill_chat2)")
    ap.add_argument("--prompt-set", choices=["text", "chat", "chat2"], default="text",
                    help="text: instructions built from Debian descriptions, the Bible and Ding phrases (needs "
                         "recipes/lm/00_setup.sh); chat: ~2,300 general chat requests from word lists (how-to, "
                         "explanations, stories, code, lists), none of them a benchmark prompt; chat2: ~3,800 more from other "
                         "subjects and phrasings, none of them a chat or benchmark prompt")
    ap.add_argument("--prompts", type=int, default=20000, help="prompt pool size (generation stops earlier on time)")
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--max-new", type=int, default=160)
    ap.add_argument("--minutes", type=float, default=50.0, help="stop after this much wall time")
    ap.add_argument("--max-shards", type=int, default=0, help="stop once shards 0..N-1 exist (a data set of a stated "
                    "size whatever the machine's speed; 0: no limit but the prompts and --minutes)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="bfloat16 runs ~2.5x faster on CPUs with AVX512-BF16; its greedy answers differ from float32's "
                         "only after rare near-ties, which is fine for training targets")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.prompt_set in ("chat", "chat2"):
        exclude = [p["text"] for p in json.loads((Path(__file__).parent / "prompts.json").read_text())]
        if args.prompt_set == "chat2":  # nor any prompt of the first set
            exclude += [p["text"] for p in build_chat_prompts(10**6, args.seed)]
        prompts = build_chat_prompts(args.prompts, args.seed, exclude=exclude,
                                              version=2 if args.prompt_set == "chat2" else 1)
        print(f"{len(prompts)} chat prompts")
    else:
        data = Path(args.data)
        descriptions = debian_descriptions(data / "apt" / "lists")
        passages = kjv_passages(next((data / "deb").rglob("engKJV2006eb")))
        phrases = ding_phrases()
        print(f"text: {len(descriptions)} package descriptions, {len(passages)} KJV passages, {len(phrases)} Ding "
              "phrases")
        prompts = build_prompts(descriptions, passages, phrases, args.prompts, args.seed)
    tokenizer, hf = load_smollm2()
    model = NativeLM(Llama.from_hf(hf).cast(getattr(torch, args.dtype)))
    del hf
    ids = [chat_ids(tokenizer, p["text"]) for p in prompts]
    default_out = {"text": "data/lm/distill", "chat": "data/lm/distill_chat", "chat2": "data/lm/distill_chat2"}
    out = Path(args.out or default_out[args.prompt_set])
    out.mkdir(parents=True, exist_ok=True)
    (out / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    started = time.time()
    n = len(ids) // args.batch * args.batch  # whole batches only (as the recorded data sets were made)
    tokens = generate_shards(model, ids[:n], [p["kind"] for p in prompts[:n]], out, args.batch, args.max_new,
                             tokenizer.eos_token_id, minutes=args.minutes, max_shards=args.max_shards)
    print(f"{tokens} answer tokens in {time.time() - started:.0f} s this run")

if __name__ == "__main__":
    main()
