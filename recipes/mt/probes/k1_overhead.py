"""Probe (issue 16): translation with blockwise decoding at k = 1 and k = auto against greedy, the shipped model,
interleaved (each repeat starts one method later: a machine that speeds up or slows down meets every method alike),
medians of REPEATS (default 5): blockwise at k = 1 must cost what greedy does. The sentences: 32 ordinary ones, or
the first N of a file (e.g. data/mt/test.en).

    OMP_WAIT_POLICY=PASSIVE python recipes/mt/probes/k1_overhead.py THREADS BATCH [REPEATS [FILE N]]
"""
import statistics
import sys
import time

from blockwise.cli_translate import DEFAULT_MODEL, load_translator  # before torch: sets OMP_WAIT_POLICY
from blockwise.tasks.translation import translate

import torch

torch.set_num_threads(int(sys.argv[1]))
batch = int(sys.argv[2])
model, corpus = load_translator(str(DEFAULT_MODEL))
S = [  # ordinary sentences, twice
     "The package provides a command-line tool.", "Please restart the computer after the update.",
     "The file could not be opened because it is too large.", "I would like to book a room for two nights.",
     "The meeting has been moved to Thursday afternoon.", "Our children go to school by bus every morning.",
     "The government announced new measures against unemployment.", "She has been working at the hospital for ten years.",
     "We must protect the environment for future generations.", "The museum is closed on Mondays and public holidays.",
     "He asked whether the train to Berlin was late.", "The results of the study were published last week.",
     "Many people in the region still have no access to clean water.", "The committee will discuss the proposal tomorrow.",
     "This book was translated into more than twenty languages.", "I think that the report is very important."] * 2
repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 5
if len(sys.argv) > 5:
    with open(sys.argv[4], encoding="utf-8") as f:
        S = f.read().splitlines()[: int(sys.argv[5])]


METHODS = {"greedy": {"method": "greedy"}, "k1": {"method": "blockwise", "k": 1},
           "auto": {"method": "blockwise", "k": "auto"}}


def run(name: str):
    start = time.perf_counter()
    result = translate(model, corpus, S, batch_size=batch, **METHODS[name])
    return time.perf_counter() - start, result


for name in METHODS:  # warm-up; k = auto measures its costs here (once per machine)
    run(name)
times, chosen, names = {name: [] for name in METHODS}, None, list(METHODS)
for r in range(repeats):
    for name in names[r % len(names):] + names[:r % len(names)]:
        seconds, result = run(name)
        times[name].append(seconds)
        chosen = result.stats.k_chosen if name == "auto" else chosen
greedy_s = statistics.median(times["greedy"])
print(f"batch {batch}:", {name: f"{statistics.median(t):.3f}s {greedy_s / statistics.median(t):.3f}x"
                          for name, t in times.items()}, "k = auto chose (count per k):", chosen)
