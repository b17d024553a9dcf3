"""`blockwise translate`: English → German with the shipped translation model (or any trained one).

    blockwise translate "The package provides a command-line tool."
    blockwise translate --file notes.txt --compare
    blockwise translate "The weather is nice today." --temperature 0.8 --seed 3   # sample a translation

Input: the arguments, else a file (--file), else standard input; one output line per input line, in order, streamed
in small batches. Input-line policy: an empty line gives an empty line; a line longer than the model's source limit is
split at sentence ends and the pieces translated and joined (a single over-long sentence is truncated, with a warning
on stderr); control characters are removed. Input must be UTF-8 text: a --file that is not is refused before anything
is translated; on standard input the first line that is not stops the command after the lines before it are printed
(exit status 2). A line that fails to translate gives an empty output line and a warning: it never stops the rest of
the file, and the exit status is then 1.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
from pathlib import Path
from typing import Iterable, Iterator

from .cli import (K_AUTO_HELP, UserError, add_k, add_sampling, add_threads, add_tree, add_weights, at_least,
                  chosen_ks, command_parser, existing_file, load, make_tree, report, run, sampling_from, with_weights)

ASSETS = Path(__file__).parent / "assets"
DEFAULT_MODEL = ASSETS / "mt_both.safetensors"
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
MODEL_FIX = "pass --model with a checkpoint trained by recipes/mt/ (see README), or leave --model out"
UTF8_FIX = "convert it to UTF-8 first, e.g. iconv -f latin1 -t utf-8"


def parse_args(argv):
    p = command_parser("translate", __doc__)
    p.add_argument("text", nargs="*", help="English sentences to translate (default: read --file or stdin)")
    p.add_argument("--file", help="translate this UTF-8 file line by line")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="a blockwise translation checkpoint (.safetensors); "
                   "its sentencepiece model must lie beside it as <name>.spm.model or spm.model (default: the shipped "
                   "English-German model)")
    add_k(p, "auto", "block size: heads p1..pk used, 1 (greedy) to all the model's heads, or " + K_AUTO_HELP)
    add_tree(p)
    add_weights(p, "float32", "weight precision (default float32)")
    p.add_argument("--accept", choices=["exact", "top2", "top3"], default="exact",
                   help="exact (= greedy output, default) or approximate top-2/top-3 acceptance")
    p.add_argument("--batch-size", type=at_least(1), default=16, help="lines decoded together (default 16)")
    p.add_argument("--compare", action="store_true", help="also decode greedily (plain sampling with --temperature); "
                                                          "print both outputs and times (after an untimed warm-up; a "
                                                          "batch that decodes in under 0.5 s is timed 5 times, "
                                                          "medians)")
    add_threads(p, min(2, os.cpu_count() or 1), "CPU threads (default 2, or 1 on a one-core machine)")
    add_sampling(p)
    return p.parse_args(argv)


def find_spm(model_path: Path) -> Path:
    for cand in (model_path.with_suffix(".spm.model"), model_path.parent / "spm.model"):
        if cand.exists():
            return cand
    raise UserError(f"no sentencepiece model beside {model_path} (looked for "
                    f"{model_path.with_suffix('.spm.model').name} and spm.model): {MODEL_FIX}")


def load_translator(path: str):
    """(model, corpus) from a checkpoint and the sentencepiece model beside it, checked to belong together."""
    from .model import BlockwiseModel
    from .tasks.translation import Corpus

    path = existing_file(path, "translation model", MODEL_FIX)
    spm_path = find_spm(path)
    model = load(BlockwiseModel.load, path, "blockwise checkpoint", MODEL_FIX)
    if model.cfg.n_encoder_layers == 0:
        raise UserError(f"{path} is a decoder-only model, not a translation (encoder-decoder) model: {MODEL_FIX}")
    corpus = load(Corpus.from_spm, spm_path, "sentencepiece model", MODEL_FIX)
    if corpus.vocab_size > model.cfg.vocab_size:
        raise UserError(f"{spm_path} has {corpus.vocab_size} pieces but {path} only {model.cfg.vocab_size}: they "
                        f"were not trained together; {MODEL_FIX}")
    return model, corpus


def check_utf8(path: Path) -> None:
    try:
        with open(path, "rb") as f:
            for n, raw in enumerate(f, 1):  # a UTF-8 character never contains the byte \n: lines decode alone
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise UserError(f"{path} is not UTF-8 text (line {n}, byte 0x{raw[error.start]:02x}): "
                                    f"{UTF8_FIX} {path}") from None
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror}") from None


def read_lines(args) -> Iterator[str]:
    if args.text:
        yield from args.text
    elif args.file:
        with open(args.file, encoding="utf-8") as f:  # checked by check_utf8
            for line in f:
                yield line.rstrip("\n")
    elif not hasattr(sys.stdin, "buffer"):  # already text (a test's StringIO)
        for line in sys.stdin:
            yield line.rstrip("\n")
    else:
        for n, raw in enumerate(sys.stdin.buffer, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise UserError(f"standard input line {n} is not UTF-8 text (the lines before it were translated): "
                                f"{UTF8_FIX}") from None
            yield line.rstrip("\r\n")


def batched(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    batch = []
    try:
        for line in lines:
            batch.append(line)
            if len(batch) == size or sys.stdin.isatty():
                yield batch
                batch = []
    except UserError:  # unreadable input: the lines read before it are still translated
        if batch:
            yield batch
        raise
    if batch:
        yield batch


class Translator:
    """Translates batches of input lines and prints one output line per input line (two with --compare)."""

    def __init__(self, model, corpus, k: int, args) -> None:
        from .decoding import Acceptance

        self.model, self.corpus, self.k, self.args = model, corpus, k, args
        self.tree = make_tree(args, model.num_heads)
        self.accept = {"exact": Acceptance(), "top2": Acceptance("top_k", top_k=2),
                       "top3": Acceptance("top_k", top_k=3)}[args.accept]
        self.limit = model.cfg.max_positions // 2 - 1  # source tokens the model reads; translate() cuts the rest
        self.sampling = sampling_from(args)
        self.compared = 0  # batches compared so far
        self.policy = None  # k = auto: the block-size policy, kept from batch to batch (and the warm-up)
        if self.sampling is not None and args.accept != "exact":
            raise UserError("--accept top2/top3 is for greedy decoding: sampling keeps the model's distribution "
                            "exactly (leave out --accept, or --temperature)")
        if self.sampling is not None and self.sampling.typical is not None and args.tree != "chain":
            raise UserError("--typical works on blocks (--tree chain): leave out --typical or --tree")

    def warm_up(self) -> None:
        """Decode a short sentence both ways, untimed, before the first --compare: one-time costs (the packed output
        projection, oneDNN's kernel set-up, the allocator's first growth) otherwise land in whichever decoder runs first
        (blockwise, in the first batch) and bend a figure of ~0.1 s per line."""
        warm = [["The weather is nice today."]]
        self.by_line("greedy", warm)
        self.by_line("blockwise", warm)

    def retime(self, lines: list[list[str]], first: int, slow, fast, rounds: int = 5, short: float = 2.0):
        """--compare on a short batch (both runs under ``short`` seconds together): each decoder's time is the median
        of ``rounds`` runs, the order alternating. A line or two takes ~0.1 s here, and the machine's noise alone
        moved the printed speedup of one line between 0.69x and 1.12x; 40 lines in one batch (~0.4 s each way) printed
        0.83-0.96x in six runs where the decoders, timed alternately in one process, were 0.99x apart: the decoder
        that runs first at a new batch shape pays for its first memory. A longer batch keeps its one run each."""
        from dataclasses import replace

        times = {"greedy": [slow.seconds], "blockwise": [fast.seconds]}
        while len(times["greedy"]) < rounds and slow.seconds + fast.seconds < short:
            order = ["greedy", "blockwise"] if len(times["greedy"]) % 2 else ["blockwise", "greedy"]
            for method in order:
                times[method].append(self.by_line(method, lines, first)[1].seconds)
        if len(times["greedy"]) == 1:
            return slow, fast
        return replace(slow, seconds=statistics.median(times["greedy"])), \
            replace(fast, seconds=statistics.median(times["blockwise"]))

    def sentences(self, raw: str, number: int) -> list[str]:
        """The sentences of input line ``number`` to translate (none for an empty line)."""
        line = CONTROL.sub(" ", raw).strip()
        parts = [p for p in SENTENCE_END.split(line) if p] if line else []
        for part in parts:
            n = len(self.corpus.encode([part])[0])
            if n > self.limit:
                report("translate", f"line {number}: a sentence of {n} tokens was truncated to the model's limit of "
                                    f"{self.limit}; split it into shorter sentences", "warning")
        return parts

    def by_line(self, method: str, lines: list[list[str]], first: int = 1):
        """(one output line per input line, the translate() result) for the sentences of ``lines``, "greedy" or
        "blockwise" (with this translator's k, acceptance rule and tree); with sampling,
        sentence j of input line n draws from the stream of (--seed, n, j): the same run again gives the same output
        (other batch sizes can differ through the batch's length limit, see ``translate``)."""
        from dataclasses import replace

        from .tasks.translation import translate

        pieces = [part for line in lines for part in line]
        kw = {"k": self.k, "accept": self.accept, "tree": self.tree, "policy": self.policy} \
            if method == "blockwise" else {}
        if self.sampling is not None:
            seeds = [(self.args.seed * 1_000_003 + first + n) * 1_009 + j
                     for n, line in enumerate(lines) for j in range(len(line))]
            kw["sampling"] = replace(self.sampling, seed=tuple(seeds))
        result = translate(self.model, self.corpus, pieces, method, batch_size=self.args.batch_size, **kw)
        if method == "blockwise":  # k = auto: one policy for the whole input, what it learned carries over
            self.policy = result.policy
        hyps = iter(result.hypotheses)
        return [" ".join(next(hyps) for _ in line) for line in lines], result

    def __call__(self, batch: list[str], first: int) -> int:
        """Translate and print ``batch`` (``first``: its first line's number); returns how many lines failed."""
        return self.emit([self.sentences(raw, first + i) for i, raw in enumerate(batch)], first)

    def emit(self, lines: list[list[str]], first: int) -> int:
        out, compare = [""] * len(lines), self.args.compare and any(lines)
        greedy_first = compare and self.compared % 2 == 1  # alternate which runs first: neither always pays for it
        try:
            if greedy_first:
                slow_out, slow = self.by_line("greedy", lines, first)
            if any(lines):
                out, fast = self.by_line("blockwise", lines, first)
            if compare and not greedy_first:
                slow_out, slow = self.by_line("greedy", lines, first)
            if compare:
                slow, fast = self.retime(lines, first, slow, fast)
        except Exception as error:  # one bad line must not stop the file, nor empty the good lines of its batch
            if len(lines) > 1:
                return sum(self.emit([line], first + i) for i, line in enumerate(lines))
            report("translate", f"line {first}: not translated ({error}); its output line is empty", "warning")
            print("")
            return 1
        if compare:
            self.compared += 1
            name = "greedy" if self.sampling is None else "sampled"
            for greedy_line, line in zip(slow_out, out):
                print(f"{name + ':':<10} {greedy_line}\nblockwise: {line}")
            k = f"k=auto: {chosen_ks(fast.stats, self.tree)}" if self.k == "auto" else f"k={self.k}"
            k += f", {self.tree.describe()}" if self.tree is not None else ""
            if self.sampling is None:
                verdict = f"identical: {slow.token_ids == fast.token_ids}"
            else:
                verdict = f"sampling at {self.sampling.describe()}: the same distribution, other draws"
                k += ", speculative sampling"
            print(f"# {name} {slow.seconds:.2f}s, blockwise {fast.seconds:.2f}s ({k}, {self.args.accept}), "
                  f"speedup {slow.seconds / fast.seconds:.2f}x, tokens per call "
                  f"{fast.stats.mean_accepted:.2f}, {verdict}")
        else:
            print("\n".join(out))
        sys.stdout.flush()
        return 0


def translate_all(args: argparse.Namespace) -> int:
    if args.file:
        check_utf8(existing_file(args.file, "input file", "pass --file with a UTF-8 text file"))
    model, corpus = load_translator(args.model)
    model = with_weights(model, args.weights, args.model)
    k = args.k
    if k != "auto" and k > model.num_heads:
        raise UserError(f"-k {k} is more than the {model.num_heads} heads of {args.model}: use -k 1..{model.num_heads}")
    import torch

    torch.set_num_threads(args.threads)
    translator, first, failed = Translator(model, corpus, k, args), 1, 0
    if args.compare:
        translator.warm_up()
    for batch in batched(read_lines(args), args.batch_size):
        failed += translator(batch, first)
        first += len(batch)
    if failed:
        report("translate", f"{failed} line(s) could not be translated (empty output lines)", "warning")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return run("translate", translate_all, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
