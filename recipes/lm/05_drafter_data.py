"""The drafter's data (issue 18): SmolLM2's greedy answers to chat prompts, with the final hidden state at every
position of prompt and answer (float16 shards), for training the feature-level drafter on cached features.

Resumable: one shard per batch under --out; a rerun skips the shards already written. Stop it any time.

    python recipes/lm/05_drafter_data.py --prompt-set chat --minutes 60    # data/lm/seq_chat (held-out: its shards 0-9)
    python recipes/lm/05_drafter_data.py --prompt-set chat2 --minutes 60   # data/lm/seq_chat2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import blockwise  # noqa: F401  before torch: importing blockwise sets OMP_WAIT_POLICY

import torch
from tqdm.auto import tqdm

from blockwise.tasks.hf import load_smollm2
from blockwise.tasks.llama import Llama, NativeLM
from blockwise.tasks.lm.distill import sequences_with_features, write_sequences
from blockwise.tasks.lm.prompts import build_chat_prompts, chat_ids


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompt-set", choices=["chat", "chat2"], default="chat",
                    help="chat: ~2,300 general chat requests (build_chat_prompts version 1); chat2: ~3,800 more from "
                         "other subjects and phrasings (version 2); neither holds a benchmark prompt")
    ap.add_argument("--out", default=None, help="shards folder (default data/lm/seq_<prompt set>)")
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--max-new", type=int, default=160)
    ap.add_argument("--minutes", type=float, default=60.0, help="stop after this much wall time")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="bfloat16 runs ~2.5x faster on CPUs with native bf16 (AVX512-BF16), slower without")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    exclude = [p["text"] for p in json.loads((Path(__file__).parent / "prompts.json").read_text())]
    if args.prompt_set == "chat2":
        exclude += [p["text"] for p in build_chat_prompts(10**6, args.seed)]
    prompts = build_chat_prompts(10**6, args.seed, exclude=exclude, version=2 if args.prompt_set == "chat2" else 1)
    tokenizer, hf = load_smollm2()
    model = NativeLM(Llama.from_hf(hf).cast(getattr(torch, args.dtype)))
    del hf
    ids = [chat_ids(tokenizer, p["text"]) for p in prompts]
    out = Path(args.out or f"data/lm/seq_{args.prompt_set}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    started, tokens = time.time(), 0
    bar = tqdm(range(len(ids) // args.batch), desc=f"sequences {args.prompt_set}", dynamic_ncols=True)
    for b in bar:
        path = out / f"shard_{b:05d}.safetensors"
        if path.exists():
            continue
        if time.time() - started > 60 * args.minutes:
            break
        rows = list(range(b * args.batch, (b + 1) * args.batch))
        seqs = sequences_with_features(model, [ids[r] for r in rows], args.max_new, tokenizer.eos_token_id)
        write_sequences(path, seqs, [prompts[r]["kind"] for r in rows])
        tokens += sum(len(t) - p for t, p, _ in seqs)
        bar.set_postfix(answer_tok_per_s=f"{tokens / (time.time() - started):.0f}", tokens=tokens)
    print(f"{tokens} answer tokens in {time.time() - started:.0f} s this run")


if __name__ == "__main__":
    main()
