"""The King James Bible from a SWORD zText module (Debian package ``sword-text-kjv``): English text for LM prompts."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path


def kjv_passages(module_dir: str | Path) -> list[str]:
    """Verse-sized passages of the King James Bible from a SWORD zText module (zlib blocks; OSIS markup stripped)."""
    passages = []
    for testament in ("ot", "nt"):
        index = (Path(module_dir) / f"{testament}.bzs").read_bytes()
        blob = (Path(module_dir) / f"{testament}.bzz").read_bytes()
        for j in range(len(index) // 12):
            offset, size, _ = struct.unpack("<III", index[12 * j: 12 * j + 12])
            text = zlib.decompress(blob[offset: offset + size]).decode("utf-8", "replace")
            text = re.sub(r"<[^>]+>", " ", text)
            text = re.sub(r"\s+", " ", text)
            for sentence in re.split(r"(?<=[.?!:;])\s+", text):
                if 6 <= len(sentence.split()) <= 60:
                    passages.append(sentence.strip())
    return passages
