from .blockwise_model import BlockwiseModel, Session
from .cache import KVCache
from .heads import ProposalHeads
from .transformer import Transformer

__all__ = ["BlockwiseModel", "KVCache", "ProposalHeads", "Session", "Transformer"]
