"""German–English parallel corpus for English→German translation.

Builds a fixed, seeded train/dev/test split from text that can be had offline
(see ``DATA.md``):

* **Ding** dictionary (Debian package ``trans-de-en``, ``/usr/share/trans/de-en``):
  lines ``German | variant :: English | variant``; variants are aligned pairwise,
  grammar/domain marks and notes are stripped, and the first synonym of each side
  is kept.  About 20k entries are real example sentences.
* **Debian package descriptions** and their German translations, fetched with the
  ordinary apt client into a folder of our own (the system's lists are left alone),
  joined on ``Description-md5`` and aligned paragraph by paragraph (and, where both
  sides agree, item by item and sentence by sentence).  Each pair keeps its source
  package so whole packages can be held out.
* **gettext catalogues** (German ``.mo`` files of installed programs): short software
  messages, optional, capped, train only (the installed set differs between
  machines, so it never feeds dev/test).

Output (``--out DIR``): ``{train,dev,test}.{en,de}`` (one segment per line),
``{split}.meta.tsv`` (source, group, kind per line), ``manifest.json`` (counts,
SHA-256 of every file, inputs and parameters) and a joint sentencepiece model
``spm.model`` (pad=0, unk=1, bos=2, eos=3).

Usage::

    python -m blockwise.data.mt_corpus --out data/mt [--vocab-size 8000] [--seed 0]

This module imports only the standard library, tqdm and sentencepiece (no other blockwise modules).
"""

from __future__ import annotations

import argparse
import collections
import gettext
import gzip
import hashlib
import json
import logging
import lzma
import os
import random
import re
import shutil
import subprocess
import sys
import time
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger("blockwise.data.mt_corpus")

DING_PATH = Path("/usr/share/trans/de-en")
LOCALE_DIR = Path("/usr/share/locale/de/LC_MESSAGES")
SPLITS = ("train", "dev", "test")
SOURCES = ("ding", "debian", "gettext")
FORMAT_VERSION = 1

# --------------------------------------------------------------------------------------
# Errors and small helpers
# --------------------------------------------------------------------------------------


class CorpusError(RuntimeError):
    """A problem with the inputs that the user can fix (message says how)."""


