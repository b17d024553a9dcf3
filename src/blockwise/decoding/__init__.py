from .acceptance import EXACT, Acceptance
from .beam import beam_search
from .blockwise import blockwise
from .common import DecodeOutput, DecodeStats
from .greedy import greedy
from .interface import DecodingModel, Session

__all__ = ["EXACT", "Acceptance", "DecodeOutput", "DecodeStats", "DecodingModel", "Session", "beam_search",
           "blockwise", "greedy"]
