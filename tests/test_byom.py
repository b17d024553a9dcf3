"""Bring your own model: other architectures through the Hugging Face adapter (exact == greedy == ``generate``), the
``blockwise.lm`` API and ``train-heads`` / ``generate --model`` / ``export --to vllm`` end to end on a tiny model
folder made here (a byte-level BPE tokenizer trained on a licence text, random weights)."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from blockwise import HeadsConfig, blockwise, greedy  # noqa: E402
from blockwise.model.heads import make_heads  # noqa: E402
from blockwise.tasks.hf import HFCausalLM, fingerprint  # noqa: E402

V, EOS, PAD = 64, 1, 0
PROMPTS = [[5, 9, 3, 17], [2, 30], [11, 4, 6, 20, 8, 13, 7]]


def tiny(arch: str, seed: int = 0, window: int | None = None):
    torch.manual_seed(seed)
    common = dict(vocab_size=V, bos_token_id=2, eos_token_id=EOS, pad_token_id=PAD, tie_word_embeddings=True)
    if arch == "gpt2":
        cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128, initializer_range=0.3, **common)
        model = transformers.GPT2LMHeadModel(cfg)
    elif arch == "qwen2":  # biases in q/k/v: not the native Llama, so the adapter runs it
        cfg = transformers.Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                       num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.3,
                                       **common)
        model = transformers.Qwen2ForCausalLM(cfg)
    elif arch == "gemma3":  # sliding-window layers (window tokens) interleaved with a full one, as Gemma-3-270M
        cfg = transformers.Gemma3TextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                            num_attention_heads=4, num_key_value_heads=1, head_dim=8,
                                            max_position_embeddings=128, sliding_window=window or 6,
                                            layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                                            initializer_range=0.3, attn_implementation="eager",
                                            **{**common, "tie_word_embeddings": False})  # tied: one token repeated
        model = transformers.Gemma3ForCausalLM(cfg)
    else:
        raise ValueError(arch)
    return model.float().eval()


def random_heads(d: int, kind: str, seed: int, k: int = 4):
    heads = make_heads(d, HeadsConfig(num_heads=k, d_hidden=16, kind=kind))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in heads.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return heads.eval()


def reference(model, prompts, max_new):
    from blockwise.eval.reference import hf_generate

    return hf_generate(model, prompts, max_new, EOS, pad_id=PAD)


@pytest.mark.parametrize("arch", ["gpt2", "qwen2", "gemma3"])
@pytest.mark.parametrize("kind", ["residual", "chain"])
def test_other_architectures_decode_exactly_through_the_adapter(arch, kind):
    model = tiny(arch)
    lm = HFCausalLM(model, random_heads(32, kind, seed=3), proposal_vocab=torch.arange(0, V, 3))
    prompts = PROMPTS if arch != "gemma3" else PROMPTS[:1]  # gemma3 batches: test below
    ref = reference(model, prompts, 20)
    assert any(len(set(r)) > 3 for r in ref)  # a model that says something, not one token over and over
    assert greedy(lm, prompts, 20, eos_id=EOS).tokens == ref
    for k in (2, 4):
        assert blockwise(lm, prompts, 20, k=k, eos_id=EOS).tokens == ref, f"k={k}"


def test_sliding_window_models_roll_back_past_the_window():
    """Gemma-3's sliding layers drop states past the window; without keeping them, rollback (``crop``) fails."""
    model = tiny("gemma3", window=6)
    lm = HFCausalLM(model, random_heads(32, "residual", seed=5))
    ref = reference(model, PROMPTS[1:2], 30)
    assert len(ref[0]) == 30  # 2 + 30 tokens, five times the window
    for k in (2, 3, 4):
        assert blockwise(lm, PROMPTS[1:2], 30, k=k, eos_id=EOS).tokens == ref
    # rows of a batch that rolled back hold holes, which the window (counted in slots) would see wrongly: refused
    # unless the output is still exact
    try:
        out = blockwise(lm, PROMPTS, 30, k=4, eos_id=EOS)
    except ValueError as error:
        assert "sliding-window" in str(error)
    else:
        assert out.tokens == reference(model, PROMPTS, 30)


def test_fingerprint_tells_models_apart_but_not_dtypes():
    a, b = tiny("qwen2", seed=0), tiny("qwen2", seed=1)
    assert fingerprint(a) != fingerprint(b)
    assert fingerprint(a) == fingerprint(tiny("qwen2", seed=0).to(torch.bfloat16))


