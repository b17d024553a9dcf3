"""The shipped translation model (Both, k = 10 heads) with float32, int8 and int4 weights (``with_weights``): BLEU of
greedy decoding on the first N test sentences, whether blockwise decoding (k = 4, exact) gives each model's own greedy
output, tokens per call, and agreement with the float32 model's greedy output. Times are printed but, on a shared
2-core machine, only indicative. Writes results/mt/quantized/{summary.json, README.md}.

    python recipes/mt/probes/quantized.py --n 200        # after bash recipes/mt/00_setup.sh
"""

import argparse
import json
import time
from pathlib import Path

import torch

from blockwise.eval.timing import cpu_label, environment
from blockwise.model import BlockwiseModel
from blockwise.tasks.translation import Corpus, bleu, translate

ROOT = Path(__file__).resolve().parents[3]
ASSETS = ROOT / "src" / "blockwise" / "assets"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--test", default=str(ROOT / "data" / "mt" / "test"))
    ap.add_argument("--out", default=str(ROOT / "results" / "mt" / "quantized"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    english = Path(args.test + ".en").read_text().splitlines()[:args.n]
    german = Path(args.test + ".de").read_text().splitlines()[:args.n]
    corpus = Corpus.from_spm(ASSETS / "mt_both.spm.model")
    records, reference = [], None
    for weights in ["float32", "int8", "int4"]:
        model = BlockwiseModel.load(ASSETS / "mt_both.safetensors").eval().with_weights(weights)
        t = time.perf_counter()
        g = translate(model, corpus, english, "greedy", batch_size=args.batch_size)
        g_seconds = time.perf_counter() - t
        t = time.perf_counter()
        b = translate(model, corpus, english, "blockwise", k=args.k, batch_size=args.batch_size)
        b_seconds = time.perf_counter() - t
        reference = reference or g.token_ids
        record = {"weights": weights, "n": len(english), "k": args.k, "batch": args.batch_size, "threads": args.threads,
                  "bleu_greedy": round(bleu(g.hypotheses, german), 2),
                  "bleu_blockwise": round(bleu(b.hypotheses, german), 2),
                  "blockwise_equals_own_greedy": sum(x == y for x, y in zip(b.token_ids, g.token_ids)),
                  "greedy_equals_float32_greedy": sum(x == y for x, y in zip(g.token_ids, reference)),
                  "mean_accepted": round(b.stats.mean_accepted, 3), "greedy_seconds": round(g_seconds, 2),
                  "blockwise_seconds": round(b_seconds, 2), "cpu": cpu_label()}
        records.append(record)
        print(record, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"environment": environment(), "args": vars(args), "records": records}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = ["# The shipped translation model with quantized weights", "",
             f"`python recipes/mt/probes/quantized.py --n {args.n} --k {args.k} --batch-size {args.batch_size} "
             f"--threads {args.threads}` at `{environment()['commit']}`, CPU {records[0]['cpu']}; first {args.n} test "
             "sentences, exact blockwise decoding. Times: one pass each, on a shared machine (indicative only).", "",
             "| weights | BLEU greedy | BLEU blockwise | blockwise = own greedy | greedy = float32 greedy "
             "| tokens/call | greedy s | blockwise s |", "|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['weights']} | {r['bleu_greedy']} | {r['bleu_blockwise']} | "
                     f"{r['blockwise_equals_own_greedy']}/{r['n']} | {r['greedy_equals_float32_greedy']}/{r['n']} | "
                     f"{r['mean_accepted']} | {r['greedy_seconds']} | {r['blockwise_seconds']} |")
    (out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
