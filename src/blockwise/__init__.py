"""blockwise: blockwise parallel decoding (Stern, Shazeer & Uszkoreit, NeurIPS 2018) for PyTorch models."""

import os

# Idle OpenMP threads must sleep, not spin. libgomp reads OMP_WAIT_POLICY once, when torch loads, so it is set here,
# before the imports below load torch (a value the user set wins; a program that imported torch first keeps the
# default). With the default spinning policy, 2 threads ran 4x slower than 1 whenever anything else used the CPU.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .config import PRESETS, HeadsConfig, ModelConfig, preset
from .decoding import (EXACT, Acceptance, DecodeOutput, DecodeStats, DynamicTree, Lookup, Sampling, StaticTree,
                       beam_search, blockwise, greedy, sample)
from .model import BlockwiseModel

__version__ = "0.1.0"
__all__ = ["EXACT", "PRESETS", "Acceptance", "BlockwiseModel", "DecodeOutput", "DecodeStats", "DynamicTree",
           "HeadsConfig", "Lookup", "ModelConfig", "Sampling", "StaticTree", "beam_search", "blockwise", "greedy",
           "preset", "sample"]
