"""The model and its heads: identity p1, head paths agree, distinct parameters, checkpoints."""

import pytest
import torch

from blockwise import BlockwiseModel, HeadsConfig, greedy, preset
from conftest import EOS, V, chaotic, random_model


@pytest.mark.parametrize("kind", ["paper", "residual"])
@pytest.mark.parametrize("p1", ["identity", "learned"])
def test_single_head_path_equals_all_heads_path(kind, p1):
    model = random_model("tiny", k=5, seed=1, head_kind=kind, p1=p1)
    h = torch.randn(3, 7, model.cfg.d_model, dtype=torch.float64)
    all_heads = model.heads(h)  # (3, 7, 5, D)
    for i in range(1, 6):  # one head alone (the random single-head loss)
        torch.testing.assert_close(model.heads.states(h, (i,))[..., 0, :], all_heads[..., i - 1, :])
    torch.testing.assert_close(model.heads.states(h, (2, 4)), all_heads[..., [1, 3], :])
    torch.testing.assert_close(model.heads(h, 3), all_heads[..., :3, :])
    torch.testing.assert_close(model.heads.p1(h), all_heads[..., 0, :])
    y1 = model.scores(h).argmax(-1)
    for k in range(2, 6):  # decoding: p2..pk proposed at once, what training computed
        torch.testing.assert_close(model.heads.propose(h, y1, k), model.base.project(all_heads[..., 1:k, :]))
    assert not torch.allclose(all_heads[..., 1, :], all_heads[..., 2, :])  # the heads differ: the slices mean something
    with pytest.raises(ValueError, match="asked for 6 heads"):
        model.heads(h, 6)


def test_identity_p1_is_the_base_model_and_heads_start_as_copies():
    torch.manual_seed(0)
    model = BlockwiseModel(preset("tiny", vocab_size=V), HeadsConfig(num_heads=4, d_hidden=16)).double()
    h = torch.randn(2, 5, model.cfg.d_model, dtype=torch.float64)
    torch.testing.assert_close(model.scores(h), model.base.project(h))
    heads = model.heads(h)  # zero-initialised output layer: every head starts as a copy of h
    for i in range(4):
        torch.testing.assert_close(heads[..., i, :], h)


def test_every_head_has_its_own_parameters():
    model = random_model("tiny", k=4, seed=2, head_kind="residual")
    ptrs = [b.weight.data_ptr() for b in model.heads.blocks]
    assert len(set(ptrs)) == len(ptrs)
    with torch.no_grad():
        model.heads.blocks[0].weight.add_(1.0)  # touching one head moves only that head
    h = torch.randn(4, model.cfg.d_model, dtype=torch.float64)
    before = random_model("tiny", k=4, seed=2, head_kind="residual").heads(h)
    after = model.heads(h)
    assert not torch.allclose(before[:, 1], after[:, 1])
    torch.testing.assert_close(before[:, [0, 2, 3]], after[:, [0, 2, 3]])


def test_heads_added_to_a_trained_base_keep_its_greedy_output():
    base = random_model("tiny", k=1, seed=3)
    with_heads = base.with_heads(HeadsConfig(num_heads=4, d_hidden=16)).double()
    chaotic(with_heads.heads, 4)
    assert with_heads.base is base.base
    prefixes = [[2, 3], [4]]
    assert greedy(with_heads, prefixes, 15, eos_id=EOS).tokens == greedy(base, prefixes, 15, eos_id=EOS).tokens


def test_checkpoint_round_trip(tmp_path):
    model = random_model("tiny-encdec", k=3, seed=5).float()
    path = tmp_path / "m.safetensors"
    model.save(path, dtype=torch.float32)
    loaded = BlockwiseModel.load(path)
    assert loaded.cfg == model.cfg and loaded.heads_cfg == model.heads_cfg
    for (n, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(a, b, msg=n)


def test_checkpoint_that_does_not_match_its_config(tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    model = random_model("tiny", k=3, seed=5).float()
    path = tmp_path / "m.safetensors"
    model.save(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    tensors["base.embed.weight"] = tensors["base.embed.weight"][:10]
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match=r"(?s)does not match its config.*base.embed.weight: checkpoint \(10, 32\)"):
        BlockwiseModel.load(tmp_path / "bad.safetensors")
    save_file(tensors, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not a blockwise checkpoint"):
        BlockwiseModel.load(tmp_path / "plain.safetensors")
    with pytest.raises(FileNotFoundError):
        BlockwiseModel.load(tmp_path / "missing.safetensors")


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="not divisible"):
        preset("tiny", d_model=30)
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
    with pytest.raises(ValueError, match="num_heads must be >= 1"):
        HeadsConfig(num_heads=0)


def test_heads_only_file_joins_back_into_the_same_model(tmp_path):
    from blockwise.model.blockwise_model import join_heads, save_heads_only

    torch.manual_seed(0)
    base = BlockwiseModel(preset("tiny", vocab_size=V), HeadsConfig(num_heads=1))
    model = base.with_heads(HeadsConfig(num_heads=3, d_hidden=8))
    with torch.no_grad():
        for p in model.heads.parameters():
            p.normal_()
    base.save(tmp_path / "base.safetensors")
    model.save(tmp_path / "full.safetensors")
    save_heads_only(tmp_path / "full.safetensors", tmp_path / "heads.safetensors")
    join_heads(tmp_path / "base.safetensors", tmp_path / "heads.safetensors", tmp_path / "joined.safetensors")
    full, joined = (BlockwiseModel.load(tmp_path / f) for f in ("full.safetensors", "joined.safetensors"))
    assert joined.heads_cfg == full.heads_cfg
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), joined.state_dict().values()))


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN (the packed product)")
def test_a_large_float32_projection_runs_packed_with_each_rows_bits_its_own():
    """Decoding projects through a oneDNN-packed copy of a large embedding (``Transformer.packed_head``): the logits
    of a row have the same bits alone or among up to 8 rows (greedy's one token, a verified block), agree with the
    plain product to float32 rounding, follow an optimizer's in-place change, and training never sees the copy."""
    from blockwise.model.transformer import Transformer

    torch.manual_seed(0)
    base = Transformer(preset("tiny", vocab_size=4096, d_model=256))  # 2^20 weights: the smallest packed size
    h = torch.randn(8, 1, 256)
    with torch.no_grad():
        logits = base.project(h)
        assert base.packed_head() is not None
        for rows in range(1, 9):
            assert torch.equal(base.project(h[:rows]), logits[:rows]), rows
        torch.testing.assert_close(logits, h @ base.embed.weight.t(), rtol=1e-5, atol=1e-5)
        base.embed.weight.mul_(2)  # an optimizer step: in place, the same storage
        torch.testing.assert_close(base.project(h), 2 * logits, rtol=1e-5, atol=1e-5)
    assert base.packed_head() is None  # autograd on: training multiplies by the parameter itself
    assert base.project(h).requires_grad
    small = Transformer(preset("tiny", vocab_size=V))
    with torch.no_grad():
        assert small.packed_head() is None  # below ~1M weights MKL's product is the faster one
