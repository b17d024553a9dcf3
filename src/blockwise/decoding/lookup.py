"""Candidates copied from the row's own text, grafted onto the heads' tree (prompt lookup decoding, Saxena 2023; the
n-gram drafting of vLLM and Hugging Face's ``prompt_lookup_num_tokens``).

Answers repeat their prompt and themselves: names, code identifiers, list formats, SQL columns. After the row's last
n tokens (the root ŷ1 included; n = ``ngram`` down to ``min_ngram``, the longest found first), the ``tokens`` that
followed their latest earlier occurrence in the prompt or in the answer so far are a guess that costs no model call.
``tree.graft`` hangs that chain below the root of the heads' tree: where its first tokens are nodes already (the heads
proposed them too) it follows them, the rest become new nodes, one below the other. The call verifies every node as
it verifies the heads' ones, so the output stays exactly greedy's; a row without a match adds nothing, or padding
nodes in a batch whose other rows found one (every row feeds the same number of nodes).

On the 16 benchmark prompts (SmolLM2, greedy answers of 128 tokens) 14% of the steps find a continuation of which at
least one token is right, mostly in code, lists and SQL (``recipes/lm/probes/lookup_gain.py``).
"""

from __future__ import annotations

from typing import Sequence


class Lookup:
    """``propose(text)``: the ``tokens`` that followed the latest earlier occurrence of ``text``'s last n tokens, for
    the largest n in ``ngram``..``min_ngram`` that occurs earlier (searching the last ``window`` tokens); [] if none."""

    def __init__(self, tokens: int = 6, ngram: int = 3, min_ngram: int = 1, window: int = 2048) -> None:
        if tokens < 1 or not 1 <= min_ngram <= ngram or window < 2:
            raise ValueError(f"lookup needs tokens >= 1 and 1 <= min_ngram <= ngram (got tokens={tokens}, "
                             f"ngram={ngram}, min_ngram={min_ngram})")
        self.tokens, self.ngram, self.min_ngram, self.window = tokens, ngram, min_ngram, window

    def propose(self, text: Sequence[int]) -> list[int]:
        text = list(text[-self.window:])
        for n in range(min(self.ngram, len(text) - 1), self.min_ngram - 1, -1):
            tail = text[-n:]
            last = tail[-1]
            for end in range(len(text) - 2, n - 2, -1):  # the n-gram text[end - n + 1 .. end], latest first
                if text[end] == last and text[end - n + 1:end + 1] == tail:
                    return text[end + 1:end + 1 + self.tokens]
        return []

    def describe(self) -> str:
        return f"lookup of {self.tokens} tokens after {self.min_ngram}..{self.ngram}-grams"
