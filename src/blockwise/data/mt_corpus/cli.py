"""``python -m blockwise.data.mt_corpus``: build the corpus from the command line."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from ..pairs import CorpusError
from ..sources.debian_docs import DOC_SET_TAGS, DocsConfig
from ..sources.ding import DING_PATH
from ..sources.gettext_catalogues import LOCALE_DIR
from .build import BuildConfig, build_corpus
from .extend import ExtendConfig, extend_corpus

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    ap = argparse.ArgumentParser(
        prog="python -m blockwise.data.mt_corpus",
        description="Build the German–English corpus (Ding + Debian descriptions + gettext) for en→de MT.",
        epilog="Extended corpus: `--extend data/mt --docs --out data/mt_docs` copies dev/test and spm.model from "
        "data/mt unchanged (byte-identical, so models stay comparable), keeps data/mt's train lines first and appends "
        "the Debian documentation pairs to train only, minus any pair whose English or German side (normalised) "
        "occurs in dev or test. Pass --retrain-spm to train a new sentencepiece model on the extended train set "
        "instead (its models are then not comparable token for token).",
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
    ap.add_argument("--docs", action="store_true",
                    help="add Debian's English/German documentation packages (man pages, LibreOffice, GNOME, GIMP, "
                    "Debian books; downloaded with apt-get download, train only). Default off: the first corpus "
                    "stays reproducible")
    ap.add_argument("--docs-sets", default=",".join(DOC_SET_TAGS),
                    help=f"comma-separated documentation sets (default all: {','.join(DOC_SET_TAGS)})")
    ap.add_argument("--docs-cache", type=Path, default=None, help="folder for the .deb files (default OUT/debs)")
    ap.add_argument("--docs-max-ratio", type=float, default=2.0,
                    help="drop aligned blocks whose character lengths differ by more than this factor (default 2)")
    ap.add_argument("--no-docs-system-man", action="store_true",
                    help="do not pair German man pages with this machine's English pages in /usr/share/man when "
                    "the manpages/manpages-dev packages lack them (machine-dependent, on by default)")
    ap.add_argument("--extend", type=Path, default=None, metavar="BASE",
                    help="build an extended corpus from the built corpus BASE (e.g. data/mt): dev/test copied "
                    "byte-identical, new pairs to train only; needs --docs")
    ap.add_argument("--retrain-spm", action="store_true",
                    help="with --extend: train a new sentencepiece model instead of reusing BASE/spm.model "
                    "(default: reuse it, so models on both corpora share one vocabulary)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    args = ap.parse_args(argv)

    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(name)s: %(message)s"
    )
    docs = None
    if args.docs:
        docs = DocsConfig(
            cache=args.docs_cache or args.out / "debs",
            sets=tuple(t.strip() for t in args.docs_sets.split(",") if t.strip()),
            sentences=not args.no_sentence_split,
            max_ratio=args.docs_max_ratio,
            system_man=not args.no_docs_system_man,
            progress=not args.quiet,
        )
    if args.extend is not None:
        if docs is None:
            ap.error("--extend needs a new source: add --docs")
        t0 = time.time()
        try:
            manifest = extend_corpus(ExtendConfig(base=args.extend, out=args.out, docs=docs, seed=args.seed,
                                                  retrain_spm=args.retrain_spm, spm_sample=args.spm_sample))
        except CorpusError as exc:
            log.error("%s", exc)
            return 2
        c = manifest["counts"]["train"]
        log.info("wrote %s: train %d pairs (%d new, %d new English words); dev/test copied from %s; %.0fs",
                 args.out, c["pairs"], c["new_pairs"], c["new_en_words"], args.extend, time.time() - t0)
        return 0
    if args.retrain_spm:
        ap.error("--retrain-spm only applies with --extend")
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
        docs=docs,
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
