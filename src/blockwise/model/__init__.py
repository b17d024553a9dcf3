from .blockwise_model import BlockwiseModel
from .cache import KVCache
from .heads import ChainHeads, Heads, PaperHeads, ResidualHeads, make_heads
from .session import CachedSession
from .transformer import Transformer

__all__ = ["BlockwiseModel", "CachedSession", "ChainHeads", "Heads", "KVCache", "PaperHeads", "ResidualHeads",
           "Transformer", "make_heads"]
