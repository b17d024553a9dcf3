"""Export trained heads to a serving engine's format.

    blockwise export heads-dir --to vllm                      # the model named in the heads file
    blockwise export heads-dir --to vllm --model model.gguf --out served

--to vllm: residual heads become a Medusa folder (OUT/medusa) and, when the model is a GGUF file (or the built-in
SmolLM2), the model becomes a Hugging Face folder vLLM can load (OUT/base); OUT/serve.py serves the pair with vLLM's
Medusa speculative decoding. Only residual heads have a vLLM form (train them with `blockwise train-heads --kind
residual`): chained heads and the paper's layer are refused with the reason. vLLM proposes a top-1 chain from
Medusa heads over the whole vocabulary (its reduced-vocabulary token map does not load in vLLM 0.32).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli import UserError, command_parser, existing_file, load, run


def parse_args(argv=None) -> argparse.Namespace:
    ap = command_parser("export", __doc__)
    ap.add_argument("heads", metavar="HEADS", help="a heads folder or file from `blockwise train-heads`")
    ap.add_argument("--to", choices=["vllm"], required=True, help="the engine's format")
    ap.add_argument("--model", default=None, metavar="PATH",
                    help="the model the heads were trained for: a Hugging Face folder or GGUF file (default: the "
                         "one the heads file names)")
    ap.add_argument("--out", default=None, metavar="DIR", help="where to write (default: HEADS-vllm beside the heads)")
    return ap.parse_args(argv)


def export(args: argparse.Namespace) -> int:
    from .cli_generate import checked_model, load_model
    from .export.vllm import export_vllm, exportable
    from .lm import HeadsMismatch, check_heads
    from .tasks.hf import SMOLLM2_NAME, model_name
    from .tasks.lm.heads_io import heads_file, load_heads

    fix = "give a heads folder or file from `blockwise train-heads`"
    path = existing_file(heads_file(args.heads), "heads file", fix)
    heads, _ = load(load_heads, path, "heads file", fix)
    problem = exportable(heads.cfg.kind, heads.cfg.p1)
    if problem:
        raise UserError(f"{path}: {problem}")
    source = checked_model(args.model)
    if source is None:
        named = (heads.trained_for or {}).get("name", SMOLLM2_NAME)
        if named != SMOLLM2_NAME and not Path(named).exists():
            raise UserError(f"{path} was trained for {named}, which is not here: pass --model with its folder or file")
        source = None if named == SMOLLM2_NAME else named
    tokenizer, model = load_model(source)
    try:
        check_heads(heads, model, path)
    except HeadsMismatch as error:
        raise UserError(error) from None
    out = Path(args.out) if args.out else path.parent.with_name(path.parent.name + "-vllm")
    base_folder = source if source is not None and Path(source).is_dir() else None
    summary = export_vllm(heads, model, tokenizer, out, model_name(source), base_folder)
    print(f"Medusa heads for vLLM: {summary['medusa']}\nbase model folder: {summary['base']}\n"
          f"serve them: python {out / 'serve.py'}   (in an environment with vLLM; "
          f"num_speculative_tokens={summary['num_speculative_tokens']})")
    return 0


def main(argv=None) -> int:
    return run("export", export, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
