"""An extended training set on top of a built corpus: same dev and test files, byte for byte; more train.

Why: models trained on the extended corpus must stay comparable with the ones trained on the base corpus, so the
held-out sets cannot move.  ``extend_corpus`` copies ``dev.*`` and ``test.*`` (and, by default, the sentencepiece
model) unchanged from the base folder, keeps the base ``train.*`` lines first and in their order, and appends the new
pairs (the Debian documentation, :mod:`blockwise.data.sources.debian_docs`) after the base corpus's cleaning rules,
minus every new pair whose English *or* German side, normalised (:func:`heldout_key`), occurs on either side of dev or
test, and minus exact duplicates of base train pairs.
"""

from __future__ import annotations

import collections
import json
import logging
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..hashing import sha256_file
from ..pairs import CorpusError, Pair, word_count
from ..sources.debian_docs import DocsConfig, read_debian_docs
from .build import FORMAT_VERSION
from .clean import CleanConfig, clean_pairs, english_key, normalize_text
from .write import train_sentencepiece, write_pairs

log = logging.getLogger(__name__)

HELD_OUT = ("dev", "test")


def heldout_key(text: str) -> str:
    """Normalised form for the dev/test exclusion: NFC, whitespace folded, lowercase, letters and digits only."""
    return english_key(normalize_text(text))


@dataclass
class ExtendConfig:
    """Everything :func:`extend_corpus` needs."""

    base: Path
    out: Path
    docs: DocsConfig
    seed: int = 0
    retrain_spm: bool = False
    spm_sample: int = 400_000
    timings: dict[str, float] = field(default_factory=dict)


def _read_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="\n") as f:
        return [ln.rstrip("\n") for ln in f]


