"""Debian's paired documentation packages: English and German manuals aligned block by block, for the MT corpus.

Why: the survey in ``results/mt/data_sources.md`` found that Debian ships the same manuals in both languages as
binary packages (man pages, LibreOffice help, GNOME Mallard help, the GIMP manual, the Debian books) — real prose,
more English words than the whole first corpus, and reachable from a machine that sees only the Debian mirror.

How, per document set (:data:`DOC_SETS`):

1. ``apt-get download`` the ``.deb`` files into a cache folder (nothing is installed; a package that cannot be had is
   skipped with a warning); ``dpkg-deb --fsys-tarfile … | tar -x`` of the relevant folders into a scratch folder.
2. Pair the documents: the same relative file name under the English and the German folder (``man1/ls.1.gz`` ↔
   ``de/man1/ls.1.gz``, ``help/C/gedit/x.page`` ↔ ``help/de/gedit/x.page``; a suffix may differ, ``.en.html`` ↔
   ``.de.html``).
3. Extract blocks (paragraphs, headings, list items, table cells) in document order: :func:`roff_blocks` for man
   pages, :func:`markup_blocks` for HTML, Mallard and DocBook XML.  Code (``<pre>``, ``.nf``) and navigation are
   left out: they are untranslated or not prose.
4. Align the two block sequences with :func:`align_blocks`, a Gale–Church length-based dynamic programme
   (1–1, 1–0, 0–1, 2–1, 1–2 moves; 2–1/1–2 beads are merged, 1–0/0–1 dropped); when both documents have the same
   number of blocks and every block pair has a plausible length ratio, the blocks are simply paired in order.
5. Filter beads (:func:`bead_problem`): odd character-length ratio, different numbers, German side that is still
   English (untranslated), and split a pair into sentences when both sides give the same number of sentences.

:func:`read_debian_docs` returns :class:`~blockwise.data.pairs.Pair` rows (``source="docs"``, ``kind`` = the
document set, ``group`` = the German package) with counts, the package versions used and their licences.
"""

from __future__ import annotations

import collections
import gzip
import html.parser
import logging
import math
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..pairs import CorpusError, Pair
from .debian import apt_user_options, split_sentences
from .docs import _roff_text

log = logging.getLogger(__name__)


# -- document sets -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DocSet:
    """One manual (or family of manuals) shipped in English and German.

    ``en_dir``/``de_dir`` are folders inside the packages' file trees; ``pattern`` is a glob below ``en_dir`` that
    picks the English documents; the German twin of ``en_dir/REL`` is ``de_dir/REL`` with ``en_suffix`` replaced by
    ``de_suffix`` (when set).  ``licence`` is what the packages' copyright files say (the parsed ``License:`` fields
    are recorded as well).  ``any_package`` (GNOME help): every package listed may hold both languages.
    """

    tag: str
    en_packages: tuple[str, ...]
    de_packages: tuple[str, ...]
    en_dir: str
    de_dir: str
    pattern: str
    fmt: str  # "roff" or "markup"
    licence: str
    en_suffix: str = ""
    de_suffix: str = ""
    exclude: tuple[str, ...] = ()

    @property
    def packages(self) -> tuple[str, ...]:
        """All packages, English first, without repeats."""
        return tuple(dict.fromkeys(self.en_packages + self.de_packages))


# GNOME programs whose packages ship Mallard help in C (English) and de; a package without German help adds nothing.
GNOME_HELP_PACKAGES: tuple[str, ...] = (
    "gnome-user-docs", "gnome-devel-docs", "evince-common", "orca", "gedit-common", "eog", "gnome-calculator",
    "gnome-system-monitor", "baobab", "gnome-terminal-data", "totem-common", "file-roller", "cheese-common",
    "gnome-clocks", "gnome-maps", "gnome-weather", "gnome-contacts", "gnome-disk-utility", "simple-scan",
    "rhythmbox-data", "shotwell-common", "seahorse", "gnome-logs", "gnome-font-viewer", "gnome-characters",
    "zenity-common", "aisleriot", "gnome-mines", "gnome-sudoku", "quadrapassel", "four-in-a-row", "swell-foop",
    "iagno", "lightsoff", "tali", "hitori", "gnome-chess", "gnome-klotski", "gnome-mahjongg", "gnome-nibbles",
    "gnome-robots", "gnome-tetravex", "five-or-more", "atomix", "polari", "gnome-boxes", "gnome-photos", "gnome-music",
    "evolution-common", "glade", "pitivi", "brasero-common", "sound-juicer", "accerciser", "dconf-editor",
    "devhelp-common", "ghex", "meld", "gnome-dictionary", "gucharmap", "yelp", "gnote", "gnome-sound-recorder",
    "vinagre", "gnome-calendar", "gnome-software-common", "nautilus-data", "gnome-control-center-data",
    "gnome-builder", "gnome-screenshot", "gnome-power-manager", "gnome-initial-setup", "deja-dup", "gnome-usage",
    "easytag", "gbrainy", "glom", "lollypop", "gthumb-data", "gnome-connections",
)

