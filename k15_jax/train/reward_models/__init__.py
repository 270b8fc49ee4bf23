"""The reward-model experiment (report sec. 2.3.5): a classic value-head RM and a
chain-of-thought RM trained on the same labelled data and compared with the rule verifier.

Job: trainer.job=reward_models (`python -m experiments.run +exp=reward_models`); entry point
`k15_jax.train.reward_models.job.main(cfg)`. config.py holds the `reward_models` group.
The trained RMs serve as the RL reward with reward.kind=classic_rm|cot_rm reward.rm_dir=...
"""
