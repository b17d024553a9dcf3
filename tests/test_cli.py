"""The command line: clear errors for user mistakes, one output line per input line, never lost output."""

import dataclasses
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from blockwise import BlockwiseModel, HeadsConfig, preset
from blockwise.cli import COMMANDS
from blockwise.cli import main as cli_main

ASSETS = Path(__file__).resolve().parent.parent / "src" / "blockwise" / "assets"


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
    model = BlockwiseModel(preset("tiny-encdec", vocab_size=32), HeadsConfig(num_heads=3, d_hidden=16))
    model.save(d / "model.safetensors")
    return d / "model.safetensors"


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, tiny_translator):
    """Files a user might pass by mistake, by name."""
    d = tmp_path_factory.mktemp("bad")
    files = {"folder": d / "folder", "missing": d / "missing.safetensors", "corrupt": d / "corrupt.safetensors",
             "latin1": d / "latin1.txt", "junk_png": d / "junk.png", "short": d / "short.txt",
             "sr_corrupt": d / "sr" / "corrupt.safetensors", "mt_corrupt": d / "mt" / "corrupt.safetensors",
             "mt_decoder_only": d / "mt_dec" / "model.safetensors", "narrow_heads": d / "narrow_heads.safetensors",
             "drafter": d / "drafter.safetensors"}
    files["folder"].mkdir()
    files["corrupt"].write_bytes(b"\x07not a safetensors file at all" * 10)
    files["latin1"].write_bytes("the house\ncaf\u00e9 cr\u00e8me\n".encode("latin-1"))
    files["junk_png"].write_text("not a picture")
    files["short"].write_text("too short")
    for name in ("sr_corrupt", "mt_corrupt", "mt_decoder_only"):
        files[name].parent.mkdir()
    shutil.copy(files["corrupt"], files["sr_corrupt"])
    shutil.copy(ASSETS / "sr_x4.json", files["sr_corrupt"].with_suffix(".json"))  # geometry fine, weights not
    for name in ("mt_corrupt", "mt_decoder_only"):  # a sentencepiece model beside: only the checkpoint is wrong
        shutil.copy(tiny_translator.parent / "spm.model", files[name].parent / "spm.model")
    shutil.copy(files["corrupt"], files["mt_corrupt"])
    BlockwiseModel(preset("tiny", vocab_size=32), HeadsConfig(num_heads=3, d_hidden=16)).save(files["mt_decoder_only"])
    # heads of the right format for a model of width 32, not SmolLM2's 576
    cfg = HeadsConfig(num_heads=3, d_hidden=16)
    model = BlockwiseModel(preset("tiny", vocab_size=32), cfg)
    tensors = {n[len("heads."):]: t.contiguous() for n, t in model.state_dict().items() if n.startswith("heads.")}
    save_file(tensors, str(files["narrow_heads"]), metadata={"format": "blockwise-lm-heads/1", "d_model": "32",
                                                            "heads": json.dumps(dataclasses.asdict(cfg))})
    from blockwise.model.heads import make_heads
    from blockwise.tasks.lm.heads_io import save_heads

    save_heads(make_heads(576, HeadsConfig(num_heads=3, d_hidden=8, kind="feature")), files["drafter"])
    return {name: str(path) for name, path in files.items()}


