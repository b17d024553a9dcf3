"""English → German translation: data, batching, the baseline and the head-training regimes, decoding and BLEU.

Data come from ``python -m blockwise.data.mt_corpus`` (``recipes/mt/00_setup.sh``): ``{train,dev,test}.{en,de}`` and a
joint sentencepiece model ``spm.model`` with pad 0, unk 1, bos 2, eos 3. Sources are ``ids + [eos]``; targets are
``[bos] + ids + [eos]``; decoding starts from the prefix ``[bos]``.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from ..batching import pad
from ..decoding import EXACT, Acceptance, Sampling, beam_search, blockwise, greedy, sample
from ..decoding.common import DecodeStats
from ..decoding.policy import Policy, TreePolicy, auto_policy, expected_from_block_sizes
from ..decoding.tree import TreeShape
from ..model import BlockwiseModel

PAD, UNK, BOS, EOS = 0, 1, 2, 3
MAX_TOKENS = 64  # longer training pairs are skipped; decoding allows 2x the source + 10


@dataclass
class Corpus:
    data_dir: Path
    spm_path: Path | None = None

    def __post_init__(self) -> None:
        import sentencepiece as spm

        self.data_dir = Path(self.data_dir)
        model = Path(self.spm_path) if self.spm_path else self.data_dir / "spm.model"
        if not model.exists():
            raise FileNotFoundError(f"no translation data in {self.data_dir}: run recipes/mt/00_setup.sh first")
        self.spm = spm.SentencePieceProcessor(model_file=str(model))

    @classmethod
    def from_spm(cls, spm_path: str | Path) -> "Corpus":
        """Only the vocabulary (for translating new text): no data splits."""
        return cls(Path(spm_path).parent, Path(spm_path))

    @property
    def vocab_size(self) -> int:
        return self.spm.get_piece_size()

    def lines(self, split: str, lang: str) -> list[str]:
        return (self.data_dir / f"{split}.{lang}").read_text(encoding="utf-8").split("\n")[:-1]

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return self.spm.encode(list(texts))

    def decode(self, ids: Sequence[int]) -> str:
        return self.spm.decode([i for i in ids if i > EOS])

    def kinds(self, split: str) -> list[str]:
        """Source and kind of every line, e.g. ``ding:phrase``, ``debian:body`` (from ``{split}.meta.tsv``)."""
        path = self.data_dir / f"{split}.meta.tsv"
        if not path.exists():
            return ["unknown"] * len(self.lines(split, "en"))
        rows = path.read_text(encoding="utf-8").split("\n")[:-1]
        return [f"{r.split(chr(9))[0]}:{r.split(chr(9))[-1]}" for r in rows]

    def pairs(self, split: str, targets: Sequence[str] | None = None,
              upsample_sentences: int = 1) -> list[tuple[list[int], list[int]]]:
        """Encoded (source, target) pairs of a split; ``targets`` replaces the German side (distillation).

        ``upsample_sentences`` repeats every pair that is not a dictionary phrase that many times: three quarters of
        the training pairs are two-word dictionary entries, while the test split is sentences and descriptions.
        """
        src = self.encode(self.lines(split, "en"))
        tgt = self.encode(targets if targets is not None else self.lines(split, "de"))
        kinds = self.kinds(split)
        out = []
        for s, t, kind in zip(src, tgt, kinds):
            if 0 < len(s) < MAX_TOKENS and 0 < len(t) < MAX_TOKENS:
                out += [(s + [EOS], [BOS] + t + [EOS])] * (1 if kind == "ding:phrase" else upsample_sentences)
        return out


def token_batches(pairs: list[tuple[list[int], list[int]]], max_tokens: int, seed: int) -> Iterator[tuple]:
    """Endless batches of similar-length pairs, at most ``max_tokens`` padded target tokens each, reshuffled per epoch."""
    if not pairs:
        raise ValueError("no training pairs to batch (all empty or longer than MAX_TOKENS?)")
    rng = random.Random(seed)
    epoch = 0
    while True:
        order = sorted(range(len(pairs)), key=lambda i: (len(pairs[i][1]), rng.random()))
        batches, current, width = [], [], 0
        for i in order:
            width = max(width, len(pairs[i][1]))
            if current and width * (len(current) + 1) > max_tokens:
                batches.append(current)
                current, width = [], len(pairs[i][1])
            current.append(i)
        if current:
            batches.append(current)
        rng.shuffle(batches)
        for b in batches:
            yield pad([pairs[i][0] for i in b], PAD), pad([pairs[i][1] for i in b], PAD)
        epoch += 1


def label_smoothed_loss(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.1) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=PAD, label_smoothing=smoothing)


@torch.no_grad()
def dev_loss(model: BlockwiseModel, pairs: list, batch_size: int = 64) -> float:
    total, count = 0.0, 0
    device = next(model.parameters()).device  # a model training on a GPU is evaluated there
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        src, tgt = pad([p[0] for p in chunk], PAD).to(device), pad([p[1] for p in chunk], PAD).to(device)
        logits = model.base.project(model(tgt[:, :-1], src))
        n = int((tgt[:, 1:] != PAD).sum())
        total += float(F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=PAD)) * n
        count += n
    return total / count


@dataclass
class Translation:
    hypotheses: list[str]
    token_ids: list[list[int]]
    stats: DecodeStats
    seconds: float
    policy: Policy | TreePolicy | None = None  # the k = "auto" policy it decoded with (pass it on: it has learned)


@torch.no_grad()
def translate(model: BlockwiseModel, corpus: Corpus, sentences: Sequence[str], method: str = "greedy",
              k: int | str | None = None, accept: Acceptance = EXACT, batch_size: int = 32, beam_size: int = 4,
              progress: bool = False, tree: TreeShape | None = None, sampling: Sampling | None = None,
              policy: Policy | TreePolicy | None = None) -> Translation:
    """Translate English sentences in batches of similar length. method: greedy | blockwise | beam. ``k``: blockwise's
    block size (default: every head; with a ``tree``, the tree's depth), or "auto": the block size (with a dynamic
    ``tree``: its node budget) chosen per step (decoding/policy.py); greedy and beam ignore it. ``seconds`` leaves
    out the one-time cost measurement. ``sampling``: sample instead of greedy (plain sampling for "greedy",
    speculative sampling for "blockwise"); sentence i draws from the stream of seed (seed, i), or seed[i] when
    ``sampling.seed`` gives one per sentence, whatever batch it lands in (the length limit is still the batch's:
    twice its longest source + 10, so a sentence's output can depend on its batch through that cut). ``policy``: the
    k = "auto" policy of an earlier call (``Translation.policy``), to go on from what it learned."""
    from tqdm.auto import tqdm

    sources = [s + [EOS] for s in corpus.encode(sentences)]
    sources = [s if len(s) <= model.cfg.max_positions // 2 else s[: model.cfg.max_positions // 2 - 1] + [EOS]
               for s in sources]
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: list[list[int]] = [[] for _ in sources]
    stats = DecodeStats()
    policy = policy if method == "blockwise" and k == "auto" else None
    start = time.perf_counter()
    measured = policy.costs.measure_seconds if policy is not None else 0.0
    for b in tqdm(range(0, len(order), batch_size), disable=not progress, desc=method):
        rows = order[b:b + batch_size]
        src = [sources[i] for i in rows]
        # the same limit for every k of one model (a k-dependent one cut blockwise outputs short of greedy's)
        max_new = min(2 * max(len(s) for s in src) + 10, model.cfg.max_positions - model.num_heads)
        prefixes = [[BOS]] * len(rows)
        drawn = None if sampling is None else replace(sampling, seed=tuple(
            sampling.seed * 1_000_003 + i if isinstance(sampling.seed, int) else sampling.seed[i] for i in rows))
        if method == "greedy":
            result = greedy(model, prefixes, max_new, eos_id=EOS, sources=src) if sampling is None else \
                sample(model, prefixes, max_new, drawn, eos_id=EOS, sources=src)
        elif method == "blockwise":
            if k == "auto" and policy is None:  # one policy for the whole text: what it learns carries over
                policy = auto_policy(model, prefixes, src, max_new, tree=tree, sampling=drawn)
            result = blockwise(model, prefixes, max_new, k=k, eos_id=EOS, accept=accept, sources=src, policy=policy,
                               tree=tree, sampling=drawn)
        elif method == "beam" and sampling is not None:
            raise ValueError("beam search does not sample: leave sampling out, or use greedy or blockwise")
        elif method == "beam":
            result = beam_search(model, prefixes, max_new, beam_size=beam_size, eos_id=EOS, sources=src)
        else:
            raise ValueError(f"unknown method {method!r}: use greedy, blockwise or beam")
        for i, tokens in zip(rows, result.tokens):
            out[i] = tokens
        stats.merge(result.stats)
    seconds = time.perf_counter() - start - (policy.costs.measure_seconds - measured if policy else 0.0)
    return Translation([corpus.decode(t) for t in out], out, stats, seconds, policy)  # None unless k = "auto"


def held_out_expected(model: BlockwiseModel, corpus: Corpus, sentences: Sequence[str], batch_size: int = 32,
                      progress: bool = False) -> list[float]:
    """E(1..num_heads): the expected accepted block size at each k on ``sentences`` (held out), from one exact
    blockwise decode with every head (``expected_from_block_sizes``). Stored in a checkpoint
    (``model.blockwise_model.record_expected``), it is the block-size policy's prior."""
    result = translate(model, corpus, sentences, "blockwise", k=model.num_heads, batch_size=batch_size,
                       progress=progress)
    return expected_from_block_sizes(result.stats.block_sizes, model.num_heads)


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)