DOC_SETS: tuple[DocSet, ...] = (
    DocSet("man", ("manpages", "manpages-dev"), ("manpages-de", "manpages-de-dev"), "usr/share/man",
           "usr/share/man/de", "man*/*", "roff", "GPL-3+ (German translations); English pages: man-pages licences"),
    DocSet("libreoffice", ("libreoffice-help-en-us",), ("libreoffice-help-de",), "usr/share/libreoffice/help/en-US",
           "usr/share/libreoffice/help/de", "text/**/*.html", "markup", "MPL-2.0"),
    DocSet("gnome", GNOME_HELP_PACKAGES, GNOME_HELP_PACKAGES, "usr/share/help/C", "usr/share/help/de", "*/*.page",
           "markup", "CC-BY-SA-3.0 (most GNOME help; see the per-package licences)", exclude=("legal.xml",)),
    DocSet("gimp", ("gimp-help-en",), ("gimp-help-de",), "usr/share/gimp/2.0/help/en", "usr/share/gimp/2.0/help/de",
           "**/*.html", "markup", "GFDL-1.2"),
    DocSet("debian-handbook", ("debian-handbook",), ("debian-handbook",), "usr/share/doc/debian-handbook/html/en-US",
           "usr/share/doc/debian-handbook/html/de-DE", "*.html", "markup", "GPL-2+ or CC-BY-SA-3.0"),
    DocSet("debian-reference", ("debian-reference-en",), ("debian-reference-de",), "usr/share/debian-reference",
           "usr/share/debian-reference", "*.en.html", "markup", "GPL-2+", en_suffix=".en.html",
           de_suffix=".de.html"),
    DocSet("installation-guide", ("installation-guide-amd64",), ("installation-guide-amd64",),
           "usr/share/doc/installation-guide-amd64/en", "usr/share/doc/installation-guide-amd64/de", "*.html",
           "markup", "GPL-2+"),
    DocSet("developers-reference", ("developers-reference",), ("developers-reference-de",),
           "usr/share/developers-reference", "usr/share/developers-reference/de", "*.html", "markup", "MIT",
           exclude=("developers-reference.html", "search.html", "genindex.html")),
    DocSet("debian-edu", ("debian-edu-doc-en",), ("debian-edu-doc-de",), "usr/share/doc/debian-edu-doc-en",
           "usr/share/doc/debian-edu-doc-de", "*-manual.html", "markup", "GPL-2+"),
)
DOC_SET_TAGS: tuple[str, ...] = tuple(d.tag for d in DOC_SETS)
SYSTEM_MAN_DIR = Path("/usr/share/man")


# -- downloading and unpacking ----------------------------------------------------------------------------------------
def cached_deb(cache: Path, package: str) -> Path | None:
    """The ``.deb`` of ``package`` in ``cache`` (the last by name when several versions lie there), or None."""
    found = sorted(Path(cache).glob(f"{package}_*.deb"))
    if len(found) > 1:
        log.warning("several versions of %s in %s; using %s", package, cache, found[-1].name)
    return found[-1] if found else None


