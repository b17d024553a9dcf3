"""Is a blockwise step that feeds one token dearer than greedy's at batch 8? (issue 16; float32, 2 threads.) Greedy, blockwise
k = 1 and k = auto with the chained heads and the drafter on the first 8 benchmark prompts, 64 tokens, interleaved
repeats. Run under the AVX2 imitation as in results/lm/drafter/README.md:

    ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2 python recipes/lm/probes/k1_overhead_b8.py
"""
import json, time, statistics
from pathlib import Path
from blockwise import blockwise, greedy
import torch
from blockwise.tasks.hf import load_smollm2
from blockwise.tasks.llama import Llama, NativeLM
from blockwise.tasks.lm.heads_io import ASSET, DRAFTER_ASSET, load_heads
from blockwise.tasks.lm.prompts import chat_ids
torch.set_num_threads(2)
tok, hf = load_smollm2()
base = Llama.from_hf(hf).cast(torch.float32)
h, v = load_heads(ASSET); chain = NativeLM(base, h, proposal_vocab=v)
h2, v2 = load_heads(DRAFTER_ASSET); feat = NativeLM(base, h2, proposal_vocab=v2)
plain = NativeLM(base)
texts = json.loads(Path("recipes/lm/prompts.json").read_text())
P = [chat_ids(tok, t["text"]) for t in texts[:8]]
eos = tok.eos_token_id
runs = {"greedy plain": lambda: greedy(plain, P, 64, eos_id=eos),
                "blockwise k=1 chain": lambda: blockwise(chain, P, 64, k=1, eos_id=eos),
        "blockwise k=1 feature": lambda: blockwise(feat, P, 64, k=1, eos_id=eos),
        "blockwise auto feature": lambda: blockwise(feat, P, 64, k="auto", eos_id=eos),
        "blockwise auto chain": lambda: blockwise(chain, P, 64, k="auto", eos_id=eos)}
for f in runs.values(): f()
times = {k: [] for k in runs}
for r in range(3):
    for k, f in runs.items():
        t = time.perf_counter(); f(); times[k].append(time.perf_counter() - t)
for k, ts in times.items(): print(f"{k:24s} median {statistics.median(ts):.3f} s  {[round(x,2) for x in ts]}")
