"""Joint text-vision RL (report sec. 2.5): the RL job with an image encoder in the policy.

Job: the RL job with vision.enabled=true (`python -m experiments.run +exp=vision`); entry
point `k15_jax.train.loop.main`, which takes its prompts from `prompts.VisionPrompts`.

    config.py   the `vision` config group and its check
    data.py     image tasks, placeholders, patches, SFT mix, evaluation items
    prompts.py  the prompt source of a vision run (TextPrompts' methods, with images)
    eval.py     held-out evaluation per modality, summary entries, modality plot
"""
