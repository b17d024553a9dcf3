"""The whole pipeline: read the sources, clean, split, write, train sentencepiece, and record it all in a manifest."""

from __future__ import annotations

import collections
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..hashing import sha256_file
from ..pairs import Pair, word_count
from ..sources.debian import fetch_debian_translations, read_debian_descriptions
from ..sources.debian_docs import DocsConfig, read_debian_docs
from ..sources.ding import DING_PATH, read_ding
from ..sources.gettext_catalogues import LOCALE_DIR, read_gettext
from .clean import CleanConfig, clean_pairs
from .split import SplitConfig, split_corpus
from .write import train_sentencepiece, write_splits

log = logging.getLogger(__name__)

SOURCES = ("ding", "debian", "gettext")
FORMAT_VERSION = 1


@dataclass
class BuildConfig:
    """Everything :func:`build_corpus` needs."""

    out: Path
    seed: int = 0
    vocab_size: int = 8000
    model_type: str = "unigram"
    spm_sample: int = 400_000
    n_test: int = 2000
    n_dev: int = 2000
    max_per_package: int = 40
    ding_path: Path = DING_PATH
    ding_min_words: int = 2
    debian: bool = True
    apt_dir: Path | None = None
    refresh_apt: bool = False
    sentence_split: bool = True
    gettext: bool = True
    locale_dir: Path = LOCALE_DIR
    gettext_max: int = 20000
    docs: DocsConfig | None = None  # the Debian documentation (train only); None: off, as in the first corpus
    spm: bool = True
    progress: bool = True
    timings: dict[str, float] = field(default_factory=dict)


def build_corpus(cfg: BuildConfig) -> dict:
    """Run the whole pipeline and return the manifest (also written to ``OUT/manifest.json``)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    timings = cfg.timings
    raw: dict[str, dict] = {}
    inputs: dict[str, dict[str, str]] = {}
    pairs: list[Pair] = []

    t = time.time()
    ding_pairs, raw["ding"] = read_ding(cfg.ding_path, min_words=cfg.ding_min_words, progress=cfg.progress)
    inputs["ding"] = {str(cfg.ding_path): sha256_file(Path(cfg.ding_path))}
    pairs += ding_pairs
    timings["read_ding"] = time.time() - t
    log.info("ding: %d pairs (%d sentences) in %.1fs", len(ding_pairs), raw["ding"]["sentences"], timings["read_ding"])

    if cfg.debian:
        t = time.time()
        lists = fetch_debian_translations(cfg.apt_dir or out / "apt", refresh=cfg.refresh_apt)
        timings["fetch_debian"] = time.time() - t
        t = time.time()
        deb_pairs, raw["debian"], inputs["debian"] = read_debian_descriptions(
            lists, sentences=cfg.sentence_split, progress=cfg.progress
        )
        pairs += deb_pairs
        timings["read_debian"] = time.time() - t
        log.info("debian: %d pairs in %.1fs", len(deb_pairs), timings["read_debian"])

    if cfg.gettext:
        t = time.time()
        gt_pairs, raw["gettext"], inputs["gettext"] = read_gettext(
            cfg.locale_dir, max_pairs=cfg.gettext_max, seed=cfg.seed, progress=cfg.progress
        )
        pairs += gt_pairs
        timings["read_gettext"] = time.time() - t
        log.info("gettext: %d pairs in %.1fs", len(gt_pairs), timings["read_gettext"])

    if cfg.docs is not None:
        t = time.time()
        docs_pairs, raw["docs"], inputs["docs"] = read_debian_docs(cfg.docs)
        pairs += docs_pairs
        timings["read_docs"] = time.time() - t
        log.info("docs: %d pairs in %.1fs", len(docs_pairs), timings["read_docs"])

    t = time.time()
    # gettext last, so a pair that is also in Ding/Debian keeps its better source
    clean, clean_stats = clean_pairs(pairs)
    timings["clean"] = time.time() - t

    t = time.time()
    split_cfg = SplitConfig(n_test=cfg.n_test, n_dev=cfg.n_dev, seed=cfg.seed, max_per_group=cfg.max_per_package)
    splits, split_info = split_corpus(clean, split_cfg)
    timings["split"] = time.time() - t

    t = time.time()
    digests = write_splits(splits, out, seed=cfg.seed)
    timings["write"] = time.time() - t

    spm_info = None
    if cfg.spm:
        t = time.time()
        spm_info = train_sentencepiece(
            [out / "train.en", out / "train.de"],
            out / "spm",
            vocab_size=cfg.vocab_size,
            model_type=cfg.model_type,
            seed=cfg.seed,
            sample_size=cfg.spm_sample,
        )
        timings["sentencepiece"] = time.time() - t
        for name in ("spm.model", "spm.vocab"):
            digests[name] = sha256_file(out / name)

    counts = {
        split: {
            "pairs": len(rows),
            "by_source": dict(collections.Counter(p.source for p in rows)),
            "by_kind": dict(collections.Counter(f"{p.source}:{p.kind}" for p in rows)),
            "en_words": sum(word_count(p.en) for p in rows),
            "de_words": sum(word_count(p.de) for p in rows),
        }
        for split, rows in splits.items()
    }
    manifest = {
        "format_version": FORMAT_VERSION,
        "created_by": "blockwise.data.mt_corpus",
        "direction": "en->de",
        "params": {
            "seed": cfg.seed,
            "vocab_size": cfg.vocab_size,
            "model_type": cfg.model_type,
            "spm_sample": cfg.spm_sample,
            "n_test": cfg.n_test,
            "n_dev": cfg.n_dev,
            "max_per_package": cfg.max_per_package,
            "ding_min_words": cfg.ding_min_words,
            "sentence_split": cfg.sentence_split,
            "debian": cfg.debian,
            "gettext": cfg.gettext,
            "gettext_max": cfg.gettext_max,
            "clean": vars(CleanConfig()),
            # recorded only when on, so a build without it keeps the first corpus's manifest
            **({"docs_sets": list(cfg.docs.sets), "docs_system_man": cfg.docs.system_man}
               if cfg.docs is not None else {}),
        },
        "counts": counts,
        "sources_raw": raw,
        "cleaning": clean_stats,
        "split_info": {
            "held_out_packages": split_info["held_out_groups"],
            "dropped_cross_split": split_info["dropped_cross_split"],
            "held_out_overflow": split_info["held_out_overflow"],
        },
        "sentencepiece": spm_info,
        "files": digests,
        "inputs": inputs,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    with open(out / "manifest.json", "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False, sort_keys=False)
        f.write("\n")
    return manifest
