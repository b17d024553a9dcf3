"""Probe: proposal-vocabulary size vs speed and k̂ (bf16, k = 3 and 4, the 8 batch-1 benchmark prompts, 2 repeats).

results/lm/README.md quotes two runs with the heads shipped before 5f4a8df: sizes ("all", 8192, 4096), then
(4096, 3072, 2048) as below. Run from the repository root after recipes/lm/01_generate_data.py.
"""
import blockwise  # noqa: F401  before torch: importing blockwise sets OMP_WAIT_POLICY
import time, torch, glob, json
torch.set_num_threads(1)
from safetensors.torch import load_file
from blockwise.tasks.hf import load_smollm2
from blockwise.tasks.llama import Llama, NativeLM
from blockwise.tasks.lm.heads_io import ASSET, load_heads
from blockwise.tasks.lm.prompts import chat_ids
from blockwise.decoding import blockwise, greedy
tok, hf = load_smollm2()
heads, vocab = load_heads(ASSET)
dt = torch.bfloat16
base = Llama.from_hf(hf).cast(dt); heads = heads.to(dt)
toks = torch.cat([load_file(f)["tokens"].long() for d in ["data/lm/distill","data/lm/distill_chat"] for f in sorted(glob.glob(d+"/*.safetensors"))])
counts = torch.bincount(toks, minlength=49152)
order = counts.argsort(descending=True)
lms = {"all": NativeLM(base, heads, proposal_vocab=vocab)}
for n in (4096, 3072, 2048):
    lms[str(n)] = NativeLM(base, heads, proposal_vocab=order[:n].sort().values)
prompts = [p["text"] for p in json.load(open("recipes/lm/prompts.json"))][:8]
ids = [chat_ids(tok, p) for p in prompts]
eos = tok.eos_token_id
ref = [greedy(lms["all"], [i], 128, eos_id=eos).tokens[0] for i in ids]
res = {}
for rep in range(2):
    for name in [f"{v}/k{k}" for v in ["4096", "3072", "2048"] for k in (3, 4)]:
        tot_t, tot_n, blocks, same = 0, 0, 0, 0
        for j, i in enumerate(ids):
            a = time.perf_counter()
            if name == "greedy":
                o = greedy(lms["all"], [i], 128, eos_id=eos)
            else:
                v, k = name.split("/k"); o = blockwise(lms[v], [i], 128, k=int(k), eos_id=eos)
            tot_t += time.perf_counter() - a; tot_n += len(o.tokens[0]); blocks += o.stats.blocks; same += o.tokens[0] == ref[j]
        res.setdefault(name, []).append((tot_n / tot_t, tot_n / max(blocks, 1), same))
for name, r in res.items():
    print(name, "tok/s", [round(x[0], 1) for x in r], "k̂", round(r[0][1], 3), "same", r[0][2])