# -- a model folder of one's own: train-heads, generate --model, export --to vllm --------------------------------------
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny Llama with a real (byte-level BPE) tokenizer and a chat template, saved as a Hugging Face folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = open("/usr/share/common-licenses/GPL-3").read().splitlines()
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=320, special_tokens=["<unk>", "<s>", "</s>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                                     unk_token="<unk>")
    tokenizer.chat_template = ("{% for m in messages %}<s>{{ m['content'] }}</s>{% endfor %}"
                               "{% if add_generation_prompt %}<s>{% endif %}")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=256, eos_token_id=tokenizer.eos_token_id,
                                   bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True,
                                   initializer_range=0.5)
    path = tmp_path_factory.mktemp("byom") / "tiny-llama"
    transformers.LlamaForCausalLM(cfg).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


PROMPT_LINES = [f"Tell me about the {w} of {x}." for w in ("history", "use", "cost", "rules") for x in
                ("software", "licences", "copying", "source code", "patents")]


def test_train_heads_generate_and_export_from_the_command_line(folder, tmp_path, capsys):
    from blockwise.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPT_LINES + PROMPT_LINES[:3]) + "\n")  # duplicates are dropped
    heads = tmp_path / "heads"
    assert main(["train-heads", str(folder), "--out", str(heads), "--kind", "residual", "-k", "3", "--prompts",
                 str(prompts), "--steps", "30", "--max-new-tokens", "24", "--batch", "8", "--threads", "1"]) == 0
    metrics = json.loads((heads / "metrics.json").read_text())
    assert metrics["data"]["prompts"] == len(PROMPT_LINES) and metrics["base"]["architecture"] == "LlamaForCausalLM"
    assert set(metrics["expected_accepted"]) == {"k1", "k2", "k3"} and "E[tokens/call]" in capsys.readouterr().out

    assert main(["generate", "Tell me about the use of patents.", "--model", str(folder), "--heads", str(heads),
                 "-k", "3", "--compare", "--max-new-tokens", "24", "--threads", "1"]) == 0
    assert "outputs identical" in capsys.readouterr().err

    out = tmp_path / "served"
    assert main(["export", str(heads), "--to", "vllm", "--out", str(out)]) == 0
    config = json.loads((out / "medusa" / "config.json").read_text())
    assert config["model_type"] == "medusa" and config["num_heads"] == 2 and config["original_lm_head"]
    assert str(folder) in (out / "serve.py").read_text()  # a Hugging Face folder is served as it is


def test_exported_medusa_heads_compute_what_ours_do(folder, tmp_path):
    """vLLM's Medusa forward (per head x + SiLU(W x + b), then the shared projection), from the exported tensors alone,
    gives our residual heads' logits."""
    from safetensors.torch import load_file

    from blockwise.export.vllm import export_vllm
    from blockwise.tasks.hf import load_causal_lm

    tokenizer, model = load_causal_lm(folder)
    heads = random_heads(64, "residual", seed=11, k=4)
    export_vllm(heads, model, tokenizer, tmp_path / "x", "tiny", base_folder=folder)
    w = load_file(str(tmp_path / "x" / "medusa" / "model.safetensors"))
    h = torch.randn(5, 64)
    for j in range(3):
        x = h + torch.nn.functional.silu(h @ w[f"blocks.{j}.layers.0.weight"].T + w[f"blocks.{j}.layers.0.bias"])
        theirs = x @ w["lm_heads.0.weight"].T
        ours = heads.layer(h, 3)[:, j] @ model.get_output_embeddings().weight.T
        assert torch.allclose(theirs, ours, atol=1e-5)


def test_the_api_and_heads_made_for_another_model(folder, tmp_path):
    import blockwise.lm

    blockwise.lm.train_heads(str(folder), tmp_path / "h", kind="chain", k=3, prompts=PROMPT_LINES, data_minutes=5,
                             steps=20, d_hidden=32, batch=64, max_new_tokens=16, batch_prompts=8)
    lm = blockwise.lm.load(str(folder), heads=tmp_path / "h")
    text = lm.generate("Tell me about the cost of software.", 24, k=3)
    assert isinstance(text, str) and lm.stats.calls == lm.stats.iterations + 1
    assert text == blockwise.lm.load(str(folder)).generate("Tell me about the cost of software.", 24, k=1)
    rows = lm.generate(["Tell me about copying.", "What are patents?"], 12, k="auto")
    assert len(rows) == 2 and all(isinstance(r, str) for r in rows)
    from blockwise.decoding import DynamicTree

    for k in (None, "auto"):  # a fixed tree, and its node budget chosen per step
        assert lm.generate("Tell me about the cost of software.", 24, k=k, tree=DynamicTree(6, 2)) == text

    other = transformers.LlamaForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        other.model.norm.weight.mul_(1.5)  # another model of the same shape
    with pytest.raises(blockwise.lm.HeadsMismatch, match="blockwise train-heads"):
        blockwise.lm.LM(other, lm.tokenizer, heads=tmp_path / "h")
