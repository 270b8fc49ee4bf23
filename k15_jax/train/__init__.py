"""Training jobs, chosen by `trainer.job` in experiments/run.py.

The RL loop (trainer.job=rl, the main job; entry point `k15_jax.train.loop.main`) lives at
this level, in the order it runs:

    setup.py      build(cfg): model, mesh, tokenizer, prompt source, engines, initial params
    prompts.py    the prompt source (text; vision/prompts.py adds images)
    sft.py        long-CoT SFT warm-up: packing, loss, step (and `finetune` for other jobs)
    iteration.py  one RL iteration: draw -> collect -> score -> update -> hand over
    rl_step.py    the update's compiled math: M optimizer steps of the configured loss
    loop.py       main: resume, SFT, RL iterations, evaluation, checkpoints, outputs
    state.py      RunState and its orbax checkpoints (exact resume)
    metrics.py    metrics.jsonl + TensorBoard writer, logging, progress bars
    outputs.py, plots.py   what a finished run leaves behind

Other jobs are packages, each naming its entry point in its docstring: long2short/,
reward_models/, vision/ (the vision parts of the RL loop).
"""