def run_cli(argv, stdin="", capsys=None, monkeypatch=None):
    """(exit status, stdout, stderr) of ``blockwise argv``; argparse's exits count as exit statuses."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin) if isinstance(stdin, str) else stdin)
    try:
        code = cli_main(argv)
    except SystemExit as exit:
        code = exit.code
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
    assert "(k=auto: k=" in out  # the default block size is chosen per step, and the choices are reported


def test_translate_compare_times_a_short_batch_as_the_median_of_five_runs(tiny_translator, capsys, monkeypatch):
    """A batch that decodes in well under a second is timed five times per decoder, in alternating order, and the
    medians are printed (one run of a line is mostly the machine's noise)."""
    from dataclasses import replace

    from blockwise import cli_translate

    seconds = {"greedy": iter([0.9, 0.1, 0.3, 0.2, 0.5, 0.4]), "blockwise": iter([0.9, 0.05, 0.2, 0.1, 0.3, 0.15])}
    calls = []
    by_line = cli_translate.Translator.by_line

    def timed(self, method, *a, **kw):  # the first pair is the warm-up, whose times are never printed
        calls.append(method)
        out, result = by_line(self, method, *a, **kw)
        return out, replace(result, seconds=next(seconds[method]))

    monkeypatch.setattr(cli_translate.Translator, "by_line", timed)
    code, out, err = run_cli(["translate", "--model", str(tiny_translator), "--compare", "hello world"], "", capsys,
                             monkeypatch)
    assert code == 0 and "identical: True" in out, out
    assert calls.count("greedy") == calls.count("blockwise") == 6, calls
    assert "# greedy 0.30s, blockwise 0.15s" in out and "speedup 2.00x" in out, out


def test_translate_keeps_one_block_size_policy_for_the_whole_input(tiny_translator, capsys, monkeypatch):
    """k = auto learns what the model accepts as it decodes: batch after batch of one input (and the --compare
    warm-up) go on with the same policy instead of starting again from the prior."""
    from blockwise.tasks import translation

    passed, real = [], translation.translate
    monkeypatch.setattr(translation, "translate", lambda *a, **kw: passed.append(kw.get("policy")) or real(*a, **kw))
    code, out, err = run_cli(["translate", "--model", str(tiny_translator), "--batch-size", "1", "hello world",
                              "good morning", "the house"], "", capsys, monkeypatch)
    assert code == 0 and len(out.splitlines()) == 3, out
    assert passed[0] is None and passed[1] is not None and all(p is passed[1] for p in passed[2:]), passed
    assert len(passed) == 3


def test_translate_compare_alternates_which_runs_first(tiny_translator, capsys, monkeypatch):
    """Batch by batch, greedy and blockwise take turns running first (the first run of a batch meets colder caches);
    every batch still prints both outputs in input order and its verdict."""
    calls = []
    from blockwise import cli_translate

    by_line = cli_translate.Translator.by_line
    monkeypatch.setattr(cli_translate.Translator, "by_line",
                        lambda self, method, *a, **kw: calls.append(method) or by_line(self, method, *a, **kw))
    monkeypatch.setattr(cli_translate.Translator, "retime", lambda self, lines, first, slow, fast: (slow, fast))
    code, out, err = run_cli(["translate", "--model", str(tiny_translator), "--compare", "--batch-size", "1",
                              "hello world", "good morning", "the house"], "", capsys, monkeypatch)
    assert code == 0 and out.count("identical: True") >= 2, out
    # an untimed warm-up of both, then batch by batch the first run alternates
    assert calls[:6] == ["greedy", "blockwise", "blockwise", "greedy", "greedy", "blockwise"], calls
    lines = [line for line in out.splitlines() if not line.startswith("#")]
    assert [line.split(":")[0] for line in lines] == ["greedy", "blockwise"] * (len(lines) // 2), out


def test_translate_samples_reproducibly(tiny_translator, capsys, monkeypatch):
    """--temperature samples; a line's draws come from (seed, line number, sentence): the same run again gives the
    same output, another seed another."""
    lines = "the house is small.\nhello world. the house.\nthe old river\n"
    base = ["translate", "--model", str(tiny_translator), "-k", "3", "--temperature", "1.5"]
    runs = [run_cli(base + ["--seed", seed], lines, capsys, monkeypatch) for seed in ("4", "4", "5")]
    assert all(code == 0 and len(out.splitlines()) == 3 for code, out, _ in runs)
    assert runs[0][1] == runs[1][1] and runs[2][1] != runs[0][1]
    greedy_out = run_cli(base[:-2], lines, capsys, monkeypatch)[1]
    assert greedy_out != runs[0][1]
    code, out, err = run_cli(base + ["--compare", "hello world"], "", capsys, monkeypatch)
    assert code == 0 and "sampled:" in out and "blockwise:" in out and "the same distribution" in out


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_translate_with_quantized_weights_is_still_exact(tiny_translator, weights, capsys, monkeypatch):
    code, out, err = run_cli(["translate", "--model", str(tiny_translator), "--weights", weights, "--compare",
                              "hello world", "the house is small."], "", capsys, monkeypatch)
    assert code == 0 and "identical: True" in out, out + err
    lines = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith(("greedy:", "blockwise:"))]
    assert len(lines) == 4 and lines[0] == lines[1] and lines[2] == lines[3]


def test_int4_on_a_model_of_the_wrong_width_is_a_user_error(tmp_path, tiny_translator, capsys, monkeypatch):
    wide = tmp_path / "model.safetensors"
    shutil.copy(tiny_translator.parent / "spm.model", tmp_path / "spm.model")
    cfg = dataclasses.replace(preset("tiny-encdec", vocab_size=32), d_model=48, n_heads=4)
    BlockwiseModel(cfg, HeadsConfig(num_heads=3, d_hidden=16)).save(wide)
    code, out, err = run_cli(["translate", "--model", str(wide), "--weights", "int4", "hello"], "", capsys,
                             monkeypatch)
    assert code == 2 and "Traceback" not in err
    assert err.strip().count("\n") == 0 and "multiple of the group size 32" in err and "--weights int8" in err


def test_translate_warns_when_a_sentence_is_truncated(capsys, monkeypatch):
    """The shipped model reads at most 127 source tokens: one longer sentence is cut, with a warning, and still
    gives its one output line."""
    long_sentence = "the house near the old river is very small and " * 16  # ~160 tokens, no sentence end
    code, out, err = run_cli(["translate", long_sentence, "the house is small."], "", capsys, monkeypatch)
    assert code == 0 and len(out.split("\n")) - 1 == 2
    assert "blockwise translate: warning: line 1: a sentence of" in err and "truncated" in err
    assert "line 2" not in err


def test_translate_failing_line_keeps_the_others(tiny_translator, capsys, monkeypatch):
    import blockwise.tasks.translation as translation

    model = ["translate", "--model", str(tiny_translator)]
    # a failed batch is retried line by line: the good lines come out as they do alone (a tiny random model's
    # output length depends on its batch mates)
    first, third = (run_cli(model, line, capsys, monkeypatch)[1] for line in ("hello world", "the house is small."))
    real = translation.translate

    def fragile(model, corpus, sentences, *args, **kw):
        if any("BAD" in s for s in sentences):
            raise RuntimeError("simulated failure")
        return real(model, corpus, sentences, *args, **kw)

    monkeypatch.setattr(translation, "translate", fragile)
    code, out, err = run_cli(model, "hello world\nBAD line\nthe house is small.\n", capsys, monkeypatch)
    assert code == 1 and out == f"{first}\n{third}"  # the failed line is empty, its batch mates are not
    assert "blockwise translate: warning: line 2: not translated (simulated failure)" in err


def test_translate_stdin_not_utf8_keeps_earlier_lines(tiny_translator, capsys, monkeypatch):
    stdin = io.TextIOWrapper(io.BytesIO(b"hello world\ncaf\xe9\nthe house is small.\n"), encoding="utf-8")
    code, out, err = run_cli(["translate", "--model", str(tiny_translator)], stdin, capsys, monkeypatch)
    assert code == 2 and len(out.split("\n")) - 1 == 1  # line 1 translated and printed, then the error
    assert err.startswith("blockwise translate: error: standard input line 2 is not UTF-8")


@pytest.mark.parametrize("k_flag", ["-k", "--k"])
def test_translate_takes_k_and_long_k(tiny_translator, k_flag, capsys, monkeypatch):
    code, out, err = run_cli(["translate", "--model", str(tiny_translator), k_flag, "2", "--compare", "hello world"],
                             "", capsys, monkeypatch)
    assert code == 0 and "(k=2, exact)" in out


@pytest.mark.parametrize("k_flag", ["-k", "--k"])
def test_every_command_parses_k_and_long_k(k_flag):
    from blockwise import cli, cli_generate, cli_translate, cli_upsample

    assert cli_generate.parse_args([k_flag, "4"]).k == 4
    assert cli_translate.parse_args([k_flag, "4", "x"]).k == 4
    assert cli_upsample.parse_args(["in.png", "out.png", k_flag, "4"]).k == 4
    assert cli.demo_parser().parse_args([k_flag, "4"]).k == 4



def test_k_auto_is_the_default_of_generate_translate_and_upsample():
    from blockwise import cli_generate, cli_translate, cli_upsample

    assert cli_generate.parse_args([]).k == "auto" and cli_generate.parse_args(["-k", "AUTO"]).k == "auto"
    assert cli_translate.parse_args(["x"]).k == "auto"
    assert cli_upsample.parse_args(["in.png", "out.png"]).k == "auto"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_names_the_command_and_has_threads(command, capsys):
    with pytest.raises(SystemExit) as exit:
        cli_main([command, "--help"])
    out = capsys.readouterr().out
    assert exit.value.code == 0
    assert out.startswith(f"usage: blockwise {command} ") and "python -m" not in out and "default" in out
    if command != "export":  # every command that decodes or trains: a block size and the CPU threads
        assert "--threads" in out and "-k K, --k K" in out


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    out = capsys.readouterr().out
    for command in ("demo", "translate", "generate", "upsample", "train-heads", "export"):
        assert command in out


# Each: (argv with {name} standing for a file of bad_files, words the message must contain). All fail before any
# model larger than the tiny ones (or the 8 MB super-resolution one) is loaded.
MISTAKES = [
    # generate: numbers are checked by the parser, the heads file before SmolLM2 loads
    (["generate", "hi", "--max-new-tokens", "0"], "--max-new-tokens: must be >= 1"),
    (["generate", "hi", "--max-new-tokens", "many"], "'many' is not a whole number"),
    (["generate", "hi", "--threads", "-1"], "--threads: must be >= 1"),
    (["generate", "hi", "-k", "0"], "-k/--k: must be >= 1"),
    (["generate", "hi", "--k", "0"], "-k/--k: must be >= 1"),
    (["generate", "hi", "-k", "99"], "-k 99 is more than the"),
    (["generate", "hi", "--heads", "{corrupt}"], "is not a usable heads file"),
    (["generate", "hi", "--heads", "{missing}"], "no heads file at"),
    (["generate", "hi", "--heads", "{folder}"], "no heads file at"),  # a folder without heads.safetensors
    (["generate", "hi", "--heads", "{narrow_heads}"], "heads for another model"),
    (["generate", "hi", "--heads", "{drafter}", "-k", "4"], "-k 4 is more than the"),
    (["generate", "hi", "--temperature", "-1"], "--temperature: must be >= 0"),
    (["generate", "hi", "--lookup", "-2"], "--lookup: must be >= 0"),
    (["generate", "hi", "--temperature", "0.7", "--top-p", "1.5"], "--top-p: must be at most 1"),
    (["generate", "hi", "--temperature", "0.7", "--top-p", "0"], "--top-p: must be > 0"),
    (["generate", "hi", "--top-k", "5"], "give --temperature > 0 too"),
    (["generate", "hi", "--temperature", "0.7", "--typical", "1"], "--typical must be below 1"),
    (["generate", "hi", "--temperature", "0.7", "--typical", "0.1", "--tree", "dynamic"], "--typical works on blocks"),
    (["generate", "hi", "--model", "{missing}"], "no model at"),
    (["generate", "hi", "--model", "{folder}"], "without config.json"),
    (["generate", "hi", "--model", "{corrupt}"], "neither a Hugging Face model folder nor a .gguf file"),
    # train-heads and export: all before a model loads
    (["train-heads", "--out", "{corrupt}"], "is a file"),
    (["train-heads", "--out", "{folder}/h", "--prompts", "{missing}"], "cannot read the prompts"),
    (["train-heads", "--out", "{folder}/h", "--prompts", "{latin1}"], "cannot read the prompts"),
    (["train-heads", "{missing}", "--out", "{folder}/h"], "no model at"),
    (["train-heads", "--out", "{folder}/h", "-k", "1"], "-k/--k: must be >= 2"),
    (["export", "{missing}", "--to", "vllm"], "no heads file at"),
    (["export", "{drafter}", "--to", "vllm"], "no vLLM form"),
    (["export", "{corrupt}", "--to", "vllm"], "is not a usable heads file"),
    # translate
    (["translate", "--model", "{missing}", "x"], "no translation model at"),
    (["translate", "--top-p", "0.5", "x"], "give --temperature > 0 too"),
    (["translate", "--temperature", "0.7", "--accept", "top2", "x"], "--accept top2/top3 is for greedy decoding"),
    (["translate", "--model", "{folder}", "x"], "is a folder"),
    (["translate", "--model", "{mt_corrupt}", "x"], "is not a usable blockwise checkpoint"),
    (["translate", "--model", "{corrupt}", "x"], "no sentencepiece model beside"),
    (["translate", "--model", "{mt_decoder_only}", "x"], "not a translation (encoder-decoder) model"),
    (["translate", "--file", "{missing}"], "no input file at"),
    (["translate", "--file", "{folder}"], "is a folder"),
    (["translate", "--file", "{latin1}"], "is not UTF-8 text (line 2, byte 0xe9)"),
    (["translate", "-k", "0", "x"], "-k/--k: must be >= 1"),
    (["translate", "-k", "fast", "x"], "-k/--k: 'fast' is not a whole number: give a block size >= 1, or auto"),
    (["translate", "--threads", "0", "x"], "--threads: must be >= 1"),
    (["translate", "--batch-size", "0", "x"], "--batch-size: must be >= 1"),
    # upsample
    (["upsample", "{junk_png}", "{folder}/o.png"], "is not a readable image"),
    (["upsample", "{missing}", "{folder}/o.png"], "no image at"),
    (["upsample", "{folder}", "{folder}/o.png"], "is a folder"),
    (["upsample", "{junk_png}", "{folder}/o.png", "--checkpoint", "{missing}"], "no super-resolution checkpoint at"),
    (["upsample", "{junk_png}", "{folder}/o.png", "--checkpoint", "{sr_corrupt}"], "not a usable super-resolution"),
    (["upsample", "{junk_png}", "{folder}/o.png", "-k", "99"], "-k 99 is more than the"),
    (["upsample", "{junk_png}", "{folder}/o.jpg"], "the output must be a .png file"),
    (["upsample", "{junk_png}", "{missing}/o.png"], "no such folder for the output"),
    (["upsample", "{junk_png}", "{folder}/o.png", "--threads", "0"], "--threads: must be >= 1"),
    (["upsample", "{junk_png}", "{folder}/o.png", "--eps", "-1"], "--eps: must be >= 0"),
    # demo: all before the minute of training
    (["demo", "--text", "{missing}"], "no text file at"),
    (["demo", "--text", "{short}"], "give at least 1,000"),
    (["demo", "--max-new-tokens", "0"], "--max-new-tokens: must be >= 1"),
    (["demo", "--max-new-tokens", "1000"], "exceed the demo model's 512 positions"),
    (["demo", "--seconds", "0"], "--seconds: must be > 0"),
    (["demo", "-k", "0"], "-k/--k: must be >= 1"),
    (["demo", "--threads", "0"], "--threads: must be >= 1"),
]


@pytest.mark.parametrize("argv,message", MISTAKES, ids=[" ".join(a) for a, _ in MISTAKES])
def test_user_mistakes_get_one_line_and_status_2(argv, message, bad_files, capsys, monkeypatch):
    code, out, err = run_cli([a.format(**bad_files) for a in argv], "", capsys, monkeypatch)
    error = [line for line in err.splitlines() if not line.startswith(("usage:", " "))]  # argparse prints usage first
    assert code == 2 and "Traceback" not in err
    assert len(error) == 1 and error[0].startswith(f"blockwise {argv[0]}: error: ") and message in error[0], err
    assert not Path(bad_files["folder"], "o.png").exists()


def test_the_installed_command_reports_without_a_traceback():
    result = subprocess.run([sys.executable, "-m", "blockwise.cli", "generate", "hi", "--max-new-tokens", "0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("blockwise generate: error: argument --max-new-tokens")


def test_generate_copies_six_tokens_by_default_and_never_when_sampling():
    from blockwise import cli_generate
    from blockwise.cli import make_lookup

    assert make_lookup(cli_generate.parse_args([])).tokens == 6
    assert make_lookup(cli_generate.parse_args(["--lookup", "3"])).tokens == 3
    assert make_lookup(cli_generate.parse_args(["--lookup", "0"])) is None
    assert make_lookup(cli_generate.parse_args(["--temperature", "0.7"])) is None


def test_translate_dynamic_tree_takes_its_width(tiny_translator, capsys, monkeypatch):
    """--branch T sets the guesses tried after each expanded node of a dynamic tree; the output stays greedy's."""
    from blockwise import cli_translate
    from blockwise.eval.records import method_spec

    made = []
    real = cli_translate.make_tree
    monkeypatch.setattr(cli_translate, "make_tree", lambda args, n: made.append(real(args, n)) or made[-1])
    code, out, err = run_cli(["translate", "--model", str(tiny_translator), "--compare", "--tree", "dynamic", "-k", "3",
                              "--nodes", "8", "--branch", "2", "hello world"], "", capsys, monkeypatch)
    assert code == 0 and "identical: True" in out, out + err
    assert (made[0].nodes, made[0].depth, made[0].top) == (8, 2, 2)
    _, tree = method_spec("tree64x8", 10)  # the recipes' spelling of the same
    assert (tree.nodes, tree.depth, tree.top) == (64, 9, 8) and method_spec("tree16", 10)[1].top == 4
