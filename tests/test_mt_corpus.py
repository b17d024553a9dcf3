"""Fast tests of the German–English corpus pipeline (no network, no apt: synthetic inputs)."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import struct
from pathlib import Path

import pytest

from blockwise.data import mt_corpus as mc
from blockwise.data.pairs import Pair

# ------------------------------------------------------------------------------------
# Ding
# ------------------------------------------------------------------------------------


def _pairs(line: str) -> list[tuple[str, str, str]]:
    return [(p.en, p.de, p.kind) for p in mc.parse_ding_line(line)]


def test_ding_variants_aligned_and_marks_stripped():
    line = (
        "Aalleiter {f}; Aaltreppe {f}; Aalpass {m} (Wasserbau) | Aalleitern {pl}; Aaltreppen {pl} :: "
        "eel ladder (water engineering) | eel ladders"
    )
    assert _pairs(line) == [("eel ladder", "Aalleiter", "phrase"), ("eel ladders", "Aalleitern", "phrase")]


def test_ding_example_sentences_and_slash_alternatives():
    line = (
        "blank; pur; rein; schier [geh.] {adj} (in reinster Form) | blanker Hohn | Es war purer Zufall. | "
        "Dieses Argument ist reine Rhetorik. :: sheer; pure; plain; arrant [dated] <purer> <purest> | "
        "sheer/pure mockery | It was sheer/pure coincidence. | This argument is pure / arrant rhetoric."
    )
    got = _pairs(line)
    assert ("sheer", "blank", "phrase") in got
    assert ("sheer mockery", "blanker Hohn", "phrase") in got
    assert ("It was sheer coincidence.", "Es war purer Zufall.", "sentence") in got
    # spaced slash: span of the alternatives unknown -> no pair for that variant
    assert not any("rhetoric" in en for en, _, _ in got)
    assert len(got) == 3


def test_ding_abbreviations_parentheses_and_domain_marks():
    line = "Feinstaub {m} [envir.] :: fine particles /PM2.5/ (2.5 micrometres and smaller)"
    assert _pairs(line) == [("fine particles", "Feinstaub", "phrase")]
    line = "Unter (dem Namen) Zeles finde ich nichts. :: I can’t find anything under (the name of) Zeles."
    assert _pairs(line) == [("I can’t find anything under Zeles.", "Unter Zeles finde ich nichts.", "sentence")]
    # compounds with slashes are not alternatives
    assert mc.clean_ding_side("Ein-/Ausgabe-Steuerung {f}") == "Ein-/Ausgabe-Steuerung"
    assert mc.clean_ding_side("Eingabe/Ausgabe-Steuerelement {n} [comp.]") == "Eingabe/Ausgabe-Steuerelement"
    assert mc.clean_ding_side("input/output") == "input/output"


def test_ding_first_usable_synonym_and_malformed_lines():
    assert _pairs("Das ist die Höhe!; Das schießt den Vogel ab! [übtr.] :: That takes the cake! [fig.]") == [
        ("That takes the cake!", "Das ist die Höhe!", "sentence")
    ]
    assert _pairs("# Version :: devel 2023-01-30") == []
    assert _pairs("kein Trenner hier") == []
    assert _pairs("a | b :: only one") == []  # variant counts differ
    assert _pairs("{adj} :: [comp.]") == []  # nothing left after stripping


def test_is_example_sentence():
    assert mc.is_example_sentence("Has he left yet?", "Ist er schon gegangen?")
    assert not mc.is_example_sentence("to mark up sth.", "den Preis von etw. erhöhen")
    assert not mc.is_example_sentence("to be well-endowed with it.", "damit gut ausgestattet sein")
    assert not mc.is_example_sentence("He left.", "Er ist gegangen.")  # < 4 words
    assert not mc.is_example_sentence("the plain truth of it", "die reine Wahrheit davon")  # no . ? !


def test_read_ding_filters_single_words_and_errors(tmp_path: Path):
    f = tmp_path / "de-en"
    f.write_text(
        "# comment :: line\n"
        "Aalhaut {f} :: eelskin\n"
        "Aalfang {m} :: eel fishing\n"
        "Das Museum ist heute geschlossen. :: The museum is closed today.\n",
        encoding="utf-8",
    )
    pairs, stats = mc.read_ding(f, progress=False)
    assert [(p.en, p.kind) for p in pairs] == [("eel fishing", "phrase"), ("The museum is closed today.", "sentence")]
    assert stats["single_word"] == 1 and stats["variants"] == 3 and stats["sentences"] == 1
    with pytest.raises(mc.CorpusError, match="apt-get install -y trans-de-en"):
        mc.read_ding(tmp_path / "missing", progress=False)


# ------------------------------------------------------------------------------------
# Debian descriptions
# ------------------------------------------------------------------------------------

EN_DESC = (
    "real-time strategy game of ancient warfare\n"
    " 0 A.D. is a free real-time strategy game. It is very ambitious.\n"
    " .\n"
    " Features:\n"
    "  * fast rendering of large\n"
    "    maps\n"
    "  * network play"
)
DE_DESC = (
    "Echtzeit-Strategiespiel über antike Kriegsführung\n"
    " 0 A.D. ist ein freies Echtzeit-Strategiespiel. Das Projekt ist z. B. sehr\n"
    " ambitioniert.\n"
    " .\n"
    " Merkmale:\n"
    "  * schnelles Rendern großer Karten\n"
    "  * Netzwerkspiel"
)


def test_split_description_paragraphs_and_list_items():
    short, paras = mc.split_description(EN_DESC)
    assert short == "real-time strategy game of ancient warfare"
    assert paras == [
        ["0 A.D. is a free real-time strategy game. It is very ambitious."],
        ["Features:", "fast rendering of large maps", "network play"],
    ]


def test_split_sentences_respects_abbreviations():
    assert mc.split_sentences("0 A.D. is a game. It is fun.") == ["0 A.D. is a game.", "It is fun."]
    assert mc.split_sentences("Das ist z. B. gut. Das auch.") == ["Das ist z. B. gut.", "Das auch."]
    assert mc.split_sentences("Use e.g. Foo. Version 2. Done") == ["Use e.g. Foo.", "Version 2. Done"]


def test_align_description_pairs_and_mismatch():
    pairs, stats = mc.align_description(EN_DESC, DE_DESC)
    assert pairs == [
        ("real-time strategy game of ancient warfare", "Echtzeit-Strategiespiel über antike Kriegsführung", "short"),
        ("0 A.D. is a free real-time strategy game.", "0 A.D. ist ein freies Echtzeit-Strategiespiel.", "body"),
        ("It is very ambitious.", "Das Projekt ist z. B. sehr ambitioniert.", "body"),
        ("Features:", "Merkmale:", "body"),
        ("fast rendering of large maps", "schnelles Rendern großer Karten", "body"),
        ("network play", "Netzwerkspiel", "body"),
    ]
    # without sentence splitting the paragraph stays whole
    whole, _ = mc.align_description(EN_DESC, DE_DESC, sentences=False)
    assert whole[1][0] == "0 A.D. is a free real-time strategy game. It is very ambitious."
    # different paragraph counts: only the short description pairs up
    de_one_para = DE_DESC.split("\n .\n")[0]
    pairs, stats = mc.align_description(EN_DESC, de_one_para)
    assert [k for _, _, k in pairs] == ["short"] and stats["paragraph_count_mismatch"] == 1
    # different sentence counts inside a paragraph: paragraph kept whole
    pairs, stats = mc.align_description("s\n One. Two. Three.", "k\n Eins. Zwei und drei.")
    assert pairs[1] == ("One. Two. Three.", "Eins. Zwei und drei.", "body")
    assert stats["segments_sentence_mismatch"] == 1
    # different list-item counts: that paragraph is dropped
    pairs, stats = mc.align_description("s\n Intro:\n  * a b\n  * c d", "k\n Einleitung:\n  * a b")
    assert len(pairs) == 1 and stats["list_item_mismatch"] == 1


def _stanza(pkg: str, md5: str, lang: str, desc: str) -> str:
    return f"Package: {pkg}\nDescription-md5: {md5}\nDescription-{lang}: {desc}\n"


def test_read_debian_descriptions_joins_on_md5(tmp_path: Path):
    lists = tmp_path / "lists"
    lists.mkdir()
    en = "\n".join(
        [
            _stanza("0ad", "aaa", "en", EN_DESC),
            _stanza("libfoo1", "bbb", "en", "foo library\n This package contains the shared library."),
            _stanza("untranslated", "ccc", "en", "nothing here\n Body text."),
        ]
    )
    de = "\n".join(
        [
            _stanza("0ad", "aaa", "de", DE_DESC),
            _stanza("libfoo1", "bbb", "de", "Foo-Bibliothek\n Dieses Paket enthält die Laufzeitbibliothek."),
            _stanza("orphan", "zzz", "de", "Waise\n Ohne englisches Original."),
        ]
    )
    (lists / "mirror_dists_x_main_i18n_Translation-en").write_text(en, encoding="utf-8")
    (lists / "mirror_dists_x_main_i18n_Translation-de.gz").write_bytes(gzip.compress(de.encode("utf-8")))
    (lists / "mirror_dists_x_main_binary-amd64_Packages").write_text(
        "Package: libfoo1\nSource: foo (1.2-3)\nVersion: 1.2-3+b1\n\nPackage: 0ad\nVersion: 1\n", encoding="utf-8"
    )
    pairs, stats, inputs = mc.read_debian_descriptions(lists, progress=False)
    assert stats["joined"] == 2 and stats["no_english"] == 1
    assert {p.group for p in pairs} == {"0ad", "foo"}  # binary -> source package
    assert Pair("This package contains the shared library.", "Dieses Paket enthält die Laufzeitbibliothek.",
                "debian", "foo", "body") in pairs
    assert len(pairs) == 6 + 2
    assert set(inputs) == {"mirror_dists_x_main_i18n_Translation-en", "mirror_dists_x_main_i18n_Translation-de.gz"}


# ------------------------------------------------------------------------------------
# gettext
# ------------------------------------------------------------------------------------


def _write_mo(path: Path, entries: dict[str, str]) -> None:
    """Minimal GNU .mo writer (no hash table)."""
    keys = sorted(entries)
    ids = [k.encode("utf-8") for k in keys]
    strs = [entries[k].encode("utf-8") for k in keys]
    n = len(keys)
    start = 7 * 4 + 16 * n
    offsets, blob = [], b""
    for s in ids + strs:
        offsets.append((len(s), start + len(blob)))
        blob += s + b"\0"
    header = struct.pack("<7I", 0x950412DE, 0, n, 7 * 4, 7 * 4 + 8 * n, 0, 0)
    table = b"".join(struct.pack("<2I", *o) for o in offsets)
    path.write_bytes(header + table + blob)


def test_clean_gettext_message_rules():
    assert mc.clean_gettext_message("_Open the file", "Datei _öffnen") == [("Open the file", "Datei öffnen")]
    assert mc.clean_gettext_message("cannot open %s", "kann %s nicht öffnen") == [
        ("cannot open %s", "kann %s nicht öffnen")
    ]
    assert mc.clean_gettext_message("copy %s to %d", "kopiere %1$s nach %2$d") != []  # positional codes match
    assert mc.clean_gettext_message("cannot open %s", "kann nicht öffnen") == []  # placeholder lost
    assert mc.clean_gettext_message("Quit", "Beenden") == []  # one word
    assert mc.clean_gettext_message("%s: %s", "%s: %s") == []  # untranslated, only codes
    assert mc.clean_gettext_message("wrapped\nprose text", "umbrochener\nText") == [("wrapped prose text",
                                                                                       "umbrochener Text")]
    assert mc.clean_gettext_message("  -h, --help     show help", "  -h, --help     Hilfe") == []


def test_read_gettext_from_mo(tmp_path: Path):
    _write_mo(
        tmp_path / "demo.mo",
        {
            "": "Content-Type: text/plain; charset=UTF-8\n",
            "menu\x04Open the file": "Datei öffnen",
            "one file\x00%d files": "eine Datei\x00%d Dateien",  # plural: skipped
            "Save all changes": "Alle Änderungen speichern",
            "Close": "Schließen",
        },
    )
    _write_mo(tmp_path / "iso_639-3.mo", {"": "Content-Type: text/plain; charset=UTF-8\n", "Old Norse": "Altnordisch"})
    pairs, stats, inputs = mc.read_gettext(tmp_path, progress=False)
    assert sorted((p.en, p.de, p.group) for p in pairs) == [
        ("Open the file", "Datei öffnen", "demo"),
        ("Save all changes", "Alle Änderungen speichern", "demo"),
    ]
    assert stats["files"] == 1 and list(inputs) == ["demo.mo"]  # iso_* name lists excluded
    capped, stats, _ = mc.read_gettext(tmp_path, max_pairs=1, progress=False)
    assert len(capped) == 1 and stats["capped_away"] == 1


# ------------------------------------------------------------------------------------
# Cleaning
# ------------------------------------------------------------------------------------


def test_normalize_text():
    assert mc.normalize_text("  Gru\u0308n\tist\nschön \u00ad ") == "Grün ist schön"
    assert mc.normalize_text("a\u2028b\u2029c\rd") == "a b c d"  # nothing that splits a line survives
    assert mc.normalize_text("A\x96B\x85") == "A–B…"  # stray C1 controls are cp1252 mojibake
    assert mc.english_key("It's a Test, isn't it?") == "itsatestisntit"


def test_clean_pairs_rules():
    long_en = " ".join(["word"] * 101)
    raw = [
        Pair("The house is red.", "Das Haus ist rot.", "ding", "", "sentence"),
        Pair("the house is red.", "das Haus ist rot.", "ding", "", "phrase"),  # duplicate (case)
        Pair("The  house\tis red.", "Das Haus ist rot.", "debian", "p", "body"),  # duplicate after normalising
        Pair("", "leer", "ding"),
        Pair("...", "...", "ding"),  # no alphanumerics
        Pair("Firefox", "firefox", "debian", "p", "short"),  # identical
        Pair(long_en, long_en.replace("word", "Wort"), "debian", "p", "body"),  # too long
        Pair("a b c d e f g", "x y", "gettext", "g", "message"),  # ratio 3.5
        Pair("a b c d e f", "x y", "gettext", "g", "message"),  # ratio 3.0: kept
    ]
    out, stats = mc.clean_pairs(raw)
    assert [(p.en, p.source) for p in out] == [("The house is red.", "ding"), ("a b c d e f", "gettext")]
    assert stats["ding"] == {"in": 4, "out": 1, "duplicate": 1, "empty": 2}
    assert stats["debian"] == {"in": 3, "duplicate": 1, "identical": 1, "too_long": 1}
    assert stats["gettext"] == {"in": 2, "length_ratio": 1, "out": 1}


# ------------------------------------------------------------------------------------
# Split
# ------------------------------------------------------------------------------------


def _synthetic_corpus() -> list[Pair]:
    rng = random.Random(0)
    words = [f"w{i}" for i in range(500)]
    pairs = []
    for i in range(400):
        en = f"Sentence {i} has " + " ".join(rng.sample(words, 4)) + "."
        pairs.append(Pair(en, f"Satz {i} hat " + " ".join(rng.sample(words, 4)) + ".", "ding", "", "sentence"))
    for i in range(300):
        pairs.append(Pair(f"phrase number {i}", f"Ausdruck Nummer {i}", "ding", "", "phrase"))
    for g in range(80):
        for j in range(5):
            pairs.append(Pair(f"Package {g} line {j} text.", f"Paket {g} Zeile {j} Text.", "debian", f"pkg{g}", "body"))
    # shared boilerplate across packages: its English key must end up in one split only
    for g in range(80):
        pairs.append(Pair("This package contains the library.", f"Dieses Paket enthält die Bibliothek {g}.",
                          "debian", f"pkg{g}", "body"))
    # near-duplicates of Ding sentences (case/punctuation differ) in train-only sources
    for p in pairs[:400]:
        pairs.append(Pair(p.en.upper().rstrip(".") + "!", p.de, "gettext", "dom", "message"))
    return pairs


def _as_sets(splits: dict[str, list[Pair]]) -> dict[str, set[Pair]]:
    return {k: set(v) for k, v in splits.items()}


def test_split_deterministic_disjoint_and_holds_out_packages():
    pairs = _synthetic_corpus()
    cfg = mc.SplitConfig(n_test=60, n_dev=60, seed=0)
    splits, info = mc.split_corpus(pairs, cfg)
    shuffled = list(pairs)
    random.Random(1).shuffle(shuffled)
    splits2, _ = mc.split_corpus(shuffled, cfg)
    assert _as_sets(splits) == _as_sets(splits2)  # independent of input order

    other, _ = mc.split_corpus(pairs, mc.SplitConfig(n_test=60, n_dev=60, seed=1))
    assert _as_sets(other)["test"] != _as_sets(splits)["test"]  # the seed matters

    keys = {s: [mc.english_key(p.en) for p in rows] for s, rows in splits.items()}
    assert not set(keys["train"]) & set(keys["test"])
    assert not set(keys["train"]) & set(keys["dev"])
    assert not set(keys["dev"]) & set(keys["test"])
    assert len(keys["test"]) == len(set(keys["test"])) and len(keys["dev"]) == len(set(keys["dev"]))

    for split in ("test", "dev"):
        rows = splits[split]
        ding = [p for p in rows if p.source == "ding"]
        assert len(ding) == 30 and all(p.kind == "sentence" for p in ding)
        assert 30 <= sum(p.source == "debian" for p in rows) <= 36  # whole packages, 6 pairs at most
        assert not any(p.source == "gettext" for p in rows)
        held = {p.group for p in rows if p.source == "debian"}
        assert held == set(info["held_out_groups"][split])
        assert not any(p.group in held for p in splits["train"])  # package held out as a whole
    # every pair is in exactly one split or counted as a cross-split near-duplicate
    n_dropped = sum(info["dropped_cross_split"].values())
    assert n_dropped > 0 and info["held_out_overflow"] == 0
    assert sum(len(v) for v in splits.values()) + n_dropped == len(pairs)
    # the upper-cased gettext copies of held-out Ding sentences never reach train
    held_keys = {mc.english_key(p.en) for s in ("test", "dev") for p in splits[s]}
    assert not any(p.source == "gettext" and mc.english_key(p.en) in held_keys for p in splits["train"])


def test_split_caps_big_held_out_packages():
    pairs = [Pair(f"Big package line {j}.", f"Großes Paket Zeile {j}.", "debian", "big", "body") for j in range(50)]
    pairs += [Pair(f"Small {g} line.", f"Klein {g} Zeile.", "debian", f"s{g}", "body") for g in range(30)]
    for seed in range(20):  # find a seed that holds out the big package
        splits, info = mc.split_corpus(pairs, mc.SplitConfig(n_test=20, n_dev=20, ding_share=0, seed=seed,
                                                             max_per_group=8))
        if "big" in info["held_out_groups"]["test"] + info["held_out_groups"]["dev"]:
            break
    else:
        pytest.fail("no seed held out the big package")
    held = [p for s in ("test", "dev") for p in splits[s] if p.group == "big"]
    assert len(held) == 8 and info["held_out_overflow"] == 42
    assert not any(p.group == "big" for p in splits["train"])  # overflow never leaks into train


def test_write_splits_and_end_to_end_build(tmp_path: Path):
    ding = tmp_path / "de-en"
    lines = ["# header :: line"]
    for i in range(60):
        lines.append(f"Haus {i} {{n}} [arch.] | Das Haus Nummer {i} ist sehr alt. :: house {i} | "
                     f"House number {i} is very old.")
    ding.write_text("\n".join(lines) + "\n", encoding="utf-8")
    lists = tmp_path / "apt" / "lists"
    lists.mkdir(parents=True)
    en, de = [], []
    for g in range(40):
        en.append(_stanza(f"pkg{g}", f"md5{g}", "en", f"tool number {g}\n The tool {g} converts files quickly."))
        de.append(_stanza(f"pkg{g}", f"md5{g}", "de", f"Werkzeug Nummer {g}\n Das Werkzeug {g} wandelt Dateien um."))
    (lists / "m_i18n_Translation-en").write_text("\n".join(en), encoding="utf-8")
    (lists / "m_i18n_Translation-de").write_text("\n".join(de), encoding="utf-8")
    locale = tmp_path / "locale"
    locale.mkdir()
    _write_mo(locale / "demo.mo", {"": "Content-Type: text/plain; charset=UTF-8\n",
                                   "Save all changes": "Alle Änderungen speichern"})
    out = tmp_path / "out"
    cfg = mc.BuildConfig(out=out, ding_path=ding, apt_dir=tmp_path / "apt", locale_dir=locale, n_test=20, n_dev=20,
                         vocab_size=120, spm_sample=1000, progress=False)
    manifest = mc.build_corpus(cfg)

    for split in mc.SPLITS:
        en_lines = (out / f"{split}.en").read_text(encoding="utf-8").split("\n")[:-1]
        de_lines = (out / f"{split}.de").read_text(encoding="utf-8").split("\n")[:-1]
        assert len(en_lines) == len(de_lines) == manifest["counts"][split]["pairs"] > 0
        assert all(line and "\t" not in line for line in en_lines + de_lines)
    assert manifest["counts"]["test"]["by_source"] == {"ding": 10, "debian": 10}
    assert manifest["counts"]["train"]["by_source"]["gettext"] == 1
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8"))["files"] == manifest["files"]
    sp = manifest["sentencepiece"]
    assert sp["special_ids"] == {"pad": 0, "unk": 1, "bos": 2, "eos": 3}

    import sentencepiece as spm

    model = spm.SentencePieceProcessor(model_file=str(out / "spm.model"))
    text = "Das Haus Nummer 3 ist sehr alt."
    assert model.decode(model.encode(text)) == text

    # same inputs, same seed -> byte-identical corpus files
    manifest2 = mc.build_corpus(mc.BuildConfig(out=tmp_path / "out2", ding_path=ding, apt_dir=tmp_path / "apt",
                                               locale_dir=locale, n_test=20, n_dev=20, spm=False, progress=False))
    for name in ("train.en", "train.de", "dev.en", "test.de"):
        assert manifest2["files"][name] == manifest["files"][name]


def test_main_reports_missing_ding(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    rc = mc.main(["--out", str(tmp_path / "o"), "--ding", str(tmp_path / "nope"), "--no-debian", "--no-gettext",
                  "--quiet"])
    assert rc == 2
    assert "apt-get install -y trans-de-en" in caplog.text
