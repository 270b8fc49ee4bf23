"""Benchmark evaluation (report sec. 3.1): pass@k with intervals, the harness loop, tables.

`experiments/evaluate.py` is the command; these modules hold its parts:
metrics (pass@k, 95% interval, lengths), table (eval.md), harness (generate, verify,
append per prompt), generation (the rollout engine as a text policy), checkpoint (HF
folders, run folders, orbax), benchmarks (prompt sets by name), code (sandbox problems),
resume (settings guard shared with `experiments.curate`), config (the command's options).
"""
