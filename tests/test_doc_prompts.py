"""The drafter's prompts at scale (issue 18): manual-page parsing and documentation prompts with held-out templates."""

import gzip

import numpy as np

from blockwise.data.sources.docs import _roff_text, man_pages
from blockwise.tasks.lm.prompts import DOC_TEMPLATES, HELD_OUT_TEMPLATES, build_doc_prompts


def _page(folder, name, text):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.1.gz").write_bytes(gzip.compress(text.encode()))


def test_man_pages_parse_name_summary_and_first_paragraph(tmp_path):
    _page(tmp_path / "man1", "frob", '.TH FROB 1\n.SH NAME\nfrob \\- turn the \\fBknobs\\fR of a file\n.SH SYNOPSIS\n'
          '.B frob\n[\\fIOPTION\\fR]\n.SH DESCRIPTION\n.B frob\nturns knobs.\nIt is\n\\(lqfast\\(rq.\n.PP\nSecond.\n')
    _page(tmp_path / "man1", "alias", ".so man1/frob.1\n")  # a link to another page: skipped
    _page(tmp_path / "man1", "broken", ".TH X 1\n.SH SYNOPSIS\nnothing\n")  # no NAME: skipped
    _page(tmp_path / "man8", "zap", '.SH "NAME"\nzap, zapper \\- remove every zap from a system\n')
    pages = man_pages(tmp_path)
    assert pages == [("frob", "turn the knobs of a file", "frob turns knobs. It is fast."),
                     ("zap", "remove every zap from a system", "")]
    assert _roff_text(".BR ls (1)") == "ls (1)" and _roff_text(".TP") == ""


def test_doc_prompts_hold_out_whole_templates_and_are_deterministic():
    man = [(f"cmd{i}", f"Do thing number {i}", f"cmd{i} does thing {i}.") for i in range(40)]
    py = [(f"mod.fn{i}", f"Return the {i}th value of the sequence.") for i in range(40)]
    deb = [(f"Library for task {i}", f"A library that performs task {i} quickly.") for i in range(40)]
    prompts = build_doc_prompts(man, py, deb, seed=5, per_item=2, held_out_items=4)
    again = build_doc_prompts(man, py, deb, seed=5, per_item=2, held_out_items=4)
    assert prompts == again and prompts != build_doc_prompts(man, py, deb, seed=6, per_item=2, held_out_items=4)
    train = [p for p in prompts if not p["held_out"]]
    held = [p for p in prompts if p["held_out"]]
    assert len(held) == 3 * 4 and len(train) == 3 * 36 * 2
    assert {p["template"] for p in held} == set(HELD_OUT_TEMPLATES)
    assert not {p["template"] for p in train} & set(HELD_OUT_TEMPLATES)
    assert {p["template"] for p in train} == {t for src in DOC_TEMPLATES.values() for t in src} - set(HELD_OUT_TEMPLATES)
    assert prompts[-len(held):] == held  # training first, then the held-out rows
    # an item held out is not also a training item, and exclusions drop exact matches
    held_names = {p["text"].split("`")[1] for p in held if p["kind"] in ("man", "py")}
    assert not held_names & {p["text"].split("`")[1] for p in train if p["kind"] in ("man", "py") and "`" in p["text"]}
    first = train[0]["text"]
    assert first not in [p["text"] for p in build_doc_prompts(man, py, deb, seed=5, per_item=2, held_out_items=4,
                                                              exclude=[first.upper()])]
    # "HTTP …" keeps its capitals where a template lower-cases a summary's first letter
    p = build_doc_prompts([], [], [("HTTP client library", "HTTP client library.")] * 2, seed=0, per_item=5,
                          held_out_items=0)
    assert any("What is HTTP client library?" in q["text"] for q in p)


def test_prompt_pack_round_trip(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("gpu_drafter", Path(__file__).parents[1] / "recipes/gpu/drafter.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = [{"held_out": i < 2, "kind": "man", "template": f"t{i % 3}", "text": str(i), "ids": list(range(i, 2 * i + 1))}
            for i in range(7)]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    mod.pack(str(tmp_path / "p.jsonl"), str(tmp_path / "p.npz"))
    z = np.load(tmp_path / "p.npz")
    ends = np.cumsum(z["lengths"])
    assert [z["ids"][e - n: e].tolist() for e, n in zip(ends, z["lengths"])] == [r["ids"] for r in rows]
    assert z["held_out"].tolist() == [r["held_out"] for r in rows]
    assert [str(z["templates"][t]) for t in z["template"]] == [r["template"] for r in rows]
