#!/usr/bin/env python3
"""Stage 2: sequence-level distillation targets — the baseline's beam-4 (α = 0.6) translations of the training set.

The paper distils from a separately seeded baseline; here the baseline itself is the teacher (stated in the results).
Beam search over the whole training set does not fit a CPU session, so a stated, seeded subset is distilled
(``--limit``), in chunks appended to runs/mt/teacher/targets.tsv (resumable: a rerun continues after the last chunk).
The finished file is gzipped to models/mt/teacher_targets.tsv.gz (small; committed) for the regime stage.

    OMP_WAIT_POLICY=PASSIVE python recipes/mt/02_teacher.py --limit 40000 --minutes 60
"""

from __future__ import annotations

import argparse
import gzip
import random
import sys
import time
from pathlib import Path

from blockwise import BlockwiseModel  # before torch: importing blockwise sets OMP_WAIT_POLICY
from blockwise.tasks.translation import Corpus, translate

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/mt")
    ap.add_argument("--teacher", default="models/mt/baseline.safetensors")
    ap.add_argument("--work", default="runs/mt/teacher/targets.tsv")
    ap.add_argument("--out", default="models/mt/teacher_targets.tsv.gz")
    ap.add_argument("--limit", type=int, default=40000, help="training pairs to distil (seeded sample)")
    ap.add_argument("--beam", type=int, default=4, help="beam size (1 = greedy teacher outputs)")
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--batch-size", type=int, default=32, help="sentences per beam-search batch")
    ap.add_argument("--partial", action="store_true", help="when time is up, write the outputs done so far as the "
                    "distilled subset (a single bounded run, e.g. a GPU lease)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    corpus = Corpus(args.data)
    model = BlockwiseModel.load(args.teacher, device=args.device)
    english = corpus.lines("train", "en")
    kinds = corpus.kinds("train")
    # sentences and descriptions first: dictionary phrases are short and gain least from a teacher
    rng = random.Random(0)
    order = [i for i in range(len(english)) if kinds[i] != "ding:phrase"]
    rng.shuffle(order)
    phrases = [i for i in range(len(english)) if kinds[i] == "ding:phrase"]
    rng.shuffle(phrases)
    chosen = (order + phrases)[: args.limit]
    work = Path(args.work)
    work.parent.mkdir(parents=True, exist_ok=True)
    done = sum(1 for _ in open(work, encoding="utf-8")) if work.exists() else 0
    started = time.time()
    print(f"distilling {len(chosen):,} pairs with beam {args.beam}; {done:,} already done", flush=True)
    with open(work, "a", encoding="utf-8") as f:
        while done < len(chosen) and time.time() - started < args.minutes * 60:
            rows = chosen[done:done + args.chunk]
            method = "beam" if args.beam > 1 else "greedy"
            result = translate(model, corpus, [english[i] for i in rows], method, beam_size=args.beam,
                               batch_size=args.batch_size)
            for i, hyp in zip(rows, result.hypotheses):
                f.write(f"{i}\t{hyp}\n")
            f.flush()
            done += len(rows)
            rate = len(rows) / result.seconds
            print(f"{done:,}/{len(chosen):,} ({rate:.1f} sentences/s)", flush=True)
    if done >= len(chosen) or (args.partial and done):
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(work, "rb") as src, gzip.open(args.out, "wb") as dst:
            dst.write(src.read())
        print(f"wrote {args.out} ({done:,} teacher outputs)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
