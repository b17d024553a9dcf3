from .acceptance import EXACT, Acceptance
from .beam import beam_search
from .blockwise import blockwise
from .common import DecodeOutput, DecodeStats
from .greedy import greedy
from .lookup import Lookup
from .interface import DecodingModel, Session
from .sampling import Sampling, sample
from .tree import DynamicTree, StaticTree, Tree, tree_decode

__all__ = ["EXACT", "Acceptance", "DecodeOutput", "DecodeStats", "DecodingModel", "DynamicTree", "Lookup",
           "Sampling", "Session", "StaticTree", "Tree", "beam_search", "blockwise", "greedy", "sample", "tree_decode"]
