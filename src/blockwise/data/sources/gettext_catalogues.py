"""German gettext catalogues (``.mo`` files of installed programs): short software messages for the MT corpus.

Optional and train-only: the installed set differs between machines.
"""

from __future__ import annotations

import collections
import gettext
import logging
import re
from pathlib import Path

from tqdm import tqdm

from ..hashing import hash_unit, sha256_file
from ..pairs import Pair, word_count

log = logging.getLogger(__name__)

LOCALE_DIR = Path("/usr/share/locale/de/LC_MESSAGES")

_FORMAT_RE = re.compile(
    r"%(?:\d+\$)?[-+ #0']*(?:\d+|\*)?(?:\.(?:\d+|\*))?(?:hh|h|ll|l|L|q|j|z|t|I64|I32)?[diouxXeEfFgGaAcCsSpn]"
    r"|%\(\w+\)[sdrif]|%[A-Z_]+%|\{\w*(?::[^}]*)?\}|\$\{?\w+\}?|<[^>]{1,40}>|%%"
)
GETTEXT_EXCLUDE = ("iso_", "xkeyboard-config")
_MNEMONIC_RE = re.compile(r"(?<![\w&])[_&](?=\w)")


def _placeholders(text: str) -> list[str]:
    codes = []
    for m in _FORMAT_RE.finditer(text):
        code = re.sub(r"^%\d+\$", "%", m.group(0))  # positional %1$s -> %s
        codes.append(code)
    return sorted(codes)


def clean_gettext_message(msgid: str, msgstr: str, *, min_words: int = 2) -> list[tuple[str, str]]:
    """Turn one gettext entry into zero or one (en, de) pair.

    Removes ``_``/``&`` mnemonics.  Multi-line messages are joined into one line when
    they are wrapped prose; usage/option tables (a line starting with ``-`` or with
    indentation or column padding) are dropped.  Drops untranslated entries,
    entries whose placeholders (``%s``, ``%1$d``, ``{0}``, ``<b>`` ...) differ between
    the sides, and entries with fewer than ``min_words`` English words once
    placeholders are removed.
    """
    if not msgid or not msgstr:
        return []
    sides = []
    for text in (msgid, msgstr):
        lines = [ln for ln in text.strip("\n").split("\n") if ln.strip()]
        if not lines:
            return []
        for ln in lines:
            if ln[:1].isspace() or ln.lstrip().startswith("-") or "   " in ln.strip() or "\t" in ln:
                return []
        sides.append(_MNEMONIC_RE.sub("", " ".join(ln.strip() for ln in lines)))
    en, de = sides
    if en == de:
        return []
    if _placeholders(en) != _placeholders(de):
        return []
    if word_count(_FORMAT_RE.sub(" ", en)) < min_words:
        return []
    return [(en, de)]


def read_gettext(
    locale_dir: Path = LOCALE_DIR,
    *,
    max_pairs: int = 20000,
    seed: int = 0,
    exclude_prefixes: tuple[str, ...] = GETTEXT_EXCLUDE,
    progress: bool = True,
) -> tuple[list[Pair], dict[str, int], dict[str, str]]:
    """Read German ``.mo`` catalogues (singular, context-free messages only).

    Catalogues whose name starts with one of ``exclude_prefixes`` (name lists such as
    ISO language/country names and keyboard layouts) are skipped.

    Plural entries are skipped, message contexts are stripped.  At most ``max_pairs``
    pairs are kept, chosen by a seeded hash of the English text (so the choice does
    not depend on file order).  Returns pairs, counts and ``{file: sha256}``.
    """
    locale_dir = Path(locale_dir)
    files = sorted(locale_dir.glob("*.mo")) if locale_dir.is_dir() else []
    files = [f for f in files if not f.stem.startswith(exclude_prefixes)]
    stats: collections.Counter = collections.Counter(files=len(files))
    inputs: dict[str, str] = {}
    pairs: list[Pair] = []
    for path in tqdm(files, desc="gettext", unit=" files", disable=not progress, mininterval=1.0):
        try:
            with open(path, "rb") as f:
                catalog = gettext.GNUTranslations(f)._catalog  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - a broken catalogue is skipped, not fatal
            log.info("skipping unreadable catalogue %s: %s", path, exc)
            stats["unreadable_files"] += 1
            continue
        inputs[path.name] = sha256_file(path)
        for key, msgstr in catalog.items():
            if not isinstance(key, str) or not key:
                stats["plural_or_header"] += 1
                continue
            msgid = key.split("\x04", 1)[-1]
            stats["messages"] += 1
            for en, de in clean_gettext_message(msgid, msgstr):
                pairs.append(Pair(en=en, de=de, source="gettext", group=path.stem, kind="message"))
    stats["pairs_before_cap"] = len(pairs)
    if max_pairs >= 0 and len(pairs) > max_pairs:
        pairs = sorted(pairs, key=lambda p: (hash_unit(seed, "gettext", p.en, p.de), p.en, p.de))[:max_pairs]
        stats["capped_away"] = stats["pairs_before_cap"] - max_pairs
    stats["pairs"] = len(pairs)
    return pairs, dict(stats), inputs