@dataclass(frozen=True)
class Pair:
    """One aligned segment pair.

    ``source`` is ``ding``/``debian``/``gettext``; ``group`` is the unit that is held
    out as a whole (Debian source package, gettext domain; empty for Ding);
    ``kind`` says what sort of segment it is (``sentence``, ``phrase``, ``short``,
    ``body``, ``message``).
    """

    en: str
    de: str
    source: str
    group: str = ""
    kind: str = ""


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _hash_unit(seed: int, *parts: str) -> int:
    """Deterministic 64-bit hash of ``parts`` under ``seed`` (independent of PYTHONHASHSEED)."""
    text = "\x1f".join((f"mt-corpus:{seed}",) + parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def word_count(text: str) -> int:
    """Number of whitespace-separated words."""
    return len(text.split())


# --------------------------------------------------------------------------------------
# Unicode / whitespace normalisation
# --------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------
# Ding dictionary
# --------------------------------------------------------------------------------------

_BRACES_RE = re.compile(r"\{[^{}]*\}")
_BRACKETS_RE = re.compile(r"\[[^\[\]]*\]")
_ANGLES_RE = re.compile(r"<[^<>]*>")
_PARENS_RE = re.compile(r"\([^()]*\)")
# Abbreviation notes like ``particulate matter /PM/`` or ``/PM2.5/``.
_ABBR_RE = re.compile(r"(?:(?<=\s)|^)/[^\s/][^/]*?/(?=$|[\s,;.!?])")
# ``sheer/pure mockery`` -> ``sheer mockery``; ``jdm./etw.`` -> ``jdm.``
_ALT_WORD = r"[^\W\d_][\w'’.-]*"
# a slash with spaces on both sides separates alternatives of unknown span: not resolved
_SLASH_ALT_RE = re.compile(rf"(?<![\w/])({_ALT_WORD})(?:(?:\s/(?!\s)|/\s?){_ALT_WORD})+(?![\w/])")
_SLASH_KEEP = {"and/or", "und/oder", "input/output", "i/o", "tcp/ip", "e/a", "km/h", "m/s"}
_SPACE_BEFORE_PUNCT_RE = re.compile(r"\s+([.,!?;:…])")
_EMPTY_BRACKETS_RE = re.compile(r"\(\s*\)|\[\s*\]")


def _resolve_slash_alternatives(text: str) -> str:
    def repl(m: re.Match[str]) -> str:
        whole = m.group(0)
        if whole.lower().replace(" ", "") in _SLASH_KEEP:
            return whole
        alts = [a.strip() for a in whole.split("/")]
        # compounds such as ``Ein-/Ausgabe`` or ``Eingabe/Ausgabe-Steuerung`` are not alternatives
        if any(a.endswith("-") for a in alts) or len({"-" in a for a in alts}) > 1:
            return whole
        return m.group(1)

    return _SLASH_ALT_RE.sub(repl, text)


def strip_ding_annotations(text: str) -> str:
    """Remove Ding mark-up from one side of one variant (before synonym splitting).

    Strips ``{n}``/``{vt}`` grammar marks, ``[comp.]``-style domain/register marks,
    ``<...>`` notes (inflected forms, separable-verb markers) and ``(...)`` notes
    (in Ding these are glosses or optional words; dropping them leaves a complete
    phrase on both sides).
    """
    text = _BRACES_RE.sub(" ", text)
    text = _BRACKETS_RE.sub(" ", text)
    text = _ANGLES_RE.sub(" ", text)
    prev = None
    while prev != text:  # nested parentheses
        prev = text
        text = _PARENS_RE.sub(" ", text)
    return text


def _tidy_ding_synonym(text: str) -> str:
    text = _SPACE_RE.sub(" ", text).strip()
    text = _ABBR_RE.sub(" ", text)
    text = _resolve_slash_alternatives(text)
    text = _EMPTY_BRACKETS_RE.sub(" ", text)
    text = _SPACE_RE.sub(" ", text).strip()
    text = _SPACE_BEFORE_PUNCT_RE.sub(r"\1", text)
    text = text.strip(" ;,")
    # stray unmatched brackets left by malformed notes
    if text.count("(") != text.count(")") or text.count("[") != text.count("]"):
        text = re.sub(r"[()\[\]]", "", text).strip()
    return text


def clean_ding_side(text: str) -> str:
    """Clean one side of one Ding variant and return its first synonym ('' if none)."""
    text = strip_ding_annotations(text)
    for synonym in text.split(";"):
        synonym = _tidy_ding_synonym(synonym)
        if " / " in synonym:  # ``im Wald / stehe ich an``: span of the alternatives unknown
            continue
        if synonym and any(ch.isalnum() for ch in synonym):
            return synonym
    return ""


_PHRASE_ENDINGS = ("sth.", "sb.", "etc.", "sth.’s", "sb.’s", "sth.'s", "sb.'s", "o.s.", "oneself.")


def is_example_sentence(en: str, de: str) -> bool:
    """Ding example sentence: both sides ≥ 4 words and the English ends in ``. ? !``.

    Dictionary phrases that merely end in an abbreviation (``to mark up sth.``) or
    are English infinitives (``to ...``) do not count.
    """
    en_s = en.rstrip("\"'”’ )")
    if word_count(en) < 4 or word_count(de) < 4 or not en_s.endswith((".", "?", "!")):
        return False
    if en_s.lower().endswith(_PHRASE_ENDINGS) or en.startswith("to "):
        return False
    return True


def parse_ding_line(line: str) -> list[Pair]:
    """Parse one line of the Ding file into aligned pairs.

    ``German | variant :: English | variant`` is split on `` :: `` and then on
    `` | ``; variants are paired in order (lines whose sides have different variant
    counts are skipped).  Each side keeps its first synonym (``;``-separated) after
    annotation stripping.  Comments (``#``) and malformed lines give no pairs.
    """
    line = line.rstrip("\n")
    if not line.strip() or line.startswith("#"):
        return []
    sides = line.split(" :: ")
    if len(sides) != 2:
        return []
    de_vars, en_vars = sides[0].split(" | "), sides[1].split(" | ")
    if len(de_vars) != len(en_vars):
        return []
    pairs = []
    for de_raw, en_raw in zip(de_vars, en_vars, strict=True):
        de, en = clean_ding_side(de_raw), clean_ding_side(en_raw)
        if not de or not en:
            continue
        kind = "sentence" if is_example_sentence(en, de) else "phrase"
        pairs.append(Pair(en=en, de=de, source="ding", group="", kind=kind))
    return pairs


def read_ding(
    path: Path = DING_PATH, *, min_words: int = 2, progress: bool = True
) -> tuple[list[Pair], dict[str, int]]:
    """Read the Ding dictionary file.

    Keeps example sentences and multi-word phrases: a pair is kept when at least one
    side has ``min_words`` words (``Aalfang :: eel fishing`` stays, ``Aalhaut ::
    eelskin`` goes).  Returns the pairs and counts (``variants``: aligned variant
    pairs before filtering; ``single_word``: dropped one-word glossary pairs).
    """
    path = Path(path)
    if not path.exists():
        raise CorpusError(
            f"Ding dictionary not found at {path}. Install the Debian package with "
            "`apt-get install -y trans-de-en` (prefix `sudo` if not root), or pass --ding PATH."
        )
    stats = collections.Counter()
    pairs: list[Pair] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in tqdm(f, desc="ding", unit=" lines", disable=not progress, mininterval=1.0):
            if line.startswith("#") or not line.strip():
                continue
            stats["lines"] += 1
            sides = line.rstrip("\n").split(" :: ")
            if len(sides) == 2 and len(sides[0].split(" | ")) != len(sides[1].split(" | ")):
                stats["variant_count_mismatch"] += 1
            for p in parse_ding_line(line):
                stats["variants"] += 1
                if max(word_count(p.en), word_count(p.de)) < min_words:
                    stats["single_word"] += 1
                    continue
                pairs.append(p)
    stats["pairs"] = len(pairs)
    stats["sentences"] = sum(p.kind == "sentence" for p in pairs)
    return pairs, dict(stats)


# --------------------------------------------------------------------------------------
# Debian package descriptions
# --------------------------------------------------------------------------------------


def fetch_debian_translations(apt_dir: Path, *, refresh: bool = False) -> Path:
    """Fetch apt's index files (with Translation-en/-de) into ``apt_dir/lists``.

    Runs ``apt-get update`` with its own ``Dir::State::Lists`` and ``Dir::Cache`` so
    the system's lists stay untouched.  Skips the download when a
    ``*_i18n_Translation-de*`` file is already there (unless ``refresh``).
    Returns the lists folder.
    """
    lists = Path(apt_dir) / "lists"
    if not refresh and any(lists.glob("*_i18n_Translation-de*")):
        log.info("apt lists already in %s (use --refresh-apt to fetch again)", lists)
        return lists
    if shutil.which("apt-get") is None:
        raise CorpusError(
            "apt-get not found: the Debian descriptions need a Debian/Ubuntu system (or pass --no-debian)."
        )
    cache = Path(apt_dir) / "cache"
    for d in (lists / "partial", cache / "archives" / "partial"):
        d.mkdir(parents=True, exist_ok=True)
    cmd = [
        "apt-get", "-q", "update",
        "-o", f"Dir::State::Lists={lists.resolve()}",
        "-o", f"Dir::Cache={cache.resolve()}",
        "-o", "Dir::Cache::pkgcache=",
        "-o", "Dir::Cache::srcpkgcache=",
        "-o", "Acquire::Languages=en,de",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # root: download as root into our own folder (the _apt sandbox user cannot write there)
        cmd += ["-o", "APT::Sandbox::User=root"]
    else:
        cmd += ["-o", "Debug::NoLocking=1"]
    log.info("fetching Debian translation index: %s", " ".join(cmd))
    res = subprocess.run(cmd, capture_output=True, text=True)
    have = all(any(lists.glob(f"*_i18n_Translation-{lang}*")) for lang in ("de", "en"))
    if not have:
        raise CorpusError(
            "apt-get update into our own lists folder gave no Translation-de/-en files "
            f"(exit {res.returncode}). Command: {' '.join(cmd)}\n{res.stderr.strip()[-2000:]}"
        )
    if res.returncode != 0:  # e.g. one unreachable third-party source: the Debian files came anyway
        log.warning("apt-get update exited %d (continuing): %s", res.returncode, res.stderr.strip()[-500:])
    return lists


def read_index_text(path: Path) -> str:
    """Read an apt index file, decompressing ``.lz4`` (via ``lz4 -dc``), ``.gz``, ``.xz``."""
    path = Path(path)
    name = path.name
    if name.endswith(".lz4"):
        if shutil.which("lz4") is None:
            raise CorpusError(f"{path} is lz4-compressed but the `lz4` tool is missing: `apt-get install -y lz4`.")
        res = subprocess.run(["lz4", "-dc", str(path)], capture_output=True, check=True)
        data = res.stdout
    elif name.endswith(".gz"):
        data = gzip.decompress(path.read_bytes())
    elif name.endswith(".xz"):
        data = lzma.decompress(path.read_bytes())
    else:
        data = path.read_bytes()
    return data.decode("utf-8", errors="replace")


def iter_deb822(text: str) -> Iterator[dict[str, str]]:
    """Yield the stanzas of a deb822 file as ``{field: value}`` (continuation lines kept with ``\\n``)."""
    record: dict[str, str] = {}
    last = None
    for line in text.split("\n"):
        if not line.strip():
            if record:
                yield record
            record, last = {}, None
        elif line[0] in " \t":
            if last is not None:
                record[last] += "\n" + line
        else:
            key, _, value = line.partition(":")
            last = key.strip()
            record[last] = value.strip()
    if record:
        yield record


def parse_translation_index(text: str, lang: str) -> dict[str, tuple[str, str]]:
    """Map ``Description-md5`` -> ``(package, description)`` for one Translation-LANG file.

    The description is the raw ``Description-LANG`` value: short description on the
    first line, body lines (with their leading space) after it.  When several packages
    share a description, the first is kept.
    """
    out: dict[str, tuple[str, str]] = {}
    fld = f"Description-{lang}"
    for rec in iter_deb822(text):
        md5, desc = rec.get("Description-md5"), rec.get(fld)
        if md5 and desc is not None and md5 not in out:
            out[md5] = (rec.get("Package", ""), desc)
    return out


def parse_source_map(text: str) -> dict[str, str]:
    """Map binary package -> source package from a ``Packages`` index."""
    out: dict[str, str] = {}
    for rec in iter_deb822(text):
        pkg = rec.get("Package")
        if pkg:
            src = rec.get("Source", pkg).split("(")[0].strip() or pkg
            out.setdefault(pkg, src)
    return out


_BULLET_RE = re.compile(r"^(?:[*\-+o•]|\d{1,2}[.)])\s+")


def split_description(desc: str) -> tuple[str, list[list[str]]]:
    """Split a Debian description into its short line and body paragraphs.

    Paragraphs are separated by `` .`` lines.  Each paragraph is returned as a list of
    segments: the running text, plus one segment per list item (lines whose text
    starts with ``*``, ``-``, ``+``, ``o`` or ``1.``); item continuation lines join
    their item.  Bullet markers are removed.
    """
    lines = desc.split("\n")
    short = lines[0].strip()
    paragraphs: list[list[str]] = []
    current: list[str] = []
    for raw in lines[1:]:
        body = raw[1:] if raw.startswith(" ") else raw
        if body.strip() == ".":
            if current:
                paragraphs.append(current)
            current = []
            continue
        text = body.strip()
        if not text:
            continue
        m = _BULLET_RE.match(text)
        if m:
            current.append(text[m.end():].strip())
        elif current and (body.startswith(" ") or not current[-1]):
            # indented continuation of a list item (or of verbatim text)
            current[-1] = (current[-1] + " " + text).strip()
        elif current and len(current) > 1:
            # unindented text after a list: a new running-text segment
            current.append(text)
        elif current:
            current[-1] = current[-1] + " " + text
        else:
            current.append(text)
    if current:
        paragraphs.append(current)
    return short, paragraphs


_ABBREVIATIONS = {
    "e.g.", "i.e.", "etc.", "vs.", "cf.", "approx.", "incl.", "inc.", "ltd.", "mr.", "mrs.", "dr.", "st.",
    "no.", "nr.", "jr.", "sr.", "prof.", "fig.", "vol.", "ver.", "z.b.", "d.h.", "u.a.", "bzw.", "ca.",
    "usw.", "ggf.", "evtl.", "inkl.", "bzgl.", "sog.", "bspw.", "zb.", "vgl.", "s.", "u.", "z.", "d.",
    "h.", "a.", "b.", "o.", "ä.", "v.", "al.", "resp.", "bsp.", "max.", "min.", "abs.", "allg.", "ehem.",
    "eigtl.", "einschl.", "engl.", "gem.", "insb.", "jh.", "mind.", "mio.", "mrd.", "od.", "std.", "tel.",
    "urspr.", "zzgl.", "zz.", "zzt.", "ff.", "f.", "dt.", "bd.", "hrsg.", "sek.",
}
_SENT_END_RE = re.compile(r"[.!?][\"'”’)]*$")


def split_sentences(text: str) -> list[str]:
    """Conservative sentence splitter for description paragraphs.

    Splits after a token ending in ``. ! ?`` when the next token starts with an
    uppercase letter, a digit or a quote, unless the token is a known abbreviation,
    a single letter/number (``A.``, ``2.``) or an initialism (``z.B.``, ``U.S.``).
    """
    tokens = text.split()
    out: list[str] = []
    start = 0
    for i in range(len(tokens) - 1):
        tok, nxt = tokens[i], tokens[i + 1]
        if not _SENT_END_RE.search(tok):
            continue
        core = tok.rstrip("\"'”’)")
        low = core.lower()
        if core.endswith(".") and (
            low in _ABBREVIATIONS
            or re.fullmatch(r"(?:\w\.)+", core)  # A. 2. z.B. U.S.
            or re.fullmatch(r"\d+\.", core)
            or core.startswith("(") and core.count("(") > core.count(")")
        ):
            continue
        if nxt[0].isupper() or nxt[0].isdigit() or nxt[0] in "\"'„“‘":
            out.append(" ".join(tokens[start : i + 1]))
            start = i + 1
    out.append(" ".join(tokens[start:]))
    return [s for s in out if s]


def align_description(
    en_desc: str, de_desc: str, *, sentences: bool = True
) -> tuple[list[tuple[str, str, str]], collections.Counter]:
    """Align an English description with its German translation.

    Returns ``[(en, de, kind)]`` and counts.  The short descriptions form one pair
    (``kind="short"``).  Body paragraphs are aligned only if both sides have the same
    number of paragraphs; within a paragraph, list items are aligned only if both
    sides have the same number of segments (else the paragraph is dropped); and a
    segment is split into sentences when both sides give the same number (else it
    stays whole).  Body pairs have ``kind="body"``.
    """
    stats: collections.Counter = collections.Counter()
    en_short, en_paras = split_description(en_desc)
    de_short, de_paras = split_description(de_desc)
    out: list[tuple[str, str, str]] = []
    if en_short and de_short:
        out.append((en_short, de_short, "short"))
    if len(en_paras) != len(de_paras):
        stats["paragraph_count_mismatch"] += 1
        return out, stats
    for en_p, de_p in zip(en_paras, de_paras, strict=True):
        if len(en_p) != len(de_p):
            stats["list_item_mismatch"] += 1
            continue
        for en_seg, de_seg in zip(en_p, de_p, strict=True):
            if sentences:
                en_s, de_s = split_sentences(en_seg), split_sentences(de_seg)
                if len(en_s) == len(de_s) and len(en_s) > 1:
                    stats["segments_sentence_split"] += 1
                    out.extend((e, d, "body") for e, d in zip(en_s, de_s, strict=True))
                    continue
                if len(en_s) != len(de_s):
                    stats["segments_sentence_mismatch"] += 1
            out.append((en_seg, de_seg, "body"))
    return out, stats


def _find_index_files(lists: Path, pattern: str) -> list[Path]:
    return sorted(p for p in lists.glob(pattern) if p.is_file())


def read_debian_descriptions(
    lists: Path, *, sentences: bool = True, progress: bool = True
) -> tuple[list[Pair], dict[str, int], dict[str, str]]:
    """Read and align the Debian descriptions found in an apt ``lists`` folder.

    Joins all ``*_i18n_Translation-de*`` records with ``*_i18n_Translation-en*``
    records on ``Description-md5``.  Each pair's group is the source package (from
    the ``*_Packages*`` index when present, else the binary package name).  Returns
    pairs, counts and ``{file name: sha256 of its decompressed text}``.
    """
    lists = Path(lists)
    de_files = _find_index_files(lists, "*_i18n_Translation-de*")
    en_files = _find_index_files(lists, "*_i18n_Translation-en*")
    if not de_files or not en_files:
        raise CorpusError(f"no Translation-de/-en index files in {lists}; run without --no-fetch or check apt sources.")
    inputs: dict[str, str] = {}
    maps: dict[str, dict[str, tuple[str, str]]] = {"en": {}, "de": {}}
    for lang, files in (("en", en_files), ("de", de_files)):
        for p in files:
            text = read_index_text(p)
            # hash of the decompressed text: apt's local compression setting does not matter
            inputs[p.name] = hashlib.sha256(text.encode("utf-8")).hexdigest()
            for md5, v in parse_translation_index(text, lang).items():
                maps[lang].setdefault(md5, v)
    en_map, de_map = maps["en"], maps["de"]
    src_map: dict[str, str] = {}
    for p in _find_index_files(lists, "*_Packages*"):
        for k, v in parse_source_map(read_index_text(p)).items():
            src_map.setdefault(k, v)
    stats: collections.Counter = collections.Counter(
        descriptions_de=len(de_map), descriptions_en=len(en_map), packages_indexed=len(src_map)
    )
    pairs: list[Pair] = []
    for md5 in tqdm(sorted(de_map), desc="debian", unit=" desc", disable=not progress, mininterval=1.0):
        if md5 not in en_map:
            stats["no_english"] += 1
            continue
        stats["joined"] += 1
        pkg, de_desc = de_map[md5]
        _, en_desc = en_map[md5]
        group = src_map.get(pkg, pkg)
        aligned, st = align_description(en_desc, de_desc, sentences=sentences)
        stats.update(st)
        for en, de, kind in aligned:
            pairs.append(Pair(en=en, de=de, source="debian", group=group, kind=kind))
    stats["pairs"] = len(pairs)
    return pairs, dict(stats), inputs


# --------------------------------------------------------------------------------------
# gettext catalogues
# --------------------------------------------------------------------------------------

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
        inputs[path.name] = _sha256_file(path)
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
        pairs = sorted(pairs, key=lambda p: (_hash_unit(seed, "gettext", p.en, p.de), p.en, p.de))[:max_pairs]
        stats["capped_away"] = stats["pairs_before_cap"] - max_pairs
    stats["pairs"] = len(pairs)
    return pairs, dict(stats), inputs


# --------------------------------------------------------------------------------------
# Cleaning
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------------------


@dataclass
class SplitConfig:
    """Sizes of the held-out splits.

    ``n_test``/``n_dev`` are targets; ``ding_share`` of each comes from sampled Ding
    example sentences, the rest from Debian descriptions of held-out source packages
    (whole packages are added in hash order until the target is reached).  A held-out
    package contributes at most ``max_per_group`` pairs (0: no cap); the rest of a big
    package is left out of every split, so one package cannot dominate dev/test.
    """

    n_test: int = 2000
    n_dev: int = 2000
    ding_share: float = 0.5
    seed: int = 0
    max_per_group: int = 40


def split_corpus(pairs: Sequence[Pair], config: SplitConfig | None = None) -> tuple[dict[str, list[Pair]], dict]:
    """Deterministic train/dev/test split with no English key in two splits.

    * Ding example sentences are ranked by a seeded hash of their English key; the
      first go to test, the next to dev.
    * Debian source packages are ranked by a seeded hash of their name; whole
      packages go to test, then dev, until each reaches its Debian share (at most
      ``max_per_group`` pairs each; the overflow goes nowhere, never to train).
    * Test and dev keep one pair per English key, and a key belongs to one split
      only: first come first served in the order Ding test, Ding dev, Debian test,
      Debian dev, train (so train loses the pairs that collide with held-out ones).
    * gettext pairs and everything else go to train.

    The result depends only on the pair contents and the seed, not on input order
    (except which of several pairs sharing an English key wins a collision).  Returns the splits and a record
    of held-out groups and drops.
    """
    cfg = config or SplitConfig()
    seed = cfg.seed
    n_ding = {"test": round(cfg.n_test * cfg.ding_share), "dev": round(cfg.n_dev * cfg.ding_share)}
    n_deb = {"test": cfg.n_test - n_ding["test"], "dev": cfg.n_dev - n_ding["dev"]}

    taken: dict[str, str] = {}  # english key -> split
    splits: dict[str, list[Pair]] = {s: [] for s in SPLITS}
    info: dict = {
        "held_out_groups": {"test": [], "dev": []},
        "dropped_cross_split": collections.Counter(),
        "held_out_overflow": 0,
    }

    def add(split: str, p: Pair) -> bool:
        k = english_key(p.en)
        owner = taken.get(k)
        if owner is not None and (owner != split or split != "train"):
            info["dropped_cross_split"][f"{p.source}:{split}"] += 1
            return False
        taken[k] = split
        splits[split].append(p)
        return True

    # 1) Ding example sentences
    ding_sent = [p for p in pairs if p.source == "ding" and p.kind == "sentence"]
    ding_sent.sort(key=lambda p: (_hash_unit(seed, "ding", english_key(p.en)), p.en, p.de))
    chosen: set[int] = set()
    pos = 0
    for split in ("test", "dev"):
        n = 0
        while pos < len(ding_sent) and n < n_ding[split]:
            p = ding_sent[pos]
            pos += 1
            if english_key(p.en) in taken:  # stays in the pool; handled (and counted) with train
                continue
            if add(split, p):
                chosen.add(id(p))
                n += 1
    # 2) Debian held-out packages
    by_group: dict[str, list[Pair]] = collections.defaultdict(list)
    for p in pairs:
        if p.source == "debian":
            by_group[p.group].append(p)
    groups = sorted(by_group, key=lambda g: (_hash_unit(seed, "debian-group", g), g))
    held: dict[str, str] = {}
    gi = 0
    for split in ("test", "dev"):
        n = 0
        while gi < len(groups) and n < n_deb[split]:
            g = groups[gi]
            gi += 1
            held[g] = split
            info["held_out_groups"][split].append(g)
            rows = by_group[g]
            if cfg.max_per_group and len(rows) > cfg.max_per_group:
                ranked = sorted(rows, key=lambda p: (_hash_unit(seed, "in-group", p.en, p.de), p.en, p.de))
                keep = {id(p) for p in ranked[: cfg.max_per_group]}
                info["held_out_overflow"] += len(rows) - len(keep)
                rows = [p for p in rows if id(p) in keep]
            for p in rows:
                if add(split, p):
                    n += 1
    # 3) train: everything else
    for p in pairs:
        if id(p) in chosen or (p.source == "debian" and p.group in held):
            continue
        add("train", p)
    info["dropped_cross_split"] = dict(info["dropped_cross_split"])
    return splits, info


# --------------------------------------------------------------------------------------
# Writing and sentencepiece
# --------------------------------------------------------------------------------------


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
            for p in rows:
                for text in (p.en, p.de):
                    if any(c in text for c in "\t\n\r") or text != text.strip() or not text:
                        raise ValueError(f"unnormalised segment reached the writer: {text!r}")
                fe.write(p.en + "\n")
                fd.write(p.de + "\n")
                fm.write(f"{p.source}\t{p.group}\t{p.kind}\n")
        for f in files.values():
            digests[f.name] = _sha256_file(f)
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


# --------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------


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
    inputs["ding"] = {str(cfg.ding_path): _sha256_file(Path(cfg.ding_path))}
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
            digests[name] = _sha256_file(out / name)

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


if __name__ == "__main__":
    sys.exit(main())
