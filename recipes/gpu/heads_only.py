"""Write lease/models/mt/<regime>.heads.safetensors: the heads alone of a frozen-base regime (regular, distillation),
so that fewer bytes come back from the GPU machine; recipes/gpu/unpack.py re-joins them with the baseline."""

import sys

from blockwise.model.blockwise_model import save_heads_only

for regime in sys.argv[1:] or ("regular", "distillation"):
    try:
        save_heads_only(f"lease/models/mt/{regime}.safetensors", f"lease/models/mt/{regime}.heads.safetensors")
    except Exception as e:  # a failed stage must not lose the others' outputs
        print(f"{regime}: {e}")
