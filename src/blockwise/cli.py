"""The `blockwise` command: thin entry points over the library, one module per command.

    blockwise translate | generate | train-heads | export | upsample | demo [options]   (COMMAND --help: each)

Every command that decodes or trains takes ``-k/--k`` (block size: proposal heads used, or trained) and ``--threads``
(CPU threads).

Errors and exit status, the same for every command:

* 2: a user mistake, reported as ONE line on stderr, ``blockwise <command>: error: <what is wrong and how to fix it>``,
  never a traceback: a bad option or number, a missing, unreadable or mismatched model, heads or input file, input
  that is not UTF-8 text or not an image, a missing optional package. Argparse's own errors look and exit the same.
  Mistakes are found before any output file is written; lines already translated from earlier input stay printed.
* 1: the command ran to the end but part of its work failed (translate: a line it could not translate gets an empty
  output line and a warning); all other output was written.
* 130: interrupted (Ctrl-C); what was printed so far stays.

Warnings (the output is still produced) read ``blockwise <command>: warning: ...``.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path
from typing import Callable

# command -> (module whose main(argv) runs it, one-line help)
COMMANDS = {
    "translate": ("blockwise.cli_translate", "English -> German with a trained translation model (--compare: vs greedy)"),
    "generate": ("blockwise.cli_generate", "generate from a prompt with SmolLM2 (or --model) + proposal heads "
                 "(--compare: vs greedy)"),
    "train-heads": ("blockwise.cli_train_heads", "train proposal heads for a causal LM of your own (Hugging Face "
                    "folder or GGUF)"),
    "export": ("blockwise.cli_export", "export trained heads to a serving engine's format (vLLM: Medusa)"),
    "upsample": ("blockwise.cli_upsample", "super-resolve a PNG image pixel by pixel (exact, ε or ℓ acceptance)"),
    "demo": ("blockwise.cli", "train a small model on a real text for a minute; compare greedy and blockwise"),
}
EXTRAS = {"transformers": "hf", "gguf": "hf", "accelerate": "hf", "sentencepiece": "mt", "PIL": "sr"}  # import -> extra


class UserError(Exception):
    """A user mistake: reported as ``blockwise <command>: error: <message>``, exit status 2."""


# -- shared by every command ---------------------------------------------------------------------------------------
def command_parser(command: str, description: str | None) -> argparse.ArgumentParser:
    """The parser of ``blockwise <command>``: its prog names the command in --help and in every error."""
    return argparse.ArgumentParser(prog=f"blockwise {command}", description=description,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def at_least(low: float, kind: type = int, strict: bool = False) -> Callable[[str], float]:
    """An argparse type: a number of ``kind`` that is >= low (> low if strict)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if not (value > low if strict else value >= low):  # `not`: also rejects nan
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low}, got {text}")
        return value
    return parse


