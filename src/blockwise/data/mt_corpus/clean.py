"""Normalisation and filters applied to every pair before the split (the same rules for every source)."""

from __future__ import annotations

import collections
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from ..pairs import Pair, word_count

_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff"), None)
_SPACE_RE = re.compile(r"\s+")  # Unicode \s: tabs, newlines, NBSP, U+2028/2029, other Zs
_C1_RE = re.compile(r"[\x80-\x9f]")
_CTRL_RE = re.compile(r"[\x00-\x1f\x7f]")


def _fix_c1(ch: str) -> str:
    """Map a stray C1 control (cp1252 mojibake such as ``\\x96``) to its cp1252 character."""
    try:
        return bytes([ord(ch)]).decode("cp1252")
    except UnicodeDecodeError:
        return " "


def normalize_text(text: str) -> str:
    """NFC-normalise, map control/separator characters to spaces, collapse whitespace.

    The result never contains tabs, newlines or other line separators (including
    U+0085, U+2028, U+2029), so it is safe to write one segment per line.
    """
    text = unicodedata.normalize("NFC", text).translate(_INVISIBLE)
    text = _C1_RE.sub(lambda m: _fix_c1(m.group(0)), text)
    text = _CTRL_RE.sub(" ", text)
    return _SPACE_RE.sub(" ", text).strip()


def english_key(en: str) -> str:
    """Key for near-duplicate detection: lowercase, alphanumeric characters only."""
    return "".join(ch for ch in en.lower() if ch.isalnum())


@dataclass
class CleanConfig:
    """Thresholds for :func:`clean_pairs`."""

    max_words: int = 100
    max_ratio: float = 3.0


def clean_pairs(
    pairs: Iterable[Pair], config: CleanConfig | None = None
) -> tuple[list[Pair], dict[str, dict[str, int]]]:
    """Normalise and filter pairs; returns kept pairs and per-source drop counts.

    Rules, in order: NFC + whitespace normalisation; drop a pair with an empty side
    (or an English side without letters/digits); identical sides (case-insensitive,
    i.e. untranslated); either side longer than ``max_words`` words; word-length ratio
    above ``max_ratio``; exact duplicates (lowercased English + German, first kept).
    """
    cfg = config or CleanConfig()
    stats: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    seen: set[tuple[str, str]] = set()
    out: list[Pair] = []
    for p in pairs:
        st = stats[p.source]
        st["in"] += 1
        en, de = normalize_text(p.en), normalize_text(p.de)
        if not en or not de or not english_key(en):
            st["empty"] += 1
            continue
        if en.lower() == de.lower():
            st["identical"] += 1
            continue
        we, wd = word_count(en), word_count(de)
        if we > cfg.max_words or wd > cfg.max_words:
            st["too_long"] += 1
            continue
        if max(we, wd) > cfg.max_ratio * min(we, wd):
            st["length_ratio"] += 1
            continue
        key = (en.lower(), de.lower())
        if key in seen:
            st["duplicate"] += 1
            continue
        seen.add(key)
        st["out"] += 1
        out.append(Pair(en=en, de=de, source=p.source, group=p.group, kind=p.kind))
    return out, {k: dict(v) for k, v in stats.items()}
