"""Debian package descriptions: the ``Translation-en``/``-de`` index files apt downloads, and the ``Packages`` index.

One parser for both readers: :func:`read_debian_descriptions` (English descriptions aligned with their German
translations, for the MT corpus) and :func:`debian_descriptions` (English descriptions alone, for the LM prompts).
The files are deb822 stanzas; a description's first line is the short description and its indented body follows,
with `` .`` between paragraphs.
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import logging
import lzma
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from ..pairs import CorpusError, Pair

log = logging.getLogger(__name__)


def apt_user_options() -> list[str]:
    """apt options for downloading into a folder of our own (index files here, ``.deb`` files in the docs source).

    As root, apt drops to the ``_apt`` sandbox user, who cannot write into our folders: download as root instead.
    Otherwise skip apt's lock files, which only root may take.
    """
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return ["-o", "APT::Sandbox::User=root"]
    return ["-o", "Debug::NoLocking=1"]


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
    cmd += apt_user_options()
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


def find_index_files(lists: Path, pattern: str) -> list[Path]:
    """The files (not folders such as ``*.diff``) in ``lists`` that match ``pattern``, sorted by name."""
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
    de_files = find_index_files(lists, "*_i18n_Translation-de*")
    en_files = find_index_files(lists, "*_i18n_Translation-en*")
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
    for p in find_index_files(lists, "*_Packages*"):
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


# -- English descriptions alone (LM prompts) -------------------------------------------------------------------------
def debian_descriptions(lists_dir: str | Path) -> list[tuple[str, str]]:
    """(short, long) English package descriptions from the ``*_i18n_Translation-en*`` files, for the LM prompts.

    ``long`` is the body with one paragraph per line (list markers kept); a short description seen before is skipped.
    """
    out, seen = [], set()
    for path in find_index_files(Path(lists_dir), "*_i18n_Translation-en*"):
        for record in iter_deb822(read_index_text(path)):
            desc = record.get("Description-en")
            if desc is None:
                continue
            short, *body = desc.split("\n")
            long = " ".join("\n" if ln.strip() == "." else ln.strip() for ln in body).replace(" \n ", "\n").strip()
            if short and short not in seen:
                seen.add(short)
                out.append((short, long))
    return out
