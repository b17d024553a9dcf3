"""The prompts of the drafter's data at scale (issue 18): instructions from the manual pages, the Python standard
library's docstrings and Debian's package descriptions (``build_doc_prompts``), the text set (``build_prompts``: the
Bible, Ding phrases, code, lists, stories) and both chat sets, tokenised with SmolLM2's chat template, in one shuffled
file for a generator that stops on time (``recipes/gpu/drafter.py``). None is a benchmark prompt. The held-out rows
come first and use templates no training row uses.

    python recipes/lm/09_drafter_prompts.py        # -> data/lm/drafter_v3/prompts.jsonl (needs recipes/lm/00_setup.sh)
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from blockwise.data.sources.debian import debian_descriptions
from blockwise.data.sources.ding import ding_phrases
from blockwise.data.sources.docs import man_pages, python_docs
from blockwise.data.sources.kjv import kjv_passages
from blockwise.tasks.hf import load_smollm2
from blockwise.tasks.lm.prompts import build_chat_prompts, build_doc_prompts, build_prompts, chat_ids


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/lm", help="where recipes/lm/00_setup.sh put the English text")
    ap.add_argument("--out", default="data/lm/drafter_v3/prompts.jsonl")
    ap.add_argument("--debian", type=int, default=16000, help="Debian descriptions used (of ~60k)")
    ap.add_argument("--text", type=int, default=12000, help="prompts of the text set (build_prompts)")
    ap.add_argument("--held-out", type=int, default=384, help="held-out rows (held-out templates only)")
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args(argv)
    data = Path(args.data)
    bench = [p["text"] for p in json.loads((Path(__file__).parent / "prompts.json").read_text())]
    descriptions = debian_descriptions(data / "apt" / "lists")
    rng = random.Random(args.seed)
    docs = build_doc_prompts(man_pages(), python_docs(), rng.sample(descriptions, args.debian), args.seed,
                             exclude=bench)
    held = [p for p in docs if p["held_out"]]
    held = rng.sample(held, min(args.held_out, len(held)))
    train = [p for p in docs if not p["held_out"]]
    passages = kjv_passages(next((data / "deb").rglob("engKJV2006eb")))
    text = build_prompts(descriptions, passages, ding_phrases(), args.text, args.seed)
    chat = build_chat_prompts(10**6, 1, exclude=bench)
    chat2 = build_chat_prompts(10**6, 1, exclude=bench + [p["text"] for p in chat], version=2)
    for p in text:
        p["template"] = "text_" + p["kind"]
    for p, v in [(p, 1) for p in chat] + [(p, 2) for p in chat2]:
        p["template"] = f"chat{v}_" + p["kind"]
    train += text + chat + chat2
    banned = {t.lower() for t in bench} | {p["text"].lower() for p in held}
    train = [p for p in dict((p["text"], p) for p in train).values() if p["text"].lower() not in banned]
    rng.shuffle(train)
    tokenizer, _ = load_smollm2()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as f:
        for p in held + train:
            f.write(json.dumps({"held_out": bool(p.get("held_out")), "kind": p["kind"], "template": p["template"],
                                "text": p["text"], "ids": chat_ids(tokenizer, p["text"])}) + "\n")
    kinds = {}
    for p in train:
        kinds[p["kind"]] = kinds.get(p["kind"], 0) + 1
    print(f"{len(held)} held-out + {len(train)} training prompts -> {out}; training kinds {kinds}")


if __name__ == "__main__":
    main()
