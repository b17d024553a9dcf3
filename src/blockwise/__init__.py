"""blockwise: blockwise parallel decoding (Stern, Shazeer & Uszkoreit, NeurIPS 2018) for PyTorch models."""

from .config import PRESETS, HeadsConfig, ModelConfig, preset
from .decoding import EXACT, Acceptance, DecodeOutput, DecodeStats, beam_search, blockwise, greedy
from .model import BlockwiseModel

__version__ = "0.1.0"
__all__ = ["EXACT", "PRESETS", "Acceptance", "BlockwiseModel", "DecodeOutput", "DecodeStats", "HeadsConfig",
           "ModelConfig", "beam_search", "blockwise", "greedy", "preset"]
