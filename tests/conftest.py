import os
import tempfile

import pytest
import torch

from blockwise import BlockwiseModel, HeadsConfig, preset
from blockwise.training import TrainConfig, proposal_loss, train

torch.set_num_threads(1)
# k="auto" caches measured costs: never in the user's cache folder, and never timings taken under a test run
os.environ["BLOCKWISE_CACHE"] = tempfile.mkdtemp(prefix="blockwise-test-cache-")



@pytest.fixture(autouse=True)
def one_thread():
    """Every test starts and ends on one thread: the commands set their own (--threads, default 2), and a test after
    them must not run on what they left (bit-level results can differ with the thread count)."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


EOS = 1
V = 24  # tiny vocabulary: 0 pad, 1 eos, 2 bos, 3.. content


def chaotic(model: BlockwiseModel, seed: int, std: float = 0.4) -> BlockwiseModel:
    """Random weights large enough that greedy output wanders instead of repeating one token."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return model


def random_model(kind: str = "tiny", k: int = 4, seed: int = 0, head_kind: str = "paper",
                 p1: str = "identity") -> BlockwiseModel:
    torch.manual_seed(seed)
    cfg = preset(kind, vocab_size=V)
    model = BlockwiseModel(cfg, HeadsConfig(num_heads=k, d_hidden=32, kind=head_kind, p1=p1)).double().eval()
    return chaotic(model, seed)


def pattern_batch(n: int, length: int, g: torch.Generator, encdec: bool):
    """A learnable toy language: counting sequences with a random start and stride (the source names them)."""
    start = torch.randint(3, V, (n, 1), generator=g)
    stride = torch.randint(1, 3, (n, 1), generator=g)
    seq = 3 + (start - 3 + stride * torch.arange(length)) % (V - 3)
    src = torch.cat([start, stride + 3], dim=1) if encdec else None
    return seq, src


def _train_tiny(kind: str, k: int, seed: int) -> BlockwiseModel:
    torch.manual_seed(seed)
    cfg = preset(kind, vocab_size=V)
    model = BlockwiseModel(cfg, HeadsConfig(num_heads=k, d_hidden=32, p1="learned")).double()
    g = torch.Generator().manual_seed(seed)
    encdec = cfg.encoder_decoder

    def batches():
        while True:
            yield pattern_batch(16, 34, g, encdec)

    def loss_fn(batch):
        seq, src = batch
        hidden = model(seq[:, :-1], src)
        return proposal_loss(model, hidden, seq[:, 1:], k, mode="mean", pad_id=-100)

    train(model, loss_fn, batches(), TrainConfig(steps=200, lr=3e-3, warmup=10), progress=False)
    return model.eval()


@pytest.fixture(scope="session")
def trained_decoder():
    return _train_tiny("tiny", 4, 0)


@pytest.fixture(scope="session")
def trained_encdec():
    return _train_tiny("tiny-encdec", 4, 1)
