"""Write lease/models/mt/<regime>.heads.safetensors: the heads alone of a frozen-base regime (regular, distillation),
so that fewer bytes come back from the GPU machine; recipes/gpu/unpack.py re-joins them with the baseline."""

import sys

from safetensors import safe_open
from safetensors.torch import save_file

for regime in sys.argv[1:] or ("regular", "distillation"):
    path = f"lease/models/mt/{regime}.safetensors"
    try:
        with safe_open(path, "pt") as f:
            save_file({k: f.get_tensor(k) for k in f.keys() if k.startswith("heads.")},
                      f"lease/models/mt/{regime}.heads.safetensors", metadata=f.metadata())
    except Exception as e:  # a failed stage must not lose the others' outputs
        print(f"{regime}: {e}")
