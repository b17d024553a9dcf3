"""The seeded train/dev/test split: held-out Ding sentences and whole Debian packages, no English key in two splits."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass

from ..hashing import hash_unit
from ..pairs import Pair
from .clean import english_key

SPLITS = ("train", "dev", "test")


@dataclass
class SplitConfig:
    """Sizes of the held-out splits.

    ``n_test``/``n_dev`` are targets; ``ding_share`` of each comes from sampled Ding
    example sentences, the rest from Debian descriptions of held-out source packages
    (whole packages are added in hash order until the target is reached).  A held-out
    package contributes at most ``max_per_group`` pairs (0: no cap); the rest of a big
    package is left out of every split, so one package cannot dominate dev/test.
    """

    n_test: int = 2000
    n_dev: int = 2000
    ding_share: float = 0.5
    seed: int = 0
    max_per_group: int = 40


def split_corpus(pairs: Sequence[Pair], config: SplitConfig | None = None) -> tuple[dict[str, list[Pair]], dict]:
    """Deterministic train/dev/test split with no English key in two splits.

    * Ding example sentences are ranked by a seeded hash of their English key; the
      first go to test, the next to dev.
    * Debian source packages are ranked by a seeded hash of their name; whole
      packages go to test, then dev, until each reaches its Debian share (at most
      ``max_per_group`` pairs each; the overflow goes nowhere, never to train).
    * Test and dev keep one pair per English key, and a key belongs to one split
      only: first come first served in the order Ding test, Ding dev, Debian test,
      Debian dev, train (so train loses the pairs that collide with held-out ones).
    * gettext pairs and everything else go to train.

    The result depends only on the pair contents and the seed, not on input order
    (except which of several pairs sharing an English key wins a collision).  Returns the splits and a record
    of held-out groups and drops.
    """
    cfg = config or SplitConfig()
    seed = cfg.seed
    n_ding = {"test": round(cfg.n_test * cfg.ding_share), "dev": round(cfg.n_dev * cfg.ding_share)}
    n_deb = {"test": cfg.n_test - n_ding["test"], "dev": cfg.n_dev - n_ding["dev"]}

    taken: dict[str, str] = {}  # english key -> split
    splits: dict[str, list[Pair]] = {s: [] for s in SPLITS}
    info: dict = {
        "held_out_groups": {"test": [], "dev": []},
        "dropped_cross_split": collections.Counter(),
        "held_out_overflow": 0,
    }

    def add(split: str, p: Pair) -> bool:
        k = english_key(p.en)
        owner = taken.get(k)
        if owner is not None and (owner != split or split != "train"):
            info["dropped_cross_split"][f"{p.source}:{split}"] += 1
            return False
        taken[k] = split
        splits[split].append(p)
        return True

    # 1) Ding example sentences
    ding_sent = [p for p in pairs if p.source == "ding" and p.kind == "sentence"]
    ding_sent.sort(key=lambda p: (hash_unit(seed, "ding", english_key(p.en)), p.en, p.de))
    chosen: set[int] = set()
    pos = 0
    for split in ("test", "dev"):
        n = 0
        while pos < len(ding_sent) and n < n_ding[split]:
            p = ding_sent[pos]
            pos += 1
            if english_key(p.en) in taken:  # stays in the pool; handled (and counted) with train
                continue
            if add(split, p):
                chosen.add(id(p))
                n += 1
    # 2) Debian held-out packages
    by_group: dict[str, list[Pair]] = collections.defaultdict(list)
    for p in pairs:
        if p.source == "debian":
            by_group[p.group].append(p)
    groups = sorted(by_group, key=lambda g: (hash_unit(seed, "debian-group", g), g))
    held: dict[str, str] = {}
    gi = 0
    for split in ("test", "dev"):
        n = 0
        while gi < len(groups) and n < n_deb[split]:
            g = groups[gi]
            gi += 1
            held[g] = split
            info["held_out_groups"][split].append(g)
            rows = by_group[g]
            if cfg.max_per_group and len(rows) > cfg.max_per_group:
                ranked = sorted(rows, key=lambda p: (hash_unit(seed, "in-group", p.en, p.de), p.en, p.de))
                keep = {id(p) for p in ranked[: cfg.max_per_group]}
                info["held_out_overflow"] += len(rows) - len(keep)
                rows = [p for p in rows if id(p) in keep]
            for p in rows:
                if add(split, p):
                    n += 1
    # 3) train: everything else
    for p in pairs:
        if id(p) in chosen or (p.source == "debian" and p.group in held):
            continue
        add("train", p)
    info["dropped_cross_split"] = dict(info["dropped_cross_split"])
    return splits, info