def k_or_auto(text: str) -> int | str:
    """An argparse type: "auto" (the block size chosen at every step from measured costs) or a number >= 1."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return at_least(1)(text)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"{error}: give a block size >= 1, or auto") from None


def add_k(parser: argparse.ArgumentParser, default: int | str | None, help: str) -> None:
    parser.add_argument("-k", "--k", dest="k", type=k_or_auto, default=default, metavar="K", help=help)


K_AUTO_HELP = ("auto (default): chosen at every step, 1 (greedy) to all heads, for the most tokens per second from "
               "this machine's measured cost of a call (measured once, a few seconds, then cached in "
               "~/.cache/blockwise) and the acceptance seen so far; never slower than greedy by more than the probes")


def chosen_ks(stats, tree=None) -> str:
    """'k=1 ×12, k=3 ×40' (k=auto): how often each block size was chosen; 'nodes=1 ×3, nodes=16 ×40' with a tree."""
    from .eval.records import format_k_chosen

    text = format_k_chosen(stats.k_chosen)
    return text if tree is None else text.replace("k=", "nodes=")


WEIGHTS_HELP = ("int8 / int4: the matrices quantized (int8: per output channel, each product's input rows rounded to "
                "8 bits, Llama models SmoothQuant-calibrated first; int4: weight-only, in groups of 32 inputs "
                "with a scale and a zero, as llama.cpp's Q4_1), the rest float32: a slightly different model whose own "
                "greedy output blockwise decoding gives exactly")


def add_weights(parser: argparse.ArgumentParser, default: str, help: str) -> None:
    """--weights: the precision the model decodes with (``model.quant.WEIGHTS``, or "auto" where the default is)."""
    from .model.quant import WEIGHTS

    choices = (("auto",) if default == "auto" else ()) + WEIGHTS
    parser.add_argument("--weights", choices=choices, default=default, help=f"{help}; {WEIGHTS_HELP}")


def with_weights(model, weights: str, what: str):
    """``model.with_weights(weights)``, a UserError where this model cannot have them (int4 shapes)."""
    if weights == "float32" and getattr(model, "weights", "float32") == "float32":
        return model
    try:
        return model.with_weights(weights)
    except ValueError as error:
        raise UserError(f"{what}: {error}; use --weights int8 or float32") from None


def add_tree(parser: argparse.ArgumentParser, default: str = "chain", nodes: int = 32) -> None:
    parser.add_argument("--tree", choices=["chain", "dynamic"], default=default,
                        help=f"what one call verifies: chain = a block of k proposals (one per head); dynamic = a tree "
                             f"of candidates grown at every step from the heads' top tokens (several guesses per "
                             f"position, EAGLE-2 style; the chain of best guesses is always in it). Same output either "
                             f"way (default {default})")
    parser.add_argument("--nodes", type=at_least(2), default=nodes, metavar="N",
                        help=f"--tree dynamic: tokens fed per call at most (default {nodes}); with -k auto each "
                             f"step's budget, 1 (greedy) to N, is chosen from this machine's measured cost of a call")
    parser.add_argument("--branch", type=at_least(1), default=4, metavar="T",
                        help="--tree dynamic: the guesses tried after each expanded node (its head's T most likely "
                             "tokens; T nodes expanded per depth). Wider trees accept more per call and cost more "
                             "to draft (default 4)")


def add_lookup(parser: argparse.ArgumentParser, default: int) -> None:
    parser.add_argument("--lookup", type=at_least(0), default=default, metavar="N",
                        help=f"also verify, in the same call, up to N tokens copied from the text so far: what "
                             f"followed the last 3 (2, 1) tokens where they occurred before in the prompt or the "
                             f"answer (prompt lookup; pays off on code, lists, quotes). Exact like the heads' "
                             f"proposals; with -k auto a copy is fed only where its measured gain pays for the longer "
                             f"call. 0: off. Greedy decoding only, not with --temperature (default {default})")


def make_lookup(args: argparse.Namespace):
    """The ``Lookup`` of --lookup N, or None (0, or sampling: copies are drafts without a distribution)."""
    if not args.lookup or getattr(args, "temperature", 0.0) > 0:
        return None
    from .decoding.lookup import Lookup

    return Lookup(tokens=args.lookup)


def make_tree(args: argparse.Namespace, num_heads: int):
    """The ``DynamicTree`` of --tree dynamic (depth: k - 1, or every head with -k auto), or None for a chain."""
    if args.tree == "chain":
        return None
    from .decoding.tree import DynamicTree

    k = num_heads if args.k == "auto" else args.k
    return DynamicTree(args.nodes, k - 1, top=args.branch)


def add_sampling(parser: argparse.ArgumentParser) -> None:
    """--temperature, --top-k, --top-p, --seed and --typical: sampling instead of greedy decoding."""
    group = parser.add_argument_group("sampling (temperature > 0; the output is distributed exactly as plain sampling "
                                      "from the model is, by speculative sampling)")
    group.add_argument("--temperature", type=at_least(0.0, float), default=0.0, metavar="T",
                       help="0 (default): greedy decoding; > 0: sample from softmax(logits / T)")
    group.add_argument("--top-k", type=at_least(0), default=0, metavar="K",
                       help="sample among the K most likely tokens only (default 0: all)")
    group.add_argument("--top-p", type=unit_interval, default=1.0, metavar="P",
                       help="sample among the most likely tokens holding P of the probability (default 1: all)")
    group.add_argument("--seed", type=int, default=0, help="random seed: the same seed, prompt and -k give the same "
                                                          "output (default 0)")
    group.add_argument("--typical", type=unit_interval, default=None, metavar="EPS",
                       help="Medusa's typical acceptance with threshold EPS (e.g. 0.09) instead of exact speculative "
                            "sampling: accepts more, but the output is NOT distributed as the model's samples (lossy)")


def unit_interval(text: str) -> float:
    """An argparse type: a number in (0, 1]."""
    value = at_least(0.0, float, strict=True)(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be at most 1, got {text}")
    return value


def sampling_from(args: argparse.Namespace):
    """The ``decoding.Sampling`` the flags ask for, or None for greedy decoding (temperature 0)."""
    sampler_flags = args.top_k or args.top_p < 1 or args.typical is not None
    if args.temperature == 0:
        if sampler_flags:
            raise UserError("--top-k, --top-p and --typical shape sampling: give --temperature > 0 too (e.g. 0.7)")
        return None
    if args.typical is not None and args.typical >= 1:
        raise UserError(f"--typical must be below 1, got {args.typical}")
    from .decoding import Sampling

    return Sampling(args.temperature, args.top_k, args.top_p, args.seed, args.typical)


def add_threads(parser: argparse.ArgumentParser, default: int | None, help: str) -> None:
    parser.add_argument("--threads", type=at_least(1), default=default, metavar="N", help=help)


def report(command: str, message: object, kind: str = "error") -> None:
    print(f"blockwise {command}: {kind}: {message}", file=sys.stderr)


def run(command: str, body: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``body(args)``, with user mistakes reported in one line (exit status 2) and Ctrl-C as status 130."""
    try:
        return body(args)
    except UserError as error:
        report(command, error)
        return 2
    except ModuleNotFoundError as error:
        extra = EXTRAS.get((error.name or "").split(".")[0])
        if extra is None:
            raise
        report(command, f"the Python package {error.name!r} is not installed: pip install 'blockwise[{extra}]'")
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`blockwise translate ... | head`): not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's exit flush must not raise again
        return 0


