"""``python -m blockwise.data.mt_corpus``: build the corpus from the command line."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from ..pairs import CorpusError
from ..sources.ding import DING_PATH
from ..sources.gettext_catalogues import LOCALE_DIR
from .build import BuildConfig, build_corpus

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    ap = argparse.ArgumentParser(
        prog="python -m blockwise.data.mt_corpus",
        description="Build the German–English corpus (Ding + Debian descriptions + gettext) for en→de MT.",
    )
    ap.add_argument("--out", type=Path, required=True, help="output folder, e.g. data/mt")
    ap.add_argument("--vocab-size", type=int, default=8000, help="sentencepiece vocabulary size (default 8000)")
    ap.add_argument("--model-type", choices=["unigram", "bpe"], default="unigram")
    ap.add_argument("--seed", type=int, default=0, help="seed of the split, shuffles and spm sample")
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--n-dev", type=int, default=2000)
    ap.add_argument("--max-per-package", type=int, default=40, help="cap on pairs per held-out package (0: none)")
    ap.add_argument("--spm-sample", type=int, default=400_000, help="lines sampled to train sentencepiece")
    ap.add_argument("--ding", type=Path, default=DING_PATH, help=f"Ding file (default {DING_PATH})")
    ap.add_argument(
        "--ding-min-words", type=int, default=2, help="keep Ding pairs with ≥ this many words on one side"
    )
    ap.add_argument("--apt-dir", type=Path, default=None, help="folder for our own apt lists (default OUT/apt)")
    ap.add_argument("--refresh-apt", action="store_true", help="fetch the apt lists again even if present")
    ap.add_argument("--no-debian", action="store_true", help="skip the Debian descriptions")
    ap.add_argument("--no-sentence-split", action="store_true", help="keep description paragraphs whole")
    ap.add_argument("--no-gettext", action="store_true", help="skip the gettext catalogues")
    ap.add_argument("--locale-dir", type=Path, default=LOCALE_DIR)
    ap.add_argument("--gettext-max", type=int, default=20000, help="cap on gettext pairs (default 20000)")
    ap.add_argument("--no-spm", action="store_true", help="do not train sentencepiece")
    ap.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    args = ap.parse_args(argv)

    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(name)s: %(message)s"
    )
    cfg = BuildConfig(
        out=args.out,
        seed=args.seed,
        vocab_size=args.vocab_size,
        model_type=args.model_type,
        spm_sample=args.spm_sample,
        n_test=args.n_test,
        n_dev=args.n_dev,
        max_per_package=args.max_per_package,
        ding_path=args.ding,
        ding_min_words=args.ding_min_words,
        debian=not args.no_debian,
        apt_dir=args.apt_dir,
        refresh_apt=args.refresh_apt,
        sentence_split=not args.no_sentence_split,
        gettext=not args.no_gettext,
        locale_dir=args.locale_dir,
        gettext_max=args.gettext_max,
        spm=not args.no_spm,
        progress=not args.quiet,
    )
    t0 = time.time()
    try:
        manifest = build_corpus(cfg)
    except CorpusError as exc:
        log.error("%s", exc)
        return 2
    c = manifest["counts"]
    log.info(
        "wrote %s: train %d, dev %d, test %d pairs; vocab %s; %.0fs",
        args.out,
        c["train"]["pairs"],
        c["dev"]["pairs"],
        c["test"]["pairs"],
        (manifest["sentencepiece"] or {}).get("vocab_size"),
        time.time() - t0,
    )
    return 0
