"""The corpus files: one segment per line per split, and the joint sentencepiece model trained on train."""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

from ..hashing import sha256_file
from ..pairs import CorpusError, Pair
from .split import SPLITS


def write_pairs(rows: Iterable[Pair], fe: TextIO, fd: TextIO, fm: TextIO) -> None:
    """Append ``rows`` (``Pair``) to open English, German and metadata files, one segment per line; a segment with a
    tab, a line break or outer spaces (the cleaning step removes them) is refused."""
    for p in rows:
        for text in (p.en, p.de):
            if any(c in text for c in "\t\n\r") or text != text.strip() or not text:
                raise ValueError(f"unnormalised segment reached the writer: {text!r}")
        fe.write(p.en + "\n")
        fd.write(p.de + "\n")
        fm.write(f"{p.source}\t{p.group}\t{p.kind}\n")


def write_splits(splits: dict[str, list[Pair]], out_dir: Path, *, seed: int = 0) -> dict[str, str]:
    """Write ``{split}.{en,de}`` and ``{split}.meta.tsv`` (lines shuffled with ``seed``).

    Returns ``{file name: sha256}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    digests = {}
    for split in SPLITS:
        rows = list(splits.get(split, []))
        random.Random(f"{seed}:{split}").shuffle(rows)
        files = {
            "en": out_dir / f"{split}.en",
            "de": out_dir / f"{split}.de",
            "meta": out_dir / f"{split}.meta.tsv",
        }
        with open(files["en"], "w", encoding="utf-8", newline="\n") as fe, open(
            files["de"], "w", encoding="utf-8", newline="\n"
        ) as fd, open(files["meta"], "w", encoding="utf-8", newline="\n") as fm:
            write_pairs(rows, fe, fd, fm)
        for f in files.values():
            digests[f.name] = sha256_file(f)
    return digests


def train_sentencepiece(
    train_files: Sequence[Path],
    model_prefix: Path,
    *,
    vocab_size: int = 8000,
    model_type: str = "unigram",
    seed: int = 0,
    sample_size: int = 400_000,
    num_threads: int = 1,
    byte_fallback: bool = False,
) -> dict:
    """Train a joint sentencepiece model on the lines of ``train_files``.

    A seeded sample of at most ``sample_size`` lines (drawn equally from each file)
    is written to a temporary file, so training is deterministic and quick.  Special
    ids are pad=0, unk=1, bos=2, eos=3; character coverage 1.0; no text
    normalisation (the corpus is already NFC, and decoding gives back the exact text).
    ``hard_vocab_limit=False`` lets a small corpus get a smaller vocabulary.
    Returns a summary (vocabulary size, sample lines, seconds).
    """
    import sentencepiece as spm

    t0 = time.time()
    rng = random.Random(seed)
    per_file = max(1, sample_size // max(1, len(train_files)))
    sample: list[str] = []
    for path in train_files:
        with open(path, encoding="utf-8") as f:
            lines = [ln.rstrip("\n") for ln in f if ln.strip()]
        if len(lines) > per_file:
            lines = rng.sample(lines, per_file)
        sample.extend(lines)
    rng.shuffle(sample)
    if not sample:
        raise CorpusError("no training text for sentencepiece")
    model_prefix = Path(model_prefix)
    model_prefix.parent.mkdir(parents=True, exist_ok=True)
    # The sample sits next to the model (not in a random temp dir): the model file records
    # the input path, so a fixed path keeps spm.model byte-identical between runs.
    inp = Path(f"{model_prefix}.sample.txt")
    try:
        inp.write_text("\n".join(sample) + "\n", encoding="utf-8")
        if hasattr(spm, "set_random_generator_seed"):
            spm.set_random_generator_seed(seed)  # global; makes the trainer repeatable
        spm.SentencePieceTrainer.train(
            input=str(inp),
            model_prefix=str(model_prefix),
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=1.0,
            pad_id=0,
            unk_id=1,
            bos_id=2,
            eos_id=3,
            pad_piece="<pad>",
            unk_piece="<unk>",
            bos_piece="<s>",
            eos_piece="</s>",
            input_sentence_size=0,
            shuffle_input_sentence=False,
            normalization_rule_name="identity",
            remove_extra_whitespaces=True,
            max_sentence_length=8192,
            num_threads=num_threads,
            byte_fallback=byte_fallback,
            hard_vocab_limit=False,
            minloglevel=2,
        )
    finally:
        inp.unlink(missing_ok=True)
    sp = spm.SentencePieceProcessor(model_file=str(model_prefix) + ".model")
    return {
        "vocab_size": sp.get_piece_size(),
        "requested_vocab_size": vocab_size,
        "model_type": model_type,
        "sample_lines": len(sample),
        "seconds": round(time.time() - t0, 1),
        "special_ids": {"pad": sp.pad_id(), "unk": sp.unk_id(), "bos": sp.bos_id(), "eos": sp.eos_id()},
    }
