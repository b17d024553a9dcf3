"""Probe: interleaved A/B of bf16 vs float32 logits in NativeSession (greedy, blockwise k = 3 and 4; the 8 batch-1
benchmark prompts, 3 repeats, one thread). results/lm/README.md quotes its figures (commit 9caf227).
It patches ``NativeSession``, which 2bb373e folded into ``blockwise.model.CachedSession``: rerun it on a checkout of
9caf227..74e4cab (``git worktree add /tmp/bw 74e4cab``), where the change it measured can still be undone.
"""
import time, torch, json, statistics
torch.set_num_threads(1)
from blockwise.tasks.hf import load_smollm2
from blockwise.tasks import llama
from blockwise.tasks.llama import Llama, NativeLM, NativeSession
from blockwise.tasks.lm_heads import ASSET, chat_ids, load_heads
from blockwise.decoding import blockwise, greedy
tok, hf = load_smollm2()
heads, vocab = load_heads(ASSET)
lm = NativeLM(Llama.from_hf(hf).cast(torch.bfloat16), heads.to(torch.bfloat16), proposal_vocab=vocab)
ids = [chat_ids(tok, p["text"]) for p in json.load(open("recipes/lm/prompts.json"))][:8]
eos = tok.eos_token_id
new_scores, new_sp = NativeSession.scores, NativeSession._score_proposal
def old_scores(self, hidden): return self.model.base.lm_head(hidden)
def old_sp(self, out): return new_sp(self, out).to(torch.bfloat16)  # the old path's dtype (values identical)
variants = {"bf16 logits (before)": (old_scores, old_sp), "float32 logits (now)": (new_scores, new_sp)}
res, outs = {}, {}
for r in range(3):
    for name, (sc, sp) in (variants.items() if r % 2 == 0 else list(variants.items())[::-1]):
        NativeSession.scores, NativeSession._score_proposal = sc, sp
        for k in (1, 3, 4):
            a = time.perf_counter(); n = 0; o_all = []
            for i in ids:
                o = greedy(lm, [i], 128, eos_id=eos) if k == 1 else blockwise(lm, [i], 128, k=k, eos_id=eos)
                n += len(o.tokens[0]); o_all.append(o.tokens[0])
            res.setdefault((name, k), []).append(n / (time.perf_counter() - a)); outs[(name, k)] = o_all
for (name, k), v in res.items():
    print(f"{name:22s} k={k}: median {statistics.median(v):.1f} tok/s  {[round(x, 1) for x in v]}")
print("outputs equal across variants and k:", all(outs[key] == outs[("float32 logits (now)", 1)] for key in outs))
