"""Real documentation text found on the machine, for instruction prompts (issue 18's data at scale): the manual pages'
names and first description paragraphs, and the Python standard library's docstrings.

Both depend on what is installed (the manual pages of the Debian packages present, the Python version), so a prompt
set built from them is recorded as built, not rebuilt elsewhere.
"""

from __future__ import annotations

import gzip
import importlib
import inspect
import re
import sys
import warnings
from pathlib import Path

_MACRO = re.compile(r"\\f[BIRP]|\\f\(..|\\\*\(..|\\\*.|\\[&|^%]|\\\(..|\\s[-+]?\d")


def _roff_text(line: str) -> str:
    """A roff line as plain text: font and size escapes dropped, ``\\-`` as '-', macro lines' arguments kept."""
    if line.startswith((".B ", ".I ", ".BR ", ".IR ", ".BI ", ".RB ", ".IB ", ".RI ")):
        line = line.split(" ", 1)[1].replace('"', "")
    elif line.startswith((".", "'")):
        return ""
    line = _MACRO.sub("", line).replace("\\-", "-").replace("\\e", "\\").replace("\\ ", " ")
    return re.sub(r"\\.", "", line).strip()


def man_pages(root: str | Path = "/usr/share/man", sections: tuple[str, ...] = ("1", "5", "8"),
              max_chars: int = 500) -> list[tuple[str, str, str]]:
    """(name, one-line summary, first description paragraph) of every English manual page under ``root`` in
    ``sections`` whose NAME line parses, sorted by name; pages that are links to others (``.so``) are skipped."""
    out = {}
    for section in sections:
        for path in sorted(Path(root).glob(f"man{section}/*.gz")):
            try:
                text = gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
            except (OSError, EOFError):
                continue
            if text.startswith(".so "):
                continue
            lines = text.splitlines()
            heads = [i for i, ln in enumerate(lines) if ln.upper().startswith((".SH NAME", '.SH "NAME"'))]
            if not heads:
                continue
            after = lines[heads[0] + 1: heads[0] + 5]
            after = after[: next((i for i, ln in enumerate(after) if ln.upper().startswith(".SH")), len(after))]
            name_line = " ".join(_roff_text(ln) for ln in after)
            m = re.match(r"\s*([\w.+:-]+(?:\s*,\s*[\w.+:-]+)*)\s+-+\s+(.+)", name_line)
            if not m:
                continue
            name, summary = m.group(1).split(",")[0].strip(), m.group(2).strip().rstrip(".")
            desc = []
            starts = [i for i, ln in enumerate(lines)
                      if ln.upper().startswith((".SH DESCRIPTION", '.SH "DESCRIPTION"'))]
            for ln in lines[starts[0] + 1:] if starts else []:
                if ln.startswith(".SH") or (desc and ln.startswith((".PP", ".P ", ".TP", ".IP", ".LP"))):
                    break
                if (t := _roff_text(ln)):
                    desc.append(t)
            if len(summary) > 8 and name not in out:
                out[name] = (name, summary, " ".join(desc)[:max_chars])
    return [out[n] for n in sorted(out)]


_SKIP = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "lib2to3", "pydoc_data", "ensurepip",
         "venv", "__main__", "xxsubtype", "msvcrt", "winreg", "winsound", "_winapi", "nt"}


def python_docs(max_chars: int = 500) -> list[tuple[str, str]]:
    """(qualified name, first docstring paragraph) of the public functions, classes and methods of the standard
    library's public modules that import here, sorted by name."""
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for mod_name in sorted(sys.stdlib_module_names):
            if mod_name.startswith("_") or mod_name in _SKIP:
                continue
            try:
                module = importlib.import_module(mod_name)
            except Exception:  # noqa: BLE001  platform-specific or optional modules
                continue
            for attr, obj in sorted(vars(module).items()):
                if attr.startswith("_") or getattr(obj, "__module__", None) not in (mod_name, None):
                    continue
                if not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)):
                    continue
                items = [(f"{mod_name}.{attr}", obj)]
                if inspect.isclass(obj):
                    items += [(f"{mod_name}.{attr}.{m}", f) for m, f in sorted(vars(obj).items())
                              if not m.startswith("_") and inspect.isfunction(f)]
                for name, o in items:
                    doc = inspect.getdoc(o) or ""
                    para = doc.split("\n\n")[0].replace("\n", " ").strip()
                    if len(para) > 30 and ">>>" not in para and not para.startswith(name.split(".")[-1] + "("):
                        out[name] = para[:max_chars]
    return sorted(out.items())
