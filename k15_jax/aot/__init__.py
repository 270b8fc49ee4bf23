"""Ahead-of-time compiles of the run's programs for TPU pod slices, on a machine with none.

    python -m experiments.aot model=qwen2_5_7b mesh=tpu_v5p_64 +exp=math

`topology` (the slice of a mesh preset as compile-only devices), `programs` (the jitted
functions the loop runs, with abstract sharded arguments), `hlo` (collectives of a compiled
program), `check` (compile each, hold the planner against the compiler, the verdict).
"""
