"""Proposal heads for a frozen causal LM (SmolLM2-135M-Instruct), trained by self-distillation.

The targets are the base model's own greedy continuations: for instruction-style prompts the base model answers
greedily, and every answer position keeps its final hidden state and the greedy tokens after it; head p_i learns to
map the state to the i-th next token. Modules, in the order the recipes (``recipes/lm``) use them: ``prompts`` (the
prompts), ``distill`` (answers with hidden states, shards, training positions), ``training`` (restricted vocabulary,
loss, agreement), ``heads_io`` (heads files, the shipped ``ASSET``). Nothing is re-exported here: a caller that only
loads heads imports only what that needs.
"""
