"""Fast tests of the Debian documentation source and the extended corpus (no network, no apt: synthetic files)."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from blockwise.data.hashing import sha256_file
from blockwise.data.mt_corpus import extend as ext
from blockwise.data.mt_corpus.cli import main
from blockwise.data.pairs import CorpusError, Pair
from blockwise.data.sources import debian_docs as dd

# ------------------------------------------------------------------------------------
# fixtures: one small document per format and language
# ------------------------------------------------------------------------------------

ROFF_EN = r""".\" comment line
.TH FROB 1 "2024" "frob 1.0" "User Commands"
.SH NAME
frob \- frobnicate files
.SH DESCRIPTION
.B frob
reads the given files and writes them back
in \fIfrobnicated\fP form.
.PP
It never changes a file\(aqs name.
.TP
\fB\-v\fP, \fB\-\-verbose\fP
Print every file name.
.nf
frob \-v a b
.fi
.SH "SEE ALSO"
.BR cat (1)
"""

ROFF_DE = r""".\" Kommentar
.TH FROB 1 "2024" "frob 1.0" "Dienstprogramme"
.SH BEZEICHNUNG
frob \- Dateien frobnizieren
.SH BESCHREIBUNG
.B frob
liest die angegebenen Dateien und schreibt sie
in \fIfrobnizierter\fP Form zurück.
.PP
Es ändert nie den Namen einer Datei, \(Bqniemals\(lq.
.TP
\fB\-v\fP, \fB\-\-verbose\fP
Jeden Dateinamen ausgeben.
.nf
frob \-v a b
.fi
.SH "SIEHE AUCH"
.BR cat (1)
"""

HTML_EN = """<!DOCTYPE html><html><head><title>Printing</title><script>var x = "<p>no</p>";</script></head>
<body><div class="navheader"><a href="a.html">Prev</a> Next</div>
<h1>Printing a document</h1>
<p>Choose <span class="menuitem">File - Print</span> to print the current document.</p>
<ul><li>Select the printer.</li><li>Press <b>OK</b>.</li></ul>
<pre class="screen">lpr file.txt</pre>
<p>The document is sent to the printer queue.</p>
<div class="navfooter">Home</div></body></html>"""

HTML_DE = """<!DOCTYPE html><html><head><title>Drucken</title></head>
<body><div class="navheader"><a href="a.html">Zurück</a> Weiter</div>
<h1>Ein Dokument drucken</h1>
<p>Wählen Sie <span class="menuitem">Datei - Drucken</span>, um das aktuelle Dokument zu drucken.</p>
<ul><li>Wählen Sie den Drucker aus.</li><li>Drücken Sie <b>OK</b>.</li></ul>
<pre class="screen">lpr datei.txt</pre>
<p>Das Dokument wird an die Druckerwarteschlange gesendet.</p>
<div class="navfooter">Anfang</div></body></html>"""

MALLARD_EN = """<page xmlns="http://projectmallard.org/1.0/" xmlns:ui="http://projectmallard.org/ui/1.0/" id="copy">
  <info><link type="guide" xref="files"/><desc>Copy or move items.</desc>
    <credit type="author"><name>Jane Doe</name></credit></info>
  <title>Copy files</title>
  <p>A file can be copied by dragging it with the mouse.</p>
  <steps ui:expanded="false"><title>Copy and paste</title>
    <item><p>Select the file.</p></item>
    <item><p>Press <keyseq><key>Ctrl</key><key>C</key></keyseq>.</p></item>
  </steps>
</page>"""

MALLARD_DE = """<page xmlns="http://projectmallard.org/1.0/" xmlns:ui="http://projectmallard.org/ui/1.0/" id="copy">
  <info><link type="guide" xref="files"/><desc>Objekte kopieren oder verschieben.</desc>
    <credit type="author"><name>Jane Doe</name></credit></info>
  <title>Dateien kopieren</title>
  <p>Eine Datei kann durch Ziehen mit der Maus kopiert werden.</p>
  <steps ui:expanded="false"><title>Kopieren und Einfügen</title>
    <item><p>Wählen Sie die Datei aus.</p></item>
    <item><p>Drücken Sie <keyseq><key>Strg</key><key>C</key></keyseq>.</p></item>
  </steps>
</page>"""


# ------------------------------------------------------------------------------------
# extraction
# ------------------------------------------------------------------------------------


def test_roff_blocks_order_terms_and_code_left_out():
    assert dd.roff_blocks(ROFF_EN) == [
        "NAME",
        "frob - frobnicate files",
        "DESCRIPTION",
        "frob reads the given files and writes them back in frobnicated form.",
        "It never changes a file's name.",
        "-v, --verbose",
        "Print every file name.",
        "SEE ALSO",
        "cat (1)",
    ]
    de = dd.roff_blocks(ROFF_DE)
    assert de[4] == "Es ändert nie den Namen einer Datei, „niemals“."
    assert len(de) == 9 and "frob -v a b" not in de
    assert dd.roff_blocks(".so man1/other.1\n") == []


def test_markup_blocks_html_skips_head_navigation_and_code():
    assert dd.markup_blocks(HTML_EN) == [
        "Printing a document",
        "Choose File - Print to print the current document.",
        "Select the printer.",
        "Press OK.",
        "The document is sent to the printer queue.",
    ]


def test_markup_blocks_mallard_skips_info():
    assert dd.markup_blocks(MALLARD_EN) == [
        "Copy files",
        "A file can be copied by dragging it with the mouse.",
        "Copy and paste",
        "Select the file.",
        "Press CtrlC.",
    ]
    assert dd.markup_blocks(MALLARD_DE)[1] == "Eine Datei kann durch Ziehen mit der Maus kopiert werden."


# ------------------------------------------------------------------------------------
# alignment and filters
# ------------------------------------------------------------------------------------


def test_align_equal_counts_pairs_in_order():
    pairs, st = dd.align_documents(dd.markup_blocks(HTML_EN), dd.markup_blocks(HTML_DE))
    assert pairs[0] == ("Printing a document", "Ein Dokument drucken")
    assert ("Select the printer.", "Wählen Sie den Drucker aus.") in pairs
    assert pairs[-1] == ("The document is sent to the printer queue.",
                         "Das Dokument wird an die Druckerwarteschlange gesendet.")
    assert st["beads_1_1"] == 5
    # "Press OK." / "Drücken Sie OK." is kept; "OK" alone would be an identical pair, dropped later by clean
    assert ("Press OK.", "Drücken Sie OK.") in pairs


EN_DOC = [
    "Installing the system",
    "The installer asks a few questions and then copies the base system to the disk you choose.",
    "Partitioning is the hardest step for most people, so read this section carefully before you begin.",
    "When the installer has finished, remove the installation medium and restart the computer.",
]


def test_align_merges_a_split_paragraph_and_drops_an_extra_block():
    de = [
        "Das System installieren",
        "Das Installationsprogramm stellt einige Fragen.",
        "Dann kopiert es das Basissystem auf die gewählte Festplatte.",
        "Das Partitionieren ist für die meisten der schwierigste Schritt; lesen Sie diesen Abschnitt daher "
        "sorgfältig, bevor Sie beginnen.",
        "Hinweis der Übersetzer: Diese Übersetzung wurde zuletzt im Jahr zweitausendundzwanzig vollständig "
        "überarbeitet und von mehreren Personen geprüft, die das Handbuch seit langem begleiten und pflegen.",
        "Wenn das Installationsprogramm fertig ist, entfernen Sie das Installationsmedium und starten Sie den "
        "Rechner neu.",
    ]
    beads = dd.align_blocks(EN_DOC, de)
    assert beads == [([0], [0]), ([1], [1, 2]), ([2], [3]), ([], [4]), ([3], [5])]
    pairs, st = dd.align_documents(EN_DOC, de, sentences=False)
    assert pairs[1] == (EN_DOC[1], de[1] + " " + de[2])
    assert st["beads_1_2"] == 1 and st["beads_unpaired"] == 1 and len(pairs) == 4
    assert not any("Übersetzer" in d for _, d in pairs)


def test_align_long_documents_stay_in_band_and_in_order():
    en = [f"Paragraph number {i} says something of length {'x' * (i % 7 * 9)}." for i in range(300)]
    de = [f"Absatz Nummer {i} sagt etwas der Länge {'x' * (i % 7 * 9)}." for i in range(300)]
    de.insert(150, "Ein zusätzlicher Absatz nur im Deutschen, der keinem englischen entspricht und lang ist.")
    beads = dd.align_blocks(en, de, band=10)
    kept = [(e, d) for e, d in beads if e and d]
    assert len(kept) >= 299 and all(e == [i] for i, (e, _) in enumerate(kept[:150]))
    assert ([], [150]) in beads


def test_bead_problem_filters():
    assert dd.bead_problem("Options", "Optionen") is None  # short: the slack lets it pass
    assert dd.bead_problem("Print.", "Dieser Absatz ist eine völlig andere und viel längere Beschreibung.") == (
        "odd_length_ratio")
    long_en = "The file is read once and then closed again by the program."
    assert dd.bead_problem(long_en, "Die Datei wird einmal gelesen.") is None  # 59 vs 30 chars: 2 × 30 + 10 > 59
    assert dd.bead_problem(long_en, "Die Datei wird gelesen.") == "odd_length_ratio"  # 2 × 23 + 10 < 59
    assert dd.bead_problem("Wait 5 seconds.", "Warten Sie 10 Sekunden.") == "numbers_differ"
    assert dd.bead_problem("Use the default settings here.", "Use the default settings here, bitte.") == (
        "untranslated")
    assert dd.bead_problem("-- 1 --", "-- 1 --") == "no_letters"
    # a tighter ratio drops what the default keeps
    assert dd.bead_problem(long_en, "Die Datei wird einmal gelesen.", max_ratio=1.5) == "odd_length_ratio"


def test_align_documents_splits_sentences_when_counts_agree():
    en = ["The disk is full. Delete some files first.", "Save often. It helps. Really."]
    de = ["Die Festplatte ist voll. Löschen Sie zuerst einige Dateien.", "Speichern Sie oft, das hilft wirklich."]
    pairs, st = dd.align_documents(en, de)
    assert pairs[:2] == [("The disk is full.", "Die Festplatte ist voll."),
                         ("Delete some files first.", "Löschen Sie zuerst einige Dateien.")]
    assert pairs[2] == (en[1], de[1])  # 3 vs 1 sentences: kept whole
    assert st["sentence_split"] == 1


# ------------------------------------------------------------------------------------
# pairing documents and the whole reader (downloads and unpacking replaced)
# ------------------------------------------------------------------------------------


def _write(path: Path, text: str, gz: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")


def test_pair_documents_by_name_and_suffix(tmp_path: Path):
    ds = next(d for d in dd.DOC_SETS if d.tag == "debian-reference")
    root = tmp_path / "usr/share/debian-reference"
    _write(root / "ch01.en.html", HTML_EN)
    _write(root / "ch01.de.html", HTML_DE)
    _write(root / "ch02.en.html", HTML_EN)  # no German twin
    got = dd.pair_documents(root, root, ds)
    assert [(k, e.name, d.name) for k, e, d in got] == [("ch01", "ch01.en.html", "ch01.de.html")]


def _fake_packages(tmp_path: Path) -> dict[str, Path]:
    """File trees standing in for unpacked .deb files."""
    trees = {}
    t = tmp_path / "trees"
    _write(t / "manpages/usr/share/man/man1/frob.1.gz", ROFF_EN, gz=True)
    _write(t / "manpages-de/usr/share/man/de/man1/frob.1.gz", ROFF_DE, gz=True)
    _write(t / "manpages-de/usr/share/man/de/man1/onlyde.1.gz", ROFF_DE, gz=True)
    _write(t / "manpages-de/usr/share/doc/manpages-de/copyright", "Format: x\n\nFiles: *\nLicense: GPL-3+\n")
    _write(t / "gnome-user-docs/usr/share/help/C/gnome-help/copy.page", MALLARD_EN)
    _write(t / "gnome-user-docs/usr/share/help/de/gnome-help/copy.page", MALLARD_DE)
    _write(t / "gnome-user-docs/usr/share/help/C/gnome-help/legal.xml", "<p>Licence text</p>")
    _write(t / "gnome-user-docs/usr/share/help/de/gnome-help/legal.xml", "<p>Lizenztext</p>")
    for name in ("manpages", "manpages-de", "gnome-user-docs"):
        trees[name] = t / name
    return trees


def test_read_debian_docs_end_to_end_with_a_missing_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    trees = _fake_packages(tmp_path)
    # the system's English man pages: only onlyde.1 is found there
    sysman = tmp_path / "sysman"
    _write(sysman / "man1/onlyde.1.gz", ROFF_EN, gz=True)
    cache = tmp_path / "cache"

    def fake_download(packages, cache_dir):
        have = {p: cache_dir / f"{p}_1.0-1_all.deb" for p in packages if p in trees}
        return have, {p: "E: Unable to locate package" for p in packages if p not in trees}

    def fake_unpack(deb: Path, dest: Path, folders) -> None:
        shutil.copytree(trees[deb.name.split("_")[0]], dest, dirs_exist_ok=True)

    monkeypatch.setattr(dd, "unpack_deb", fake_unpack)
    cfg = dd.DocsConfig(cache=cache, sets=("man", "gnome", "gimp"), system_man_dir=sysman, progress=False,
                        scratch=tmp_path / "scratch")
    pairs, stats, inputs = dd.read_debian_docs(cfg, download=fake_download)
    got = {(p.kind, p.en, p.de) for p in pairs}
    assert ("man", "Print every file name.", "Jeden Dateinamen ausgeben.") in got
    assert ("gnome", "Select the file.", "Wählen Sie die Datei aus.") in got
    assert not any("Licence" in p.en for p in pairs)  # legal.xml is excluded
    assert stats["gimp"]["skipped"] is True  # neither gimp package exists here: skipped, not fatal
    assert stats["man"]["documents"] == 2 and stats["man"]["documents_english_from_system"] == 1
    assert "gimp-help-en" in inputs["skipped_packages"] and "manpages-dev" in inputs["skipped_packages"]
    assert inputs["packages"]["manpages-de"]["version"] == "1.0-1"
    assert inputs["packages"]["manpages-de"]["copyright_licences"] == ["GPL-3+"]
    assert {p.group for p in pairs if p.kind == "man"} == {"manpages-de"}
    with pytest.raises(CorpusError, match="unknown documentation set"):
        dd.read_debian_docs(dd.DocsConfig(cache=cache, sets=("nope",)), download=fake_download)


def test_deb_version_unescapes_epoch():
    assert dd.deb_version(Path("libreoffice-help-de_4%3a7.4.7-1+deb12u14_all.deb")) == "4:7.4.7-1+deb12u14"


# ------------------------------------------------------------------------------------
# the extended corpus
# ------------------------------------------------------------------------------------


def _base_corpus(root: Path) -> Path:
    base = root / "base"
    base.mkdir()
    files = {
        "train.en": "The cat sleeps.\nOpen the file.\n",
        "train.de": "Die Katze schläft.\nÖffnen Sie die Datei.\n",
        "train.meta.tsv": "ding\t\tsentence\ndebian\tpkg\tbody\n",
        "dev.en": "Close the window.\n",
        "dev.de": "Schließen Sie das Fenster.\n",
        "dev.meta.tsv": "ding\t\tsentence\n",
        "test.en": "Press the button.\n",
        "test.de": "Drücken Sie den Knopf.\n",
        "test.meta.tsv": "ding\t\tsentence\n",
        "spm.model": "not a real model",
        "spm.vocab": "a\t0\n",
    }
    for name, text in files.items():
        (base / name).write_text(text, encoding="utf-8")
    manifest = {"params": {"clean": {"max_words": 100, "max_ratio": 3.0}, "vocab_size": 8000},
                "counts": {"dev": {"pairs": 1}, "test": {"pairs": 1}},
                "files": {n: sha256_file(base / n) for n in files}, "sentencepiece": {"vocab_size": 8000}}
    (base / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return base


NEW_PAIRS = [
    Pair("close the window", "Das Fenster schließen", "docs", "g", "gnome"),  # English side in dev (normalised)
    Pair("Push the button now.", "Drücken Sie den Knopf!", "docs", "g", "man"),  # German side in test (normalised)
    Pair("The cat sleeps.", "Die Katze schläft.", "docs", "g", "man"),  # already in base train
    Pair("Save the document before you quit.", "Speichern Sie das Dokument vor dem Beenden.", "docs", "g", "gimp"),
    Pair("Same text", "Same text", "docs", "g", "gimp"),  # identical: dropped by the base cleaning rules
]


def test_extend_keeps_dev_test_identical_and_excludes_held_out_text(tmp_path: Path):
    base = _base_corpus(tmp_path)
    out = tmp_path / "ext"
    cfg = ext.ExtendConfig(base=base, out=out, docs=dd.DocsConfig(cache=tmp_path / "c", progress=False))
    manifest = ext.extend_corpus(cfg, reader=lambda c: (list(NEW_PAIRS), {"x": {"pairs": 5}}, {"packages": {}}))
    for name in ("dev.en", "dev.de", "dev.meta.tsv", "test.en", "test.de", "test.meta.tsv", "spm.model"):
        assert (out / name).read_bytes() == (base / name).read_bytes(), name
    train_en = (out / "train.en").read_text(encoding="utf-8").splitlines()
    train_de = (out / "train.de").read_text(encoding="utf-8").splitlines()
    assert train_en == ["The cat sleeps.", "Open the file.", "Save the document before you quit."]
    assert train_de[2] == "Speichern Sie das Dokument vor dem Beenden."
    assert (out / "train.meta.tsv").read_text(encoding="utf-8").splitlines()[2] == "docs\tg\tgimp"
    assert manifest["held_out_filter"] == {"docs:held_out_overlap": 2, "docs:in_base_train": 1}
    assert manifest["counts"]["train"]["new_pairs"] == 1 and manifest["counts"]["train"]["pairs"] == 3
    assert manifest["counts"]["train"]["new_en_words_by_kind"] == {"docs:gimp": 6}
    assert manifest["files"]["dev.en"] == sha256_file(base / "dev.en")
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8"))["extends"]["held_out_identical"]


def test_extend_refuses_a_changed_base_and_its_own_folder(tmp_path: Path):
    base = _base_corpus(tmp_path)
    cfg = ext.ExtendConfig(base=base, out=base, docs=dd.DocsConfig(cache=tmp_path / "c"))
    with pytest.raises(CorpusError, match="same folder"):
        ext.extend_corpus(cfg, reader=lambda c: ([], {}, {}))
    (base / "test.de").write_text("Geändert.\n", encoding="utf-8")
    cfg = ext.ExtendConfig(base=base, out=tmp_path / "ext", docs=dd.DocsConfig(cache=tmp_path / "c"))
    with pytest.raises(CorpusError, match="checksum"):
        ext.extend_corpus(cfg, reader=lambda c: ([], {}, {}))


def test_cli_extend_needs_docs(tmp_path: Path):
    with pytest.raises(SystemExit):
        main(["--extend", str(tmp_path), "--out", str(tmp_path / "x")])