def existing_file(path: str | Path, what: str, fix: str) -> Path:
    """``path`` as a Path if it is a file; else a UserError saying what is missing and ``fix``."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder, not {'an' if what[0] in 'aeiou' else 'a'} {what}: {fix}")
    if not path.exists():
        raise UserError(f"no {what} at {path}: {fix}")
    return path


def load(loader: Callable, path: str | Path, what: str, fix: str):
    """``loader(path)``; a file it cannot use (corrupt, wrong format or shape) is reported as a UserError."""
    from safetensors import SafetensorError

    try:
        return loader(path)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as error:
        reason = re.sub(r"\s+", " ", str(error)).strip()
        reason = reason if len(reason) <= 160 else reason[:157] + "..."
        raise UserError(f"{path} is not a usable {what} ({type(error).__name__}: {reason}): {fix}") from None


# -- blockwise demo ------------------------------------------------------------------------------------------------
DEMO = """Train a character-level Transformer with proposal heads on a real text (the GPL-3 from
/usr/share/common-licenses by default), then decode a prompt greedily and blockwise: both outputs, mean accepted
block size, speedup."""


def demo_parser() -> argparse.ArgumentParser:
    p = command_parser("demo", DEMO)
    p.add_argument("--text", help="a UTF-8 text file of at least 1,000 characters to train on (default: a licence "
                                  "text on this machine)")
    p.add_argument("--prompt", help="prompt to continue (default: the text's first 40 characters)")
    add_k(p, 6, "proposal heads / maximum block size (default 6)")
    p.add_argument("--seconds", type=at_least(0, float, strict=True), default=60.0,
                   help="training time budget in seconds (default 60)")
    p.add_argument("--max-new-tokens", type=at_least(1), default=150, metavar="N",
                   help="characters to generate (default 150)")
    add_threads(p, None, "CPU threads for training (default: PyTorch's, one per core); decoding always uses one "
                         "(this model is too small to gain from more)")
    return p


def demo(args: argparse.Namespace) -> int:
    from .config import PRESETS

    text = None
    if args.text:
        path = existing_file(args.text, "text file", "pass --text with a UTF-8 text file, or leave it out")
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as error:
            raise UserError(f"cannot read {path}: {error.strerror}") from None
        if len(text) < 1000:
            raise UserError(f"{path} has {len(text)} characters; give at least 1,000")
    positions = PRESETS["small"].max_positions  # the demo model's
    prompt = len(args.prompt) if args.prompt else 40
    if 1 + prompt + args.max_new_tokens + args.k - 1 > positions:
        raise UserError(f"the prompt ({prompt} characters) + --max-new-tokens {args.max_new_tokens} + k-1 exceed "
                        f"the demo model's {positions} positions: lower --max-new-tokens or -k, or shorten --prompt")
    import torch

    from .tasks.demo import default_text, run as run_demo

    if text is None:
        try:
            default_text()
        except FileNotFoundError as error:
            raise UserError(error) from None
    if args.threads:
        torch.set_num_threads(args.threads)
    run_demo(text=text, prompt=args.prompt, k=args.k, seconds=args.seconds, max_new_tokens=args.max_new_tokens)
    return 0


def demo_main(argv: list[str] | None = None) -> int:
    return run("demo", demo, demo_parser().parse_args(argv))


# -- blockwise ------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        command = argv[0]
        entry = demo_main if command == "demo" else importlib.import_module(COMMANDS[command][0]).main
        return entry(argv[1:])
    parser = argparse.ArgumentParser(
        prog="blockwise", description="Blockwise parallel decoding (Stern, Shazeer & Uszkoreit 2018): k proposal "
        "heads guess the next k tokens, one model call verifies them, the longest verified prefix is kept. "
        "Errors: exit status 2 for a mistake in the command or its files, 1 when part of a run failed.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)  # listed in --help; parsed by the command itself
    parser.parse_args(argv)  # --help, or an unknown command: argparse prints and exits
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
