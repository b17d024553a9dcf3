"""Plot run 4's learning curve (held-out top-1 at draft depths 1 and 4, both parts of the GPU run) from
results/lm/drafter/training/run4_part{1,2}_log.jsonl into run4_learning_curve.png.

    python recipes/lm/probes/drafter_learning_curve.py
"""
import json
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(7, 4))
offset = 0
for part, color in ((1, "tab:blue"), (2, "tab:orange")):
    rows = [json.loads(l) for l in open(f"results/lm/drafter/training/run4_part{part}_log.jsonl")]
    ev = [r for r in rows if "held_out_top1_1" in r]
    for d, style in ((1, "-"), (4, ":")):
        ax.plot([offset + r["step"] for r in ev], [r[f"held_out_top1_{d}"] for r in ev], style, color=color,
                label=f"part {part}, draft depth {d}")
    offset += rows[-1]["step"]
ax.set_xlabel("step (16,384 tokens each)")
ax.set_ylabel("held-out top-1 (64 answers, teacher-forced)")
ax.set_title("Run 4 of the feature drafter on an H200: learning curve")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig("results/lm/drafter/training/run4_learning_curve.png", dpi=110)
