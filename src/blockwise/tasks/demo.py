"""The end-to-end demo: train a small character-level model with proposal heads on a real text for about a minute,
then decode the same prompt greedily and blockwise and compare outputs, accepted block sizes and wall-clock time."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import HeadsConfig, preset
from ..decoding import blockwise, greedy
from ..eval.timing import median_ms
from ..model import BlockwiseModel
from ..training import TrainConfig, proposal_loss, train

PAD, EOS, BOS = 0, 1, 2


def default_text() -> tuple[str, str]:
    """A real English text found on any Debian or Python installation: the GPL-3, else Python's own licence."""
    for path in (Path("/usr/share/common-licenses/GPL-3"),
                 Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "LICENSE.txt"):
        if path.exists():
            return path.read_text(encoding="utf-8", errors="replace"), str(path)
    raise FileNotFoundError("no default text found; pass --text FILE")


@dataclass
class CharVocab:
    chars: str

    @classmethod
    def of(cls, text: str) -> "CharVocab":
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars) + 3

    def encode(self, text: str) -> list[int]:
        index = {c: i + 3 for i, c in enumerate(self.chars)}
        return [index[c] for c in text if c in index]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i - 3] for i in ids if i >= 3)


def train_char_model(text: str, k: int = 6, seconds: float = 60.0, seed: int = 0, progress: bool = True):
    """Fine-tune base and heads together (the paper's "fine tuning" regime, mean of the k losses)."""
    vocab = CharVocab.of(text)
    data = torch.tensor(vocab.encode(text))
    cfg = preset("small", vocab_size=len(vocab))
    torch.manual_seed(seed)
    model = BlockwiseModel(cfg, HeadsConfig(num_heads=k, d_hidden=256))
    g = torch.Generator().manual_seed(seed)
    width, batch = 192, 8  # windows as long as prompt + output: positions past the window are never trained

    def batches():
        while True:
            start = torch.randint(0, len(data) - width - 1, (batch,), generator=g)
            yield torch.stack([data[s:s + width + 1] for s in start.tolist()])

    def loss_fn(seq):
        hidden = model(seq[:, :-1])
        return proposal_loss(model, hidden, seq[:, 1:], k, mode="mean", pad_id=-100)

    stats = train(model, loss_fn, batches(), TrainConfig(steps=100_000, lr=3e-3, warmup=50, bf16=True),
                  progress=progress, time_limit=seconds)
    return model.eval(), vocab, stats


def run(text: str | None = None, prompt: str | None = None, k: int = 6, seconds: float = 60.0,
        max_new_tokens: int = 150, out=sys.stdout) -> dict:
    source = "given text"
    if text is None:
        text, source = default_text()
    text = " ".join(text.split())  # one line of prose: whitespace runs carry no information here
    print(f"Training a character-level Transformer with {k} proposal heads on {source} "
          f"({len(text):,} characters) for {seconds:.0f} s ...", file=out)
    model, vocab, stats = train_char_model(text, k=k, seconds=seconds)
    print(f"trained {stats.get('step')} steps, loss {stats.get('loss', float('nan')):.3f}", file=out)
    prompt = prompt or text[: 40]
    prefix = [BOS] + vocab.encode(prompt)
    threads = torch.get_num_threads()
    # A model this small is overhead-bound: one thread avoids waking a second OpenMP thread for every small op.
    torch.set_num_threads(1)
    plain = greedy(model, [prefix], max_new_tokens)
    fast = blockwise(model, [prefix], max_new_tokens, k=k)
    greedy_ms = median_ms(lambda: greedy(model, [prefix], max_new_tokens), repeats=3, warmup=1)
    block_ms = median_ms(lambda: blockwise(model, [prefix], max_new_tokens, k=k), repeats=3, warmup=1)
    torch.set_num_threads(threads)
    identical = plain.tokens == fast.tokens
    result = {"identical": identical, "mean_accepted": fast.stats.mean_accepted, "greedy_ms": greedy_ms,
              "blockwise_ms": block_ms, "speedup": greedy_ms / block_ms, "calls_greedy": plain.stats.calls,
              "calls_blockwise": fast.stats.calls, "block_sizes": fast.stats.block_sizes}
    print(f"\nprompt: {prompt!r}", file=out)
    print(f"\ngreedy    ({plain.stats.calls} model calls, {greedy_ms:.0f} ms):\n  {vocab.decode(plain.tokens[0])}", file=out)
    print(f"\nblockwise ({fast.stats.calls} model calls, {block_ms:.0f} ms, k={k}):\n  {vocab.decode(fast.tokens[0])}",
          file=out)
    print(f"\nidentical to greedy: {'yes' if identical else 'NO'}   mean accepted block size: "
          f"{fast.stats.mean_accepted:.2f}   speedup: {greedy_ms / block_ms:.2f}x   "
          f"accepted block sizes k̂=1..{k}: {fast.stats.block_sizes[1:]}", file=out)
    return result
