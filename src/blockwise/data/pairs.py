"""The record every parallel-text source yields, and the error its readers raise."""

from __future__ import annotations

from dataclasses import dataclass


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


def word_count(text: str) -> int:
    """Number of whitespace-separated words."""
    return len(text.split())
