"""Hashes that make the corpus reproducible: file checksums for the manifest, and seeded orders.

The seeded hash (not Python's ``hash``) keeps every choice independent of ``PYTHONHASHSEED`` and of input order.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hash_unit(seed: int, *parts: str) -> int:
    """Deterministic 64-bit hash of ``parts`` under ``seed`` (independent of PYTHONHASHSEED)."""
    text = "\x1f".join((f"mt-corpus:{seed}",) + parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
