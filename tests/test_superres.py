"""Super-resolution task: IDX reading, downsampling, pixel tokens, decoding invariants and the upsample command.

Synthetic data only: the Debian Fashion-MNIST package is not needed.
"""

import copy
import gzip

import numpy as np
import pytest
import torch
from PIL import Image

from blockwise import Acceptance, BlockwiseModel, blockwise, greedy
from blockwise.cli_upsample import main as upsample_main
from blockwise.tasks import superres as sr
from conftest import chaotic

HIGH, FACTOR = 8, 2  # tiny images: 4×4 -> 8×8, 64 target pixels


def write_idx(path, array: np.ndarray, compress: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


# -- data ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    path = tmp_path / "images-idx3-ubyte"
    write_idx(path, images, compress)
    out = sr.read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (5, 28, 28)
    assert np.array_equal(out, images)


def test_idx_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x89PNG not an idx file")
    with pytest.raises(ValueError, match="not an IDX file"):
        sr.read_idx(bad)
    short = tmp_path / "short"
    write_idx(short, np.zeros((2, 3, 3), dtype=np.uint8))
    short.write_bytes(short.read_bytes()[:-1])
    with pytest.raises(ValueError, match="bytes follow"):
        sr.read_idx(short)
    with pytest.raises(FileNotFoundError):
        sr.read_idx(tmp_path / "missing")


def test_fixed_splits(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    train, test = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8), rng.integers(0, 256, (2, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / sr.FILES["train"], train, compress=True)
    write_idx(tmp_path / sr.FILES["test"], test, compress=True)
    monkeypatch.setattr(sr, "N_TRAIN", 5)
    data = sr.load_fashion_mnist(tmp_path)
    assert np.array_equal(data.train, train[:5]) and np.array_equal(data.dev, train[5:])
    assert np.array_equal(data.test, test)
    assert set(data.checksums) == set(sr.FILES.values())
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        sr.load_fashion_mnist(tmp_path / "nowhere")


def test_area_downsampling():
    image = np.arange(16, dtype=np.uint8).reshape(4, 4)
    assert np.array_equal(sr.downsample(image, 2), [[2, 4], [10, 12]])  # means 2.5→2, 4.5→4 (round half to even)
    assert np.array_equal(sr.downsample(image, 4), [[8]])  # mean 7.5 → 8
    batch = np.full((3, 28, 28), 77, dtype=np.uint8)
    for factor, size in ((4, 7), (2, 14)):
        low = sr.downsample(batch, factor)
        assert low.shape == (3, size, size) and (low == 77).all()
    with pytest.raises(ValueError, match="cannot be downsampled"):
        sr.downsample(np.zeros((28, 28), np.uint8), 3)


def test_pixel_tokens_round_trip():
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    tokens = sr.pixels_to_tokens(pixels)
    assert tokens.min() == sr.OFFSET and tokens.max() == sr.OFFSET + 255 == sr.VOCAB - 1
    assert np.array_equal(np.diff(tokens.ravel()), np.ones(255))  # contiguous: the ε rule compares intensities
    assert np.array_equal(sr.tokens_to_pixels(tokens), pixels)
    assert sr.tokens_to_pixels([sr.PAD, sr.BOS]).tolist() == [0, 0]  # specials never become bright pixels
    with pytest.raises(ValueError):
        sr.pixels_to_tokens(pixels.astype(np.int32))
    highs = np.stack([pixels[:8, :8], pixels[8:, 8:]])
    tgt = sr.targets(highs)
    assert tgt.shape == (2, 65) and (tgt[:, 0] == sr.BOS).all()
    assert np.array_equal(sr.tokens_to_pixels(tgt[:, 1:].numpy()).reshape(2, 8, 8), highs)
    src, tgt = next(sr.training_batches(highs, FACTOR, 3, seed=0, layout="raster"))
    assert src.shape == (3, 16) and tgt.shape == (3, 65)
    src, tgt = next(sr.training_batches(highs, FACTOR, 3, seed=0))
    assert src.shape == (3, 64) and tgt.shape == (3, 65)


def test_corrupt_inputs_keeps_bos_and_range():
    tgt = sr.targets(np.full((2, 8, 8), 100, np.uint8))[:, :-1]
    assert torch.equal(sr.corrupt_inputs(tgt, 0.0), tgt)
    torch.manual_seed(0)
    noisy = sr.corrupt_inputs(tgt, 1.0)
    assert (noisy[:, 0] == sr.BOS).all()
    assert noisy[:, 1:].min() >= sr.OFFSET and noisy[:, 1:].max() < sr.VOCAB
    assert (noisy[:, 1:] != tgt[:, 1:]).float().mean() > 0.9


def test_ordinal_criterion_is_cross_entropy_against_smoothed_targets():
    torch.manual_seed(0)
    logits = torch.randn(5, sr.VOCAB, dtype=torch.float64)
    targets = torch.tensor([sr.OFFSET, sr.OFFSET + 3, sr.OFFSET + 128, sr.VOCAB - 1, -100])
    plain = sr.ordinal_criterion(0)(logits, targets, -100)
    assert torch.allclose(plain[:4], torch.nn.functional.cross_entropy(logits[:4], targets[:4], reduction="none"))
    assert plain[4] == 0
    sigma = 3.0
    got = sr.ordinal_criterion(sigma)(logits, targets, -100)
    logp = logits.log_softmax(-1)[:, sr.OFFSET:]
    for row, y in enumerate(targets[:4].tolist()):
        v = y - sr.OFFSET
        w = torch.tensor([np.exp(-(u - v) ** 2 / (2 * sigma ** 2)) for u in range(256)], dtype=torch.float64)
        w = w / sum(np.exp(-(j ** 2) / (2 * sigma ** 2)) for j in range(-255, 256))
        assert float(got[row]) == pytest.approx(float(-(w * logp[row]).sum()), rel=1e-5)
        # inside the range the weights sum to 1; at the edges the part of the kernel past 0 or 255 is lost
        assert abs(float(w.sum()) - 1) < 1e-6 if 10 < v < 245 else float(w.sum()) < (0.6 if v in (0, 255) else 1)
    assert got[4] == 0


def test_smoothed_training_moves_the_argmax_off_the_spike():
    """The reason for ordinal smoothing: a spike at white (255, p 0.2) and a broad bump around 200 (p 0.8 over 21
    levels). The cross-entropy optimum's argmax is the spike; the smoothed loss's optimum puts it in the bump."""
    data = torch.cat([torch.full((20,), 255), 190 + torch.arange(21).repeat(4)]) + sr.OFFSET
    for sigma, expect in ((0.0, lambda a: a == 255), (4.0, lambda a: 185 <= a <= 215)):
        logits = torch.zeros(1, sr.VOCAB, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.Adam([logits], lr=0.1)
        for _ in range(400):
            opt.zero_grad()
            sr.ordinal_criterion(sigma)(logits.expand(len(data), -1), data, -100).mean().backward()
            opt.step()
        best = int(logits[0, sr.OFFSET:].argmax())
        assert expect(best), (sigma, best)


def test_source_layouts():
    low = np.array([[[10, 20], [30, 40]]], dtype=np.uint8)
    assert sr.sources(low, 2, "raster") == [[12, 22, 32, 42]]
    aligned = np.array(sr.sources(low, 2, "aligned")[0]).reshape(4, 4) - sr.OFFSET
    assert np.array_equal(aligned, [[10, 10, 20, 20], [10, 10, 20, 20], [30, 30, 40, 40], [30, 30, 40, 40]])
    # target pixel t and encoder position t cover the same place
    assert np.array_equal(sr.downsample(aligned.astype(np.uint8), 2), low[0])
    with pytest.raises(ValueError, match="layout"):
        sr.sources(low, 2, "zigzag")


# -- decoding ----------------------------------------------------------------------------------------------------------
def tiny_model(k: int = 4, seed: int = 0) -> BlockwiseModel:
    torch.manual_seed(seed)
    cfg = sr.model_config(high=HIGH, d_model=32, n_heads=4, d_ff=64, n_layers=2, n_encoder_layers=2)
    return chaotic(BlockwiseModel(cfg, sr.heads_config(k, d_hidden=32)), seed, std=0.3).double().eval()


def lows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, HIGH // FACTOR, HIGH // FACTOR), dtype=np.uint8)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.mark.parametrize("layout", sr.LAYOUTS)
@pytest.mark.parametrize("batch", [1, 3])
def test_blockwise_exact_equals_greedy(model, batch, layout):
    x = lows(batch)
    ref = sr.upsample(model, x, FACTOR, "greedy", batch_size=batch, layout=layout)
    assert ref.images.shape == (batch, HIGH, HIGH)
    assert ref.stats.tokens == batch * HIGH * HIGH
    assert len(np.unique(ref.images)) > 3  # the random model draws varied pixels, so the equality has teeth
    for k in (2, 3, 4):
        out = sr.upsample(model, x, FACTOR, "blockwise", k=k, batch_size=batch, layout=layout)
        assert np.array_equal(out.images, ref.images), f"k={k}"
        zero = sr.upsample(model, x, FACTOR, "blockwise", k=k, accept=Acceptance("distance", eps=0), batch_size=batch,
                           layout=layout)
        assert np.array_equal(zero.images, ref.images), f"ε=0, k={k}"
        assert zero.stats.block_sizes == out.stats.block_sizes


def test_token_level_exact_equals_greedy(model):
    """The same invariant on raw tokens, straight through the library's decoders."""
    src = sr.sources(lows(2, seed=3), FACTOR)
    ref = greedy(model, [[sr.BOS]] * 2, HIGH * HIGH, sources=src)
    out = blockwise(model, [[sr.BOS]] * 2, HIGH * HIGH, k=4, sources=src)
    assert out.tokens == ref.tokens


def test_min_block_and_eps_accept_more(model):
    x = lows(2, seed=1)
    k = 4
    forced = sr.upsample(model, x, FACTOR, "blockwise", k=k, accept=Acceptance("distance", eps=2, min_block=k))
    assert forced.stats.mean_accepted == k  # ℓ = k: every block accepted whole (64 is a multiple of 4)
    exact = sr.upsample(model, x, FACTOR, "blockwise", k=k)
    for k in (4, 3):  # ε = 255: every proposal is accepted; 64 pixels take ceil(64 / k) blocks, the last one 64 mod k
        loose = sr.upsample(model, x, FACTOR, "blockwise", k=k, accept=Acceptance("distance", eps=255))
        blocks = -(-HIGH * HIGH // k)
        last = HIGH * HIGH - k * (blocks - 1)
        called = blocks - (last == 1)  # a last block of one pixel is p1's own, taken without a call
        assert loose.stats.iterations == called and loose.stats.calls == called + 1
        sizes = {j: n for j, n in enumerate(loose.stats.block_sizes) if n}
        assert sizes == ({k: 2 * blocks} if last == k else {k: 2 * (blocks - 1), last: 2}), sizes
        assert loose.stats.mean_accepted == HIGH * HIGH / blocks  # == k exactly when k divides 64
        assert loose.images.shape == exact.images.shape and loose.images.dtype == np.uint8
    assert exact.stats.iterations > 16  # exact acceptance rejects some proposals: ε = 255 changed something


# -- quality helpers -----------------------------------------------------------------------------------------------
def test_metrics_bicubic_and_grid(tmp_path):
    pytest.importorskip("skimage")
    rng = np.random.default_rng(2)
    highs = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    assert sr.psnr(highs, highs) == 100.0 and sr.ssim(highs, highs) == pytest.approx(1.0)
    noisy = np.clip(highs.astype(int) + rng.integers(-5, 6, highs.shape), 0, 255).astype(np.uint8)
    assert 30 < sr.psnr(noisy, highs) < 100
    low = sr.downsample(highs, 4)
    cubic = sr.bicubic(low, 4)
    assert cubic.shape == highs.shape and cubic.dtype == np.uint8
    flat = np.full((1, 7, 7), 90, np.uint8)
    assert (sr.bicubic(flat, 4) == 90).all()
    sr.write_grid(tmp_path / "grid.png", {"low": low, "bicubic": cubic, "original": highs}, scale=2)
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size[0] == 3 * (56 + 4) + 4


# -- the command -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    sr.save_sr(copy.deepcopy(model).float(), path, FACTOR, high=HIGH)
    return path


def test_cli_upsamples_a_png(tmp_path, checkpoint, capsys):
    src = tmp_path / "in.png"
    Image.fromarray(lows(1)[0]).save(src)
    out = tmp_path / "out.png"
    rc = upsample_main([str(src), str(out), "--checkpoint", str(checkpoint), "-k", "3", "--eps", "2",
                        "--min-block", "2", "--scale", "2", "--compare"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "iterations" in text and "speedup" in text
    with Image.open(out) as image:
        assert image.size == (2 * HIGH, 2 * HIGH) and image.mode == "L"
    # a high-resolution RGB input is reduced to the model's low resolution first, with a note
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((HIGH, HIGH, 3), np.uint8)).save(big)
    assert upsample_main([str(big), str(out), "--checkpoint", str(checkpoint), "--mode", "greedy"]) == 0
    assert "reduced 8×8 to 4×4" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["missing", "not_image", "folder", "no_checkpoint", "too_many_heads", "not_png"])
def test_cli_user_mistakes(tmp_path, checkpoint, capsys, case):
    good = tmp_path / "in.png"
    Image.fromarray(lows(1)[0]).save(good)
    junk = tmp_path / "junk.png"
    junk.write_text("not a picture")
    args = {"missing": [str(tmp_path / "nope.png"), str(tmp_path / "o.png")],
            "not_image": [str(junk), str(tmp_path / "o.png")],
            "folder": [str(tmp_path), str(tmp_path / "o.png")],
            "no_checkpoint": [str(good), str(tmp_path / "o.png"), "--checkpoint", str(tmp_path / "none.safetensors")],
            "too_many_heads": [str(good), str(tmp_path / "o.png"), "-k", "9"],
            "not_png": [str(good), str(tmp_path / "o.jpg")]}[case]
    if "--checkpoint" not in args:
        args += ["--checkpoint", str(checkpoint)]
    assert upsample_main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("blockwise upsample: error: ") and "Traceback" not in err
    assert not (tmp_path / "o.png").exists()
