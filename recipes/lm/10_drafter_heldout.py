"""Held-out agreement of drafters on the CPU, with the base's states computed here by our own model (issue 18).

The held-out rows of ``recipes/lm/09_drafter_prompts.py`` use templates no training prompt uses; their answers come
from ``recipes/gpu/drafter.py`` (answers.npz). Each drafter file is judged as decoding drafts: the feature-level
drafter by ``chain_agreement`` (chains through its own cache), one-state heads by ``training.agreement``. Prints and
writes JSON: per-depth agreement p2..pk and the expected accepted block E[k̂] at k = 1..k.

    python recipes/lm/10_drafter_heldout.py --drafters runs/lm/drafter4/heads.safetensors src/blockwise/assets/smollm2-135m-heads.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import blockwise  # noqa: F401  before torch: importing blockwise sets OMP_WAIT_POLICY

import numpy as np
import torch


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", default="data/lm/drafter_v3/prompts.npz")
    ap.add_argument("--answers", default="runs/lm/drafter_gpu2/answers.npz")
    ap.add_argument("--drafters", nargs="+", required=True, help="heads files to judge")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=384, help="held-out answers judged")
    ap.add_argument("--out", default=None, help="JSON file for the results")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from blockwise.tasks.hf import load_smollm2
    from blockwise.tasks.llama import Llama, NativeLM
    from blockwise.tasks.lm import drafter as dt
    from blockwise.tasks.lm import heads_io, training

    z, a = np.load(args.prompts), np.load(args.answers)
    prompts, held = dt.split_rows(z["ids"], z["lengths"]), z["held_out"]
    answers = dict(zip(a["rows"].tolist(), dt.split_rows(a["ids"], a["lengths"])))
    rows = [r for r in sorted(answers) if held[r]][: args.rows]
    seqs = [prompts[r] + answers[r] for r in rows]
    _, hf = load_smollm2()
    weight = hf.get_output_embeddings().weight.detach().clone()
    embed = torch.nn.Embedding.from_pretrained(hf.get_input_embeddings().weight.detach().clone())
    model = NativeLM(Llama.from_hf(hf).cast(getattr(torch, args.dtype)))
    del hf
    hidden = []
    with torch.no_grad():
        for s in range(0, len(seqs), 16):
            part = seqs[s: s + 16]
            width = max(len(q) for q in part)
            h = model.base(torch.tensor([q + [0] * (width - len(q)) for q in part]))  # right-padded: causal
            hidden += [h[i, : len(q) - 1].to(torch.float16) for i, q in enumerate(part)]
    data = dt.Sequences([torch.tensor(q) for q in seqs], hidden, [len(prompts[r]) for r in rows])
    print(f"{len(rows)} held-out answers, {data.answer_positions()} answer tokens, states from our {args.dtype} model")
    results = {"rows": len(rows), "answer_tokens": data.answer_positions(), "dtype": args.dtype, "drafters": {}}
    for path in args.drafters:
        heads, vocab = heads_io.load_heads(path)
        if heads.cfg.kind == "feature":
            heads.bind(embed, dt.restricted_projection(weight, vocab))
            m = dt.chain_agreement(heads.eval(), data, list(range(len(rows))), heads.num_heads)
        else:
            heads.bind(embed)
            m = training.agreement(heads, weight, dt.answers_only(data, range(len(rows))),
                                   torch.arange(data.answer_positions()), proposal_vocab=vocab)
        results["drafters"][path] = {"kind": heads.cfg.kind, **m}
        print(path, json.dumps(m))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
