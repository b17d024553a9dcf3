"""The Ding German–English dictionary (Debian package ``trans-de-en``, ``/usr/share/trans/de-en``).

One parser for both readers of the file: :func:`read_ding` (aligned pairs for the MT corpus) and :func:`ding_phrases`
(English phrases for the LM prompts). An entry line is ``German | variant :: English | variant``; each side's
variants are `` | ``-separated, each variant's synonyms ``;``-separated, and ``{n}``, ``[comp.]``, ``<...>`` and
``(...)`` carry grammar, domain and notes.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from ..pairs import CorpusError, Pair, word_count

DING_PATH = Path("/usr/share/trans/de-en")


def entry_lines(path: Path = DING_PATH, *, progress: bool = False) -> Iterator[str]:
    """The file's entry lines without their newline (``#`` comments and blank lines skipped)."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(
            f"Ding dictionary not found at {path}. Install the Debian package with "
            "`apt-get install -y trans-de-en` (prefix `sudo` if not root), or pass --ding PATH."
        )
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in tqdm(f, desc="ding", unit=" lines", disable=not progress, mininterval=1.0):
            if line.startswith("#") or not line.strip():
                continue
            yield line.rstrip("\n")


def split_entry(line: str) -> tuple[list[str], list[str]] | None:
    """(German variants, English variants) of one entry line, still with their mark-up.

    None for a comment, a blank line or a line without exactly one `` :: ``.
    """
    line = line.rstrip("\n")
    if not line.strip() or line.startswith("#"):
        return None
    sides = line.split(" :: ")
    if len(sides) != 2:
        return None
    return sides[0].split(" | "), sides[1].split(" | ")


# -- aligned pairs (MT corpus) ---------------------------------------------------------------------------------------
_SPACE_RE = re.compile(r"\s+")
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
    entry = split_entry(line)
    if entry is None or len(entry[0]) != len(entry[1]):
        return []
    return _variant_pairs(*entry)


def _variant_pairs(de_vars: list[str], en_vars: list[str]) -> list[Pair]:
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
    stats = collections.Counter()
    pairs: list[Pair] = []
    for line in entry_lines(path, progress=progress):
        stats["lines"] += 1
        entry = split_entry(line)
        if entry is None:
            continue
        if len(entry[0]) != len(entry[1]):
            stats["variant_count_mismatch"] += 1
            continue
        for p in _variant_pairs(*entry):
            stats["variants"] += 1
            if max(word_count(p.en), word_count(p.de)) < min_words:
                stats["single_word"] += 1
                continue
            pairs.append(p)
    stats["pairs"] = len(pairs)
    stats["sentences"] = sum(p.kind == "sentence" for p in pairs)
    return pairs, dict(stats)


# -- English phrases (LM prompts) ------------------------------------------------------------------------------------
_MARKS_RE = re.compile(r"\{[^}]*\}|\[[^\]]*\]|\([^)]*\)")


def ding_phrases(path: Path = DING_PATH) -> list[str]:
    """English variants with at least three words, grammar and domain marks removed, synonyms kept together.

    A lighter cleaning than :func:`clean_ding_side`: a prompt wants the whole phrase, not one synonym aligned with
    German (and the shipped LM heads' prompts were built from exactly these strings).
    """
    out = []
    for line in entry_lines(path):
        entry = split_entry(line)
        if entry is None:
            continue
        for phrase in entry[1]:
            phrase = _MARKS_RE.sub("", phrase).strip(" ;,")
            if len(phrase.split()) >= 3:
                out.append(phrase)
    return out
