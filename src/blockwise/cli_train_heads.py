"""Train proposal heads for a causal LM of your own: its greedy answers to many prompts are the training data.

    blockwise train-heads path/to/hf-folder --out heads-dir                  # a Hugging Face folder
    blockwise train-heads model.gguf --out heads-dir --kind residual -k 5    # a GGUF file; Medusa-style heads
    blockwise train-heads --out heads-dir --data-minutes 5 --train-minutes 5 # SmolLM2, a quick trial
    blockwise generate "Explain DNS." --model path/to/hf-folder --heads heads-dir --compare
    blockwise export heads-dir --to vllm --model path/to/hf-folder

Two stages, each resumable (rerun the same command to continue): (1) data: the frozen model answers the prompts
greedily (batched, deduplicated; the built-in ~6,100 chat requests unless --prompts) and the final hidden state behind
every answer token is stored (float16 shards in OUT/data); (2) training: the heads learn to predict the model's next
tokens from those states (OUT/run: checkpoints, learning curve). OUT/heads.safetensors names the model by a content
fingerprint, so `generate` refuses it for any other model. Held-out agreement per head and the expected tokens per call
at each k are printed and kept in OUT/metrics.json. More data and time give better heads: the shipped SmolLM2 heads
saw ~0.9M answer tokens and ~1.8 hours of training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli import UserError, add_threads, at_least, command_parser, report, run

KINDS = {"chain": "each head also reads the token proposed before it (Hydra-style; the best measured here)",
         "residual": "Medusa-1's heads, h + SiLU(W h + b) per head: the kind `blockwise export --to vllm` can export",
         "paper": "the paper's multi-output layer (one hidden layer, a residual per head)"}


def parse_args(argv=None) -> argparse.Namespace:
    ap = command_parser("train-heads", __doc__)
    ap.add_argument("model", nargs="?", default=None, metavar="MODEL",
                    help="a local Hugging Face causal-LM folder or a GGUF file (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--out", required=True, metavar="DIR", help="the heads folder (data, run and heads.safetensors); "
                                                                "rerun with the same folder to resume")
    ap.add_argument("--kind", choices=list(KINDS), default="chain",
                    help="; ".join(f"{k}: {v}" for k, v in KINDS.items()) + " (default chain)")
    ap.add_argument("-k", "--k", dest="k", type=at_least(2), default=4, metavar="K",
                    help="heads p1..pK (p1 is the model itself, so K-1 are trained; default 4)")
    ap.add_argument("--d-hidden", type=at_least(1), default=512, metavar="N", help="the heads' hidden size (chain, "
                                                                                  "paper; default 512)")
    ap.add_argument("--proposal-vocab", type=at_least(0), default=4096, metavar="N",
                    help="p2..pK choose among the N tokens the model uses most in its answers (cheaper proposals on "
                         "the native path; 0: every token it used; default 4096)")
    ap.add_argument("--prompts", nargs="+", default=None, metavar="FILE",
                    help="prompt files: one prompt per line, or .jsonl with a \"text\" field (default: ~6,100 "
                         "built-in chat requests)")
    ap.add_argument("--raw", action="store_true", help="feed prompts as plain text to continue, without the chat "
                                                       "template (automatic when the tokenizer has none)")
    ap.add_argument("--data-minutes", type=at_least(0, float, strict=True), default=30.0, metavar="M",
                    help="stage 1 budget: stop generating after M minutes (default 30)")
    ap.add_argument("--train-minutes", type=at_least(0, float, strict=True), default=20.0, metavar="M",
                    help="stage 2 budget: the schedule's length from the measured speed (default 20)")
    ap.add_argument("--steps", type=at_least(1), default=None, metavar="N",
                    help="a fixed number of training steps instead of --train-minutes")
    ap.add_argument("--max-new-tokens", type=at_least(1), default=128, metavar="N",
                    help="answer length at most, per prompt (default 128)")
    ap.add_argument("--batch", type=at_least(1), default=16, metavar="N", help="prompts answered at once (default 16)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for training (faster on CPUs with native bf16)")
    add_threads(ap, None, "CPU threads (default: all)")
    return ap.parse_args(argv)


def summary(metrics: dict) -> str:
    """Held-out agreement per head and expected tokens per call at each k, as a small table."""
    top1, expected = metrics["top1"], metrics["expected_accepted"]
    lines = ["held-out    " + "  ".join(f"{name:>5}" for name in top1),
             "agreement   " + "  ".join(f"{v:5.3f}" for v in top1.values()),
             "E[tokens/call] at k = " + ", ".join(f"{k[1:]}: {v:.2f}" for k, v in expected.items())]
    return "\n".join(lines)


def train_heads(args: argparse.Namespace) -> int:
    import torch

    from .cli_generate import checked_model, load_model
    from .tasks.hf import model_name
    from .tasks.lm import train_heads as workflow
    from .tasks.lm.training import FitConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    args.model = checked_model(args.model)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: give a folder")
    prompts = None
    if args.prompts:
        try:
            prompts = workflow.read_prompts(args.prompts)
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise UserError(f"cannot read the prompts: {error}") from None
        if not prompts:
            raise UserError(f"no prompts in {', '.join(args.prompts)} (one per line)")
    tokenizer, model = load_model(args.model)
    name = model_name(args.model)
    chat = not args.raw and getattr(tokenizer, "chat_template", None) is not None
    if not args.raw and not chat:
        report("train-heads", f"{name}'s tokenizer has no chat template: prompts are fed as plain text", "warning")
    if getattr(model.config, "is_encoder_decoder", False):
        raise UserError(f"{name} is an encoder-decoder model: train-heads makes heads for decoder-only causal LMs")
    cfg = FitConfig(kind=args.kind, num_heads=args.k, d_hidden=args.d_hidden, proposal_vocab=args.proposal_vocab,
                    minutes=args.train_minutes, steps=args.steps or 0, bf16=args.bf16)
    try:
        metrics = workflow.train_heads(model, tokenizer, out, cfg, name, prompts or workflow.default_prompts(10 ** 6),
                                       chat=chat, data_minutes=args.data_minutes, max_new_tokens=args.max_new_tokens,
                                       batch=args.batch)
    except ValueError as error:
        raise UserError(error) from None
    print(summary(metrics))
    model_arg = "" if args.model is None else f" --model {args.model}"
    print(f"\nheads written to {out / 'heads.safetensors'}; try them:\n"
          f"  blockwise generate \"Explain what a compiler does.\"{model_arg} --heads {out} --compare")
    return 0


def main(argv=None) -> int:
    return run("train-heads", train_heads, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