def download_debs(packages: Sequence[str], cache: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Fetch the ``.deb`` files of ``packages`` into ``cache`` with ``apt-get download`` (never installs anything).

    Packages already in the cache are not fetched again.  One ``apt-get download`` call fetches the rest; if it
    fails (apt refuses the whole call when one name is unknown), each package is tried alone so that one missing
    package costs only itself.  Returns ``{package: .deb path}`` and ``{package: why it was skipped}``.
    """
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    have = {p: d for p in packages if (d := cached_deb(cache, p)) is not None}
    missing = [p for p in dict.fromkeys(packages) if p not in have]
    failed: dict[str, str] = {}
    if missing:
        if shutil.which("apt-get") is None:
            return have, {p: "apt-get not found" for p in missing}
        base = ["apt-get", "-q", "download", *apt_user_options()]
        res = subprocess.run(base + missing, cwd=cache, capture_output=True, text=True)
        if res.returncode != 0:
            for p in missing:
                if cached_deb(cache, p) is not None:
                    continue
                one = subprocess.run(base + [p], cwd=cache, capture_output=True, text=True)
                if one.returncode != 0:
                    failed[p] = (one.stderr.strip().splitlines() or [f"exit {one.returncode}"])[-1]
        for p in missing:
            if p not in failed:
                if (d := cached_deb(cache, p)) is not None:
                    have[p] = d
                else:
                    failed[p] = "apt-get download gave no file"
    if failed:
        log.warning("skipped %d package(s) that could not be downloaded: %s", len(failed),
                    ", ".join(f"{p} ({why})" for p, why in sorted(failed.items())))
    return have, failed


def deb_version(deb: Path) -> str:
    """Version from a ``.deb`` file name ``NAME_VERSION_ARCH.deb`` (``%3a`` is apt's escaped epoch colon)."""
    parts = deb.name[: -len(".deb")].split("_")
    return parts[1].replace("%3a", ":") if len(parts) >= 3 else ""


def unpack_deb(deb: Path, dest: Path, folders: Iterable[str]) -> None:
    """Extract the files under ``folders`` (and the copyright files) of ``deb`` into ``dest``.

    Uses ``dpkg-deb --fsys-tarfile`` piped to ``tar``, so nothing touches the dpkg database.  A folder the package
    does not have is not an error (``tar --wildcards`` with no match only warns).
    """
    dest.mkdir(parents=True, exist_ok=True)
    if shutil.which("dpkg-deb") is None:
        raise CorpusError("dpkg-deb not found: the documentation source needs a Debian system (or drop --docs).")
    patterns = [f"./{f.strip('/')}/*" for f in folders] + ["./usr/share/doc/*/copyright"]
    dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    tar = subprocess.run(["tar", "-x", "-C", str(dest), "--wildcards", "--no-same-owner", *patterns],
                         stdin=dpkg.stdout, capture_output=True, text=True)
    assert dpkg.stdout is not None
    dpkg.stdout.close()
    err = dpkg.stderr.read().decode("utf-8", "replace") if dpkg.stderr else ""
    if dpkg.wait() != 0:
        raise CorpusError(f"dpkg-deb could not read {deb}: {err.strip()[-500:]}")
    if tar.returncode not in (0, 2):  # 2: some pattern matched nothing
        raise CorpusError(f"tar failed on {deb} (exit {tar.returncode}): {tar.stderr.strip()[-500:]}")


def copyright_licences(root: Path, package: str) -> list[str]:
    """The distinct ``License:`` names in a package's DEP-5 copyright file (empty when there is none)."""
    path = root / "usr/share/doc" / package / "copyright"
    if not path.is_file():
        return []
    names = re.findall(r"^License:[ \t]*(\S[^\n]*)$", path.read_text("utf-8", "replace"), flags=re.M)
    return sorted({n.strip() for n in names if n.strip()})


# -- block extraction --------------------------------------------------------------------------------------------------
_ROFF_CHARS = {
    "aq": "'", "dq": '"', "lq": "“", "rq": "”", "Bq": "„", "bq": "‚", "oq": "‘", "cq": "’", "Fo": "«", "Fc": "»",
    "fo": "‹", "fc": "›", "em": "—", "en": "–", "hy": "-", "mi": "-", "ti": "~", "ha": "^", "rs": "\\", "bu": "•",
    "co": "©", "rg": "®", "tm": "™", "de": "°", "mu": "×", "di": "÷", "+-": "±", "->": "→", "<-": "←", "<=": "≤",
    ">=": "≥", "!=": "≠", "sc": "§", "ss": "ß", ':a': "ä", ':o': "ö", ':u': "ü", ':A': "Ä", ':O': "Ö", ':U': "Ü",
}
_ROFF_NAMED_RE = re.compile(r"\\\((..)|\\\[([^\]\s]{1,12})\]")
_ROFF_BREAK = (".PP", ".P", ".LP", ".TP", ".IP", ".HP", ".SH", ".SS", ".sp", ".TQ", ".RS", ".RE", ".in", ".TH",
               ".SY", ".YS", ".UR", ".UE", ".MT", ".ME", ".TS", ".TE", ".bp", ".ne", ".ti")
_ROFF_CODE_START = (".nf", ".EX", ".TS", ".EQ", ".PS")
_ROFF_CODE_END = {".nf": ".fi", ".EX": ".EE", ".TS": ".TE", ".EQ": ".EN", ".PS": ".PE"}


def _roff_named(line: str) -> str:
    """Replace roff's named characters (``\\(aq``, ``\\[lq]``) with Unicode; unknown ones vanish."""
    return _ROFF_NAMED_RE.sub(lambda m: _ROFF_CHARS.get(m.group(1) or m.group(2), ""), line)


def _macro(line: str) -> str:
    return line.split(None, 1)[0] if line.strip() else ""


def roff_blocks(text: str) -> list[str]:
    """Paragraphs, headings and option terms of a man page, in order.

    A block ends at a paragraph or section macro (``.PP``, ``.TP``, ``.SH`` …) or a blank line; the line after
    ``.TP`` (the option or term) is a block of its own; ``.SH``/``.SS`` arguments are heading blocks; ``.nf``…``.fi``,
    ``.EX``…``.EE`` and tables are left out (code and layout, not prose).  Font/size escapes are dropped by the
    shared :func:`blockwise.data.sources.docs._roff_text`; named characters become Unicode first, so German quotes
    and apostrophes survive.  A page that is only a ``.so`` link gives no blocks.
    """
    lines = text.splitlines()
    if lines and lines[0].startswith(".so "):
        return []
    blocks: list[str] = []
    cur: list[str] = []
    in_code: str | None = None
    term_next = False

    def flush() -> None:
        if cur:
            joined = " ".join(cur).strip()
            if joined:
                blocks.append(joined)
            cur.clear()

    for raw in lines:
        line = raw.rstrip()
        mac = _macro(line) if line.startswith((".", "'")) else ""
        if in_code is not None:
            if mac == _ROFF_CODE_END[in_code]:
                in_code = None
            continue
        if mac in _ROFF_CODE_START:
            flush()
            in_code = mac
            continue
        if not line.strip():
            flush()
            continue
        if mac in (".SH", ".SS"):
            flush()
            head = _roff_text(_roff_named(line.split(None, 1)[1] if " " in line else "").replace('"', ""))
            if head:
                blocks.append(head)
            continue
        if mac in _ROFF_BREAK:
            flush()
            term_next = mac in (".TP", ".TQ")
            continue
        if mac == ".br":
            continue
        piece = _roff_text(_roff_named(line))
        if term_next and (piece or not mac):
            term_next = False
            if piece:
                blocks.append(piece)
            continue
        if piece:
            cur.append(piece)
    flush()
    return blocks


_BLOCK_TAGS = frozenset(
    "p div li ul ol dl dt dd h1 h2 h3 h4 h5 h6 title td th tr table caption blockquote section article figcaption "
    "figure br hr body item steps list terms tree note desc page para simpara formalpara entry term listitem row "
    "example tip warning caution important sidebar question answer subtitle label".split()
)
_SKIP_TAGS = frozenset(
    "script style pre head header aside footer nav noscript svg math info screen programlisting synopsis "
    "literallayout cmdsynopsis links media".split()
)
_SKIP_CLASSES = ("navheader", "navfooter", "docnav", "headerlink", "toc", "breadcrumb", "footer", "header",
                 "sphinxsidebar", "related", "copyright", "legalnotice")


class _BlockParser(html.parser.HTMLParser):
    """Collects the text of block elements in document order (see :func:`markup_blocks`)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self._cur: list[str] = []
        self._skip: list[str] = []  # stack of open tags inside a skipped element

    def _flush(self) -> None:
        text = " ".join("".join(self._cur).split())
        if text:
            self.blocks.append(text)
        self._cur = []

    def _skipped(self, tag: str, attrs: list[tuple[str, str | None]]) -> bool:
        if tag in _SKIP_TAGS:
            return True
        classes = " ".join(v or "" for k, v in attrs if k in ("class", "role")).lower()
        return any(c in classes.split() or f"{c}s" in classes.split() for c in _SKIP_CLASSES)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        tag = tag.split(":")[-1]
        if self._skip:
            if tag == self._skip[0]:
                self._skip.append(tag)
            return
        if self._skipped(tag, attrs):
            self._flush()
            self._skip.append(tag)
            return
        if tag in _BLOCK_TAGS:
            self._flush()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if not self._skip and tag.split(":")[-1] in _BLOCK_TAGS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        tag = tag.split(":")[-1]
        if self._skip:
            if tag == self._skip[0]:
                self._skip.pop()
            return
        if tag in _BLOCK_TAGS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._cur.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def markup_blocks(text: str) -> list[str]:
    """Text blocks of an HTML, Mallard or DocBook document, in document order.

    One tolerant parser for the three formats: a block is the text between two block-level tags (``<p>``, ``<li>``,
    headings, table cells, Mallard ``<item>``/``<title>``, DocBook ``<para>``/``<entry>`` …); inline markup is kept as
    text.  Skipped with their content: code (``<pre>``, ``<screen>``, ``<programlisting>``), the document head and
    Mallard ``<info>``, navigation (``<nav>``, ``<header>``, ``<aside>``, DocBook ``navheader``/``navfooter``, tables
    of contents), scripts and styles — untranslated or not prose.
    """
    p = _BlockParser()
    p.feed(text)
    p.close()
    return p.blocks


def read_doc(path: Path) -> str:
    """A document's text (``.gz`` decompressed), as UTF-8 with invalid bytes replaced."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


def doc_blocks(path: Path, fmt: str) -> list[str]:
    """Blocks of one document file in the format ``fmt`` (``roff`` or ``markup``)."""
    text = read_doc(path)
    return roff_blocks(text) if fmt == "roff" else markup_blocks(text)


# -- alignment ---------------------------------------------------------------------------------------------------------
# Gale & Church (1993): prior probabilities of the bead types and the variance of the length difference per character.
_PRIOR = {(1, 1): 0.89, (1, 0): 0.0099 / 2, (0, 1): 0.0099 / 2, (2, 1): 0.089 / 2, (1, 2): 0.089 / 2}
_VARIANCE = 6.8


def _match_cost(len_en: int, len_de: int, ratio: float) -> float:
    """-log P(lengths match): the standardised difference of the lengths is taken as normally distributed.

    A 1–0 or 0–1 bead costs nothing here (only its prior): in Gale–Church's original its cost grows with the
    block's length, so a long block found in one language only (a translator's note, a newer paragraph) was glued
    to a neighbour by a 2–1 bead and shifted the pairs around it.
    """
    if len_en == 0 or len_de == 0:
        return 0.0
    mean = (len_en + len_de / ratio) / 2
    z = abs(len_de - len_en * ratio) / math.sqrt(mean * _VARIANCE)
    return -math.log(max(math.erfc(z / math.sqrt(2)), 1e-300))


def align_blocks(en: Sequence[str], de: Sequence[str], *, band: int = 40) -> list[tuple[list[int], list[int]]]:
    """Align two block sequences in order; returns beads ``(english indices, german indices)``, 1–0/0–1 included.

    Gale–Church: a dynamic programme over lengths in characters with the moves 1–1, 1–0, 0–1, 2–1 and 1–2, each
    costing ``-log prior - log P(length difference)`` (1–0/0–1: the prior only); the expected German/English
    length ratio is the documents' own, clamped to [0.9, 1.4].  Cells further than ``band`` (plus the difference of
    the block counts) from the diagonal are not visited, so long documents stay cheap.  Pure 1–1 pairing in order when both sides have as many blocks and every pair's
    lengths agree within a factor of 2.5 (the DP would choose the same, slower).
    """
    n, m = len(en), len(de)
    if n == 0 or m == 0:
        return [([i], []) for i in range(n)] + [([], [j]) for j in range(m)]
    len_en = [len(s) for s in en]
    len_de = [len(s) for s in de]
    # German runs ~1.1–1.2 × English in characters; the documents' own ratio, kept near that so that blocks found
    # in one language only do not skew it
    ratio = min(max(sum(len_de) / max(1, sum(len_en)), 0.9), 1.4)
    if n == m and all(max(a, b * 1.0) <= 2.5 * max(1, min(a, b)) + 5 for a, b in zip(len_en, len_de, strict=True)):
        return [([i], [i]) for i in range(n)]
    width = band + abs(n - m)
    inf = float("inf")
    cost: dict[tuple[int, int], float] = {(0, 0): 0.0}
    back: dict[tuple[int, int], tuple[int, int]] = {}
    moves = [(mv, -math.log(p)) for mv, p in _PRIOR.items()]
    for i in range(n + 1):
        centre = i * m / n
        lo, hi = max(0, int(centre) - width), min(m, int(centre) + width + 1)
        for j in range(lo, hi + 1):
            if i == 0 and j == 0:
                continue
            best, arg = inf, None
            for (di, dj), prior in moves:
                pi, pj = i - di, j - dj
                if pi < 0 or pj < 0:
                    continue
                prev = cost.get((pi, pj))
                if prev is None:
                    continue
                c = prev + prior + _match_cost(sum(len_en[pi:i]), sum(len_de[pj:j]), ratio)
                if c < best:
                    best, arg = c, (di, dj)
            if arg is not None:
                cost[(i, j)] = best
                back[(i, j)] = arg
    if (n, m) not in cost:  # band too narrow for this pair of documents: widen once, then give up
        if band < max(n, m):
            return align_blocks(en, de, band=max(n, m))
        return []
    beads: list[tuple[list[int], list[int]]] = []
    i, j = n, m
    while (i, j) != (0, 0):
        di, dj = back[(i, j)]
        beads.append((list(range(i - di, i)), list(range(j - dj, j))))
        i, j = i - di, j - dj
    beads.reverse()
    return beads


_NUMBER_RE = re.compile(r"\d+")
_WORD_RE = re.compile(r"\w+")


def bead_problem(en: str, de: str, *, max_ratio: float = 2.0, slack: int = 10) -> str | None:
    """Why an aligned pair is not kept (a counter name), or None when it is.

    * ``odd_length_ratio``: the longer side has more than ``max_ratio`` × the shorter side's characters plus
      ``slack`` (short headings like "Options"/"Optionen" need the slack);
    * ``numbers_differ``: the digit runs differ (as multisets) — a cheap sign of a misaligned bead;
    * ``untranslated``: at least four words and ≥ 80 % of the German side's word types are also on the English side;
    * ``no_letters``: a side without letters.
    """
    if not any(ch.isalpha() for ch in en) or not any(ch.isalpha() for ch in de):
        return "no_letters"
    a, b = len(en), len(de)
    if max(a, b) > max_ratio * min(a, b) + slack:
        return "odd_length_ratio"
    if sorted(_NUMBER_RE.findall(en)) != sorted(_NUMBER_RE.findall(de)):
        return "numbers_differ"
    de_words = {w.lower() for w in _WORD_RE.findall(de) if not w.isdigit()}
    en_words = {w.lower() for w in _WORD_RE.findall(en)}
    if len(de_words) >= 4 and len(de_words & en_words) >= 0.8 * len(de_words):
        return "untranslated"
    return None


def align_documents(
    en_blocks: Sequence[str], de_blocks: Sequence[str], *, sentences: bool = True, max_ratio: float = 2.0,
) -> tuple[list[tuple[str, str]], collections.Counter]:
    """Aligned, filtered and (where both sides agree) sentence-split pairs of two documents, with counts.

    2–1 and 1–2 beads are merged into one pair (blocks joined by a space); 1–0 and 0–1 beads are dropped.
    """
    stats: collections.Counter = collections.Counter(blocks_en=len(en_blocks), blocks_de=len(de_blocks))
    out: list[tuple[str, str]] = []
    for ei, di in align_blocks(en_blocks, de_blocks):
        if not ei or not di:
            stats["beads_unpaired"] += 1
            continue
        stats[f"beads_{len(ei)}_{len(di)}"] += 1
        en = " ".join(en_blocks[k] for k in ei)
        de = " ".join(de_blocks[k] for k in di)
        why = bead_problem(en, de, max_ratio=max_ratio)
        if why:
            stats[why] += 1
            continue
        if sentences:
            en_s, de_s = split_sentences(en), split_sentences(de)
            if len(en_s) == len(de_s) and len(en_s) > 1:
                stats["sentence_split"] += 1
                out.extend(zip(en_s, de_s, strict=True))
                continue
        out.append((en, de))
    stats["pairs"] = len(out)
    return out, stats


# -- pairing documents -------------------------------------------------------------------------------------------------
def _doc_key(rel: str, suffix: str) -> str:
    """Relative path without ``.gz`` and without the language suffix, the name shared by both languages."""
    rel = rel[:-3] if rel.endswith(".gz") else rel
    if suffix and rel.endswith(suffix.removesuffix(".gz")):
        rel = rel[: -len(suffix.removesuffix(".gz"))]
    return rel


def pair_documents(en_root: Path, de_root: Path, ds: DocSet) -> list[tuple[str, Path, Path]]:
    """``(key, English file, German file)`` for every document present in both languages, sorted by key.

    English files are ``en_root/pattern``; the German twin has the same relative path (suffix swapped), compressed
    or not.  Files under the German folder are never taken as English ones (``man*/*`` below ``usr/share/man`` does
    not reach ``usr/share/man/de``), and names in ``ds.exclude`` are skipped.
    """
    if not en_root.is_dir() or not de_root.is_dir():
        return []
    de_index: dict[str, Path] = {}
    for f in de_root.rglob("*"):
        if f.is_file():
            de_index.setdefault(_doc_key(f.relative_to(de_root).as_posix(), ds.de_suffix), f)
    out = []
    for f in sorted(en_root.glob(ds.pattern)):
        if not f.is_file() or f.name in ds.exclude or f.name.removesuffix(".gz") in ds.exclude:
            continue
        if de_root != en_root and de_root in f.parents:
            continue
        key = _doc_key(f.relative_to(en_root).as_posix(), ds.en_suffix)
        twin = de_index.get(key)
        if twin is not None and twin != f:
            out.append((key, f, twin))
    return out


@dataclass
class DocsConfig:
    """Options of :func:`read_debian_docs`."""

    cache: Path
    sets: tuple[str, ...] = DOC_SET_TAGS
    sentences: bool = True
    max_ratio: float = 2.0
    system_man: bool = True
    system_man_dir: Path = SYSTEM_MAN_DIR
    scratch: Path | None = None
    progress: bool = True
    extra_stats: dict = field(default_factory=dict)


def _system_man_twins(de_root: Path, ds: DocSet, man_dir: Path, have: set[str]) -> list[tuple[str, Path, Path]]:
    """German man pages with no English page in the downloaded packages, paired with this machine's English page."""
    out = []
    if not man_dir.is_dir():
        return out
    for f in sorted(de_root.glob(ds.pattern)):
        key = _doc_key(f.relative_to(de_root).as_posix(), "")
        if key in have or not f.is_file():
            continue
        for cand in (man_dir / key, man_dir / f"{key}.gz"):
            if cand.is_file():
                out.append((key, cand, f))
                break
    return out


def read_debian_docs(cfg: DocsConfig, *, download: Callable[[Sequence[str], Path], tuple[dict, dict]] = download_debs,
                     ) -> tuple[list[Pair], dict, dict]:
    """Download, unpack, pair, align and filter every document set in ``cfg.sets``.

    Returns the pairs, counts per set (documents, blocks, beads, drops, pairs, skipped packages) and the inputs
    (package versions and licences).  A set whose packages cannot be had is skipped with a warning; a document that
    cannot be read is counted and skipped.  ``download`` is replaceable for tests.
    """
    unknown = sorted(set(cfg.sets) - set(DOC_SET_TAGS))
    if unknown:
        raise CorpusError(f"unknown documentation set(s) {unknown}; choose from {', '.join(DOC_SET_TAGS)}")
    sets = [d for d in DOC_SETS if d.tag in cfg.sets]
    pairs: list[Pair] = []
    stats: dict[str, dict] = {}
    inputs: dict[str, dict] = {"packages": {}, "skipped_packages": {}}
    scratch_parent = cfg.scratch
    if scratch_parent is not None:
        Path(scratch_parent).mkdir(parents=True, exist_ok=True)
    for ds in sets:
        st: collections.Counter = collections.Counter()
        debs, failed = download(ds.packages, Path(cfg.cache))
        inputs["skipped_packages"].update(failed)
        if not any(p in debs for p in ds.en_packages) or not any(p in debs for p in ds.de_packages):
            log.warning("%s: skipped (no English or no German package could be had)", ds.tag)
            stats[ds.tag] = {"skipped": True, "packages_missing": sorted(failed)}
            continue
        with tempfile.TemporaryDirectory(prefix=f"docs-{ds.tag}-", dir=scratch_parent) as tmp:
            # one tree per package, so a package that ships both languages (GNOME) pairs only with itself
            roots: list[tuple[str, Path]] = []
            for pkg in ds.packages:
                if pkg not in debs:
                    continue
                root = Path(tmp) / pkg
                try:
                    unpack_deb(debs[pkg], root, (ds.en_dir, ds.de_dir))
                except CorpusError as exc:
                    log.warning("%s: %s", ds.tag, exc)
                    inputs["skipped_packages"][pkg] = str(exc)[:200]
                    continue
                inputs["packages"][pkg] = {"version": deb_version(debs[pkg]), "deb": debs[pkg].name,
                                           "doc_set": ds.tag, "licence": ds.licence,
                                           "copyright_licences": copyright_licences(root, pkg)}
                roots.append((pkg, root))
            docs: list[tuple[str, str, Path, Path]] = []  # (group, key, en, de)
            if ds.tag in ("gnome",):
                for pkg, root in roots:
                    docs += [(pkg, k, e, d) for k, e, d in pair_documents(root / ds.en_dir, root / ds.de_dir, ds)]
            else:
                en_roots = [r for p, r in roots if p in ds.en_packages]
                de_roots = [(p, r) for p, r in roots if p in ds.de_packages]
                seen: set[str] = set()
                for de_pkg, de_root in de_roots:
                    for en_root in en_roots:
                        for k, e, d in pair_documents(en_root / ds.en_dir, de_root / ds.de_dir, ds):
                            if k not in seen:
                                seen.add(k)
                                docs.append((de_pkg, k, e, d))
                    if ds.fmt == "roff" and cfg.system_man:
                        extra = _system_man_twins(de_root / ds.de_dir, ds, Path(cfg.system_man_dir), seen)
                        seen.update(k for k, _, _ in extra)
                        docs += [(de_pkg, k, e, d) for k, e, d in extra]
                        st["documents_english_from_system"] += len(extra)
            st["documents"] = len(docs)
            for group, key, en_path, de_path in tqdm(docs, desc=f"docs:{ds.tag}", unit=" doc",
                                                     disable=not cfg.progress, mininterval=2.0):
                try:
                    en_b, de_b = doc_blocks(en_path, ds.fmt), doc_blocks(de_path, ds.fmt)
                except (OSError, EOFError, ValueError) as exc:
                    log.info("%s: cannot read %s: %s", ds.tag, key, exc)
                    st["unreadable_documents"] += 1
                    continue
                aligned, a_st = align_documents(en_b, de_b, sentences=cfg.sentences, max_ratio=cfg.max_ratio)
                st.update(a_st)
                pairs.extend(Pair(en=e, de=d, source="docs", group=group, kind=ds.tag) for e, d in aligned)
        stats[ds.tag] = dict(sorted(st.items()))
        log.info("docs:%s: %d documents, %d pairs", ds.tag, st["documents"], st["pairs"])
    if inputs["skipped_packages"]:
        log.warning("documentation packages skipped: %s", ", ".join(sorted(inputs["skipped_packages"])))
    return pairs, stats, inputs