def extend_corpus(cfg: ExtendConfig, *, reader=read_debian_docs) -> dict:
    """Build ``cfg.out`` from the corpus in ``cfg.base`` plus the documentation pairs; returns the manifest.

    Raises :class:`CorpusError` when the base folder is not a built corpus, is the output folder, or when a copied
    held-out file's checksum differs from the base manifest's.  ``reader`` is replaceable for tests.
    """
    base, out = Path(cfg.base), Path(cfg.out)
    if base.resolve() == out.resolve():
        raise CorpusError(f"--extend {base} and --out {out} are the same folder: the base corpus must stay as it is")
    man_path = base / "manifest.json"
    if not man_path.is_file():
        raise CorpusError(f"{base} has no manifest.json: build the base corpus first (recipes/mt/00_setup.sh)")
    base_manifest = json.loads(man_path.read_text(encoding="utf-8"))
    base_files = base_manifest.get("files", {})
    need = [f"{s}.{x}" for s in ("train", *HELD_OUT) for x in ("en", "de", "meta.tsv")]
    if not cfg.retrain_spm:
        need += ["spm.model", "spm.vocab"]
    absent = [n for n in need if not (base / n).is_file()]
    if absent:
        raise CorpusError(f"{base} lacks {', '.join(absent)}")
    out.mkdir(parents=True, exist_ok=True)
    timings = cfg.timings
    digests: dict[str, str] = {}

    # 1) held-out files: copied, then checked against the base manifest
    t = time.time()
    held_keys: set[str] = set()
    held_pairs = 0
    for split in HELD_OUT:
        for ext in ("en", "de", "meta.tsv"):
            name = f"{split}.{ext}"
            shutil.copyfile(base / name, out / name)
            digests[name] = sha256_file(out / name)
            if name in base_files and base_files[name] != digests[name]:
                raise CorpusError(f"{base / name} does not match the checksum in {man_path}: the base corpus changed")
        for ext in ("en", "de"):
            lines = _read_lines(out / f"{split}.{ext}")
            held_pairs += len(lines) if ext == "en" else 0
            held_keys.update(k for k in map(heldout_key, lines) if k)

    # 2) the base train set, kept as the first lines
    base_train = {x: _read_lines(base / f"train.{x}") for x in ("en", "de", "meta.tsv")}
    if not (len(base_train["en"]) == len(base_train["de"]) == len(base_train["meta.tsv"])):
        raise CorpusError(f"{base}/train.* have different line counts")
    base_seen = {(e.lower(), d.lower()) for e, d in zip(base_train["en"], base_train["de"], strict=True)}
    timings["read_base"] = time.time() - t

    # 3) the new pairs: read, cleaned by the base rules, held-out overlap and base duplicates removed
    t = time.time()
    new_raw, docs_stats, docs_inputs = reader(cfg.docs)
    timings["read_docs"] = time.time() - t
    t = time.time()
    clean_params = base_manifest.get("params", {}).get("clean", {})
    cleaned, clean_stats = clean_pairs(new_raw, CleanConfig(**clean_params) if clean_params else None)
    drops: collections.Counter = collections.Counter()
    new: list[Pair] = []
    for p in cleaned:
        if heldout_key(p.en) in held_keys or heldout_key(p.de) in held_keys:
            drops[f"{p.source}:held_out_overlap"] += 1
            continue
        if (p.en.lower(), p.de.lower()) in base_seen:
            drops[f"{p.source}:in_base_train"] += 1
            continue
        new.append(p)
    random.Random(f"{cfg.seed}:extend").shuffle(new)
    timings["clean"] = time.time() - t

    # 4) write train (base lines first, byte for byte) and the sentencepiece model
    t = time.time()
    with open(out / "train.en", "w", encoding="utf-8", newline="\n") as fe, open(
        out / "train.de", "w", encoding="utf-8", newline="\n"
    ) as fd, open(out / "train.meta.tsv", "w", encoding="utf-8", newline="\n") as fm:
        for e, d, m in zip(base_train["en"], base_train["de"], base_train["meta.tsv"], strict=True):
            fe.write(e + "\n")
            fd.write(d + "\n")
            fm.write(m + "\n")
        write_pairs(new, fe, fd, fm)
    for x in ("en", "de", "meta.tsv"):
        digests[f"train.{x}"] = sha256_file(out / f"train.{x}")
    timings["write"] = time.time() - t
    params = base_manifest.get("params", {})
    if cfg.retrain_spm:
        t = time.time()
        spm_info = train_sentencepiece([out / "train.en", out / "train.de"], out / "spm",
                                       vocab_size=params.get("vocab_size", 8000),
                                       model_type=params.get("model_type", "unigram"), seed=cfg.seed,
                                       sample_size=cfg.spm_sample)
        timings["sentencepiece"] = time.time() - t
    else:
        for name in ("spm.model", "spm.vocab"):
            shutil.copyfile(base / name, out / name)
        spm_info = dict(base_manifest.get("sentencepiece") or {}, copied_from=str(base / "spm.model"))
    for name in ("spm.model", "spm.vocab"):
        digests[name] = sha256_file(out / name)

    # 5) manifest: the counts of what was just written (base lines, then the new pairs), from memory
    train_meta = [ln.split("\t") for ln in base_train["meta.tsv"]] + [[p.source, p.group, p.kind] for p in new]
    new_en_words = [word_count(p.en) for p in new]
    new_de_words = sum(word_count(p.de) for p in new)
    words_by_kind: collections.Counter = collections.Counter()
    for p, words in zip(new, new_en_words):
        words_by_kind[f"{p.source}:{p.kind}"] += words
    train_counts = {
        "pairs": len(train_meta),
        "base_pairs": len(base_train["en"]),
        "new_pairs": len(new),
        "by_source": dict(collections.Counter(m[0] for m in train_meta)),
        "by_kind": dict(collections.Counter(f"{m[0]}:{m[2]}" for m in train_meta)),
        "en_words": sum(map(word_count, base_train["en"])) + sum(new_en_words),
        "de_words": sum(map(word_count, base_train["de"])) + new_de_words,
        "new_en_words": sum(new_en_words),
        "new_de_words": new_de_words,
        "new_by_kind": dict(collections.Counter(f"{p.source}:{p.kind}" for p in new)),
        "new_en_words_by_kind": dict(words_by_kind),
    }
    counts = {"train": train_counts}
    for split in HELD_OUT:
        counts[split] = base_manifest.get("counts", {}).get(split, {"pairs": held_pairs})
    manifest = {
        "format_version": FORMAT_VERSION,
        "created_by": "blockwise.data.mt_corpus --extend",
        "direction": base_manifest.get("direction", "en->de"),
        "extends": {
            "base": str(base),
            "base_manifest_sha256": sha256_file(man_path),
            "held_out_identical": True,
            "spm": "retrained on the extended train set" if cfg.retrain_spm else "copied from the base corpus",
        },
        "params": {
            "seed": cfg.seed,
            "docs_sets": list(cfg.docs.sets),
            "docs_sentence_split": cfg.docs.sentences,
            "docs_max_char_ratio": cfg.docs.max_ratio,
            "docs_system_man": cfg.docs.system_man,
            "retrain_spm": cfg.retrain_spm,
            "clean": clean_params or vars(CleanConfig()),
            "base_params": params,
        },
        "counts": counts,
        "sources_raw": {"docs": docs_stats},
        "cleaning": clean_stats,
        "held_out_filter": dict(drops),
        "sentencepiece": spm_info,
        "files": digests,
        "inputs": {"base": base_manifest.get("inputs", {}), "docs": docs_inputs},
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    with open(out / "manifest.json", "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False)
        f.write("\n")
    return manifest
