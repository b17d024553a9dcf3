"""Static trees from measured top-i agreement vs a chain and a dynamic tree on SmolLM2 bf16, batch 1, one quick
timed pass (probe, not a benchmark: one repeat). Agreement measured on 6 chat prompts from build_chat_prompts(version=2,
seed=123) — the pool the shipped heads were trained on, so not strictly held-out.

    python recipes/lm/probes/static_tree.py
"""
import json, time, torch
from pathlib import Path
from blockwise import greedy, blockwise, DynamicTree, StaticTree
from blockwise.eval.agreement import top_agreement
from blockwise.tasks.hf import load_smollm2
from blockwise.tasks.lm.heads_io import load_heads
from blockwise.tasks.lm.prompts import chat_ids, build_chat_prompts
from blockwise.tasks.llama import Llama, NativeLM
torch.set_num_threads(1)
tok, hf = load_smollm2()
heads, vocab = load_heads()
lm = NativeLM(Llama.from_hf(hf).cast(torch.bfloat16), heads.to(torch.bfloat16), proposal_vocab=vocab)
bench = json.loads(Path("recipes/lm/prompts.json").read_text())
held = build_chat_prompts(6, seed=123, exclude=[p["text"] for p in bench], version=2)
H = [chat_ids(tok, p["text"]) for p in held]
t = time.time()
table = top_agreement(lm, H, 96, top=4, eos_id=tok.eos_token_id)
print("agreement (held-out chat prompts):", [[round(x, 3) for x in row] for row in table], f"{time.time()-t:.0f}s")
P = [chat_ids(tok, p["text"]) for p in bench[:6]]
eos = tok.eos_token_id
ref = [greedy(lm, [p], 96, eos_id=eos) for p in P]
for name, shape in [("chain3", StaticTree.chain(3)), ("static8", StaticTree.from_agreement(table, 8)), ("static16", StaticTree.from_agreement(table, 16)), ("dyn16", DynamicTree(16, 5, 4))]:
    for p in P[:1]: blockwise(lm, [p], 8, eos_id=eos, tree=shape)
    t = time.perf_counter(); outs = [blockwise(lm, [p], 96, eos_id=eos, tree=shape) for p in P]; s = time.perf_counter() - t
    toks = sum(o.stats.tokens for o in outs); calls = sum(o.stats.iterations for o in outs)
    print(name, shape.nodes, f"tokens/call {toks/calls:.2f}", f"{toks/s:.1f} tok/s", "same", sum(o.tokens == r.tokens for o, r in zip(outs, ref)), flush=True)
t = time.perf_counter(); g = [greedy(lm, [p], 96, eos_id=eos) for p in P]; s = time.perf_counter() - t
print("greedy", f"{sum(o.stats.tokens for o in g)/s:.1f} tok/s")
print("static16 paths:", StaticTree.from_agreement(table, 16).paths)
