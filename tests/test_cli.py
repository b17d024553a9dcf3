"""The command line: clear errors for user mistakes, one output line per input line, never lost output."""

import io
import sys

import pytest
import torch

from blockwise import BlockwiseModel, HeadsConfig, preset
from blockwise.cli import main as cli_main


@pytest.fixture(scope="module")
def tiny_translator(tmp_path_factory):
    import sentencepiece as spm

    d = tmp_path_factory.mktemp("mt")
    text = d / "corpus.txt"
    text.write_text("\n".join(["the house is small.", "das Haus ist klein.", "a long sentence. another one!",
                               "ein Satz.", "hello world"] * 20))
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(d / "spm"), vocab_size=32, pad_id=0, unk_id=1,
                                   bos_id=2, eos_id=3, character_coverage=1.0, minloglevel=2)
    torch.manual_seed(0)
    model = BlockwiseModel(preset("tiny-encdec", vocab_size=32), HeadsConfig(k=3, d_hidden=16))
    model.save(d / "model.safetensors")
    return d / "model.safetensors"


def run_cli(argv, stdin="", capsys=None, monkeypatch=None):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = cli_main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_translate_one_line_out_per_line_in(tiny_translator, capsys, monkeypatch):
    lines = "the house is small.\n\nhello world\n" + "a long sentence. " * 60 + "\n\x07odd\x01 line\n"
    code, out, err = run_cli(["translate", "--model", str(tiny_translator)], lines, capsys, monkeypatch)
    assert code == 0
    assert len(out.split("\n")) - 1 == 5  # five input lines, five output lines
    assert out.split("\n")[1] == ""  # the empty line stays empty


def test_translate_compare_reports_identity(tiny_translator, capsys, monkeypatch):
    code, out, err = run_cli(["translate", "--model", str(tiny_translator), "--compare", "hello world"], "", capsys,
                             monkeypatch)
    assert code == 0
    assert "greedy:" in out and "blockwise:" in out and "identical: True" in out


@pytest.mark.parametrize("argv,message", [
    (["translate", "--model", "/no/such/model.safetensors", "x"], "no model at"),
    (["translate", "--file", "/no/such/file.txt"], "no such file"),
    (["demo", "--text", "/no/such/file.txt"], "cannot read"),
])
def test_user_mistakes_get_a_message_not_a_trace(argv, message, capsys, monkeypatch):
    code, out, err = run_cli(argv, "", capsys, monkeypatch)
    assert code == 2 and message in err and "Traceback" not in err


def test_translate_rejects_k_beyond_heads(tiny_translator, capsys, monkeypatch):
    code, out, err = run_cli(["translate", "--model", str(tiny_translator), "-k", "9", "x"], "", capsys, monkeypatch)
    assert code == 2 and "1..3" in err


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    out = capsys.readouterr().out
    for command in ("demo", "translate", "generate", "upsample"):
        assert command in out
