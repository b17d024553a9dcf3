"""`blockwise translate`: English → German with the shipped translation model (or any trained one).

Input: the arguments, else a file (--file), else standard input; one output line per input line, in order, streamed
in small batches. Input-line policy: an empty line gives an empty line; a line longer than the model's source limit is
split at sentence ends and the pieces translated and joined (a single over-long sentence is truncated, with a warning
on stderr); control characters are removed and undecodable bytes replaced. A line that fails gives an empty output
line and a warning: it never stops the rest of the file.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator

ASSETS = Path(__file__).parent / "assets"
DEFAULT_MODEL = ASSETS / "mt_both.safetensors"
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="blockwise translate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("text", nargs="*", help="English sentences to translate (default: read --file or stdin)")
    p.add_argument("--file", help="translate this UTF-8 file line by line")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="a blockwise translation checkpoint (.safetensors); "
                   "its sentencepiece model must lie beside it as <name>.spm.model or spm.model")
    p.add_argument("-k", type=int, default=None, help="block size (default: all the model's heads)")
    p.add_argument("--accept", choices=["exact", "top2", "top3"], default="exact",
                   help="exact (= greedy output, default) or approximate top-2/top-3 acceptance")
    p.add_argument("--batch-size", type=int, default=16, help="lines decoded together (default 16)")
    p.add_argument("--compare", action="store_true", help="also decode greedily; print both outputs and times")
    return p.parse_args(argv)


def find_spm(model_path: Path) -> Path:
    for cand in (model_path.with_suffix(".spm.model"), model_path.parent / "spm.model"):
        if cand.exists():
            return cand
    raise FileNotFoundError(f"no sentencepiece model beside {model_path} (looked for "
                            f"{model_path.with_suffix('.spm.model').name} and spm.model)")


def read_lines(args) -> Iterator[str]:
    if args.text:
        yield from args.text
    elif args.file:
        with open(args.file, encoding="utf-8", errors="replace") as f:
            for line in f:
                yield line.rstrip("\n")
    else:
        for line in sys.stdin:
            yield line.rstrip("\n")


def batched(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    batch = []
    for line in lines:
        batch.append(line)
        if len(batch) == size or sys.stdin.isatty():
            yield batch
            batch = []
    if batch:
        yield batch


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = parse_args(argv)
    model_path = Path(args.model)
    if not model_path.exists():
        print(f"blockwise translate: no model at {model_path}. Train one with recipes/mt/ (see README) and pass "
              f"--model PATH.", file=sys.stderr)
        return 2
    if args.file and not Path(args.file).is_file():
        print(f"blockwise translate: no such file: {args.file}", file=sys.stderr)
        return 2
    if args.batch_size < 1:
        print("blockwise translate: --batch-size must be >= 1", file=sys.stderr)
        return 2
    import torch

    from .decoding import Acceptance
    from .model import BlockwiseModel
    from .tasks.translation import Corpus, translate

    try:
        spm_path = find_spm(model_path)
        model = BlockwiseModel.load(model_path)
    except (FileNotFoundError, ValueError) as error:
        print(f"blockwise translate: {error}", file=sys.stderr)
        return 2
    k = args.k or model.num_heads
    if not 1 <= k <= model.num_heads:
        print(f"blockwise translate: -k must lie in 1..{model.num_heads} for this model", file=sys.stderr)
        return 2
    accept = {"exact": Acceptance(), "top2": Acceptance("top_k", top_k=2), "top3": Acceptance("top_k", top_k=3)}
    corpus = Corpus.from_spm(spm_path)
    limit = model.cfg.max_positions // 2 - 1
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    n_line = 0
    for batch in batched(read_lines(args), args.batch_size):
        pieces, owner = [], []
        for i, raw in enumerate(batch):
            line = CONTROL.sub(" ", raw).strip()
            parts = [p for p in SENTENCE_END.split(line) if p] if line else []
            for part in parts:
                if len(corpus.encode([part])[0]) > limit:
                    print(f"warning: line {n_line + i + 1}: a sentence longer than {limit} tokens was truncated",
                          file=sys.stderr)
                pieces.append(part)
                owner.append(i)
        outputs = [[] for _ in batch]
        try:
            if pieces:
                fast = translate(model, corpus, pieces, "blockwise", k=k, accept=accept[args.accept],
                                 batch_size=args.batch_size)
                for i, hyp in zip(owner, fast.hypotheses):
                    outputs[i].append(hyp)
                if args.compare:
                    slow = translate(model, corpus, pieces, "greedy", batch_size=args.batch_size)
                    slow_out = [[] for _ in batch]
                    for i, hyp in zip(owner, slow.hypotheses):
                        slow_out[i].append(hyp)
        except Exception as error:  # one bad batch must not stop the file
            print(f"warning: lines {n_line + 1}-{n_line + len(batch)} failed: {error}", file=sys.stderr)
            outputs = [[] for _ in batch]
            pieces = []
        for i in range(len(batch)):
            text = " ".join(outputs[i])
            if args.compare and pieces:
                print(f"greedy:    {' '.join(slow_out[i])}")
                print(f"blockwise: {text}")
            else:
                print(text)
        if args.compare and pieces:
            print(f"# greedy {slow.seconds:.2f}s, blockwise {fast.seconds:.2f}s (k={k}, {args.accept}), speedup "
                  f"{slow.seconds / fast.seconds:.2f}x, mean accepted block size {fast.stats.mean_accepted:.2f}, "
                  f"identical: {slow.token_ids == fast.token_ids}")
        sys.stdout.flush()
        n_line += len(batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
