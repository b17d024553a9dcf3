"""The `blockwise` command: thin entry points over the library."""

from __future__ import annotations

import argparse
import os
import sys


def _demo(args: argparse.Namespace) -> int:
    from .tasks.demo import run

    text = None
    if args.text:
        try:
            text = open(args.text, encoding="utf-8", errors="replace").read()
        except OSError as error:
            print(f"blockwise demo: cannot read {args.text}: {error.strerror}", file=sys.stderr)
            return 2
        if len(text) < 1000:
            print(f"blockwise demo: {args.text} has {len(text)} characters; give at least 1,000", file=sys.stderr)
            return 2
    run(text=text, prompt=args.prompt, k=args.k, seconds=args.seconds, max_new_tokens=args.max_new_tokens)
    return 0


# Commands whose arguments are parsed by their own module: name -> (module, one-line help)
DELEGATED = {
    "translate": ("blockwise.cli_translate", "English -> German with a trained translation model (--compare: vs greedy)"),
    "generate": ("blockwise.cli_generate", "generate from a prompt with SmolLM2 + proposal heads (--compare: vs greedy)"),
    "upsample": ("blockwise.cli_upsample", "super-resolve a PNG image pixel by pixel (exact, ε or ℓ acceptance)"),
}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads must not spin on 2 shared cores
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in DELEGATED:
        import importlib

        try:
            module = importlib.import_module(DELEGATED[argv[0]][0])
        except ImportError as error:
            print(f"blockwise {argv[0]}: not available in this installation ({error}); install the matching extra, "
                  f"e.g. pip install -e '.[hf]' for generate or '.[sr]' for upsample", file=sys.stderr)
            return 2
        return module.main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="blockwise",
        description="Blockwise parallel decoding (Stern, Shazeer & Uszkoreit 2018): k proposal heads guess the next "
                    "k tokens, one model call verifies them, the longest verified prefix is kept.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="train a small model on a real text for a minute; compare greedy and blockwise",
                          description="Train a character-level Transformer with proposal heads on a real text (the "
                                      "GPL-3 from /usr/share/common-licenses by default), then decode a prompt "
                                      "greedily and blockwise: both outputs, mean accepted block size, speedup.")
    demo.add_argument("--text", help="a UTF-8 text file to train on (default: a licence text on this machine)")
    demo.add_argument("--prompt", help="prompt to continue (default: the text's first 40 characters)")
    demo.add_argument("-k", type=int, default=6, help="proposal heads / maximum block size (default 6)")
    demo.add_argument("--seconds", type=float, default=60.0, help="training time budget (default 60)")
    demo.add_argument("--max-new-tokens", type=int, default=150, help="characters to generate (default 150)")
    demo.set_defaults(func=_demo)
    for name, (_, help_text) in DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False)  # listed in --help; parsed by its own module
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if getattr(args, "k", 1) < 1:
        parser.error("-k must be >= 1")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
