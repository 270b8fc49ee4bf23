"""long2short (report sec. 2.4, Fig. 7): shorten a long-CoT policy and compare accuracy
against response length for merge, shortest rejection sampling, DPO and long2short RL.

Job: trainer.job=long2short (`python -m experiments.run +exp=long2short`); entry point
`k15_jax.train.long2short.experiment.main(cfg)`, on the HF checkpoint long2short.policy
(experiments/run.py trains it with the RL job first when it is unset).

    config.py     the `long2short` config group and its check
    experiment.py the stages in order, evaluation, export, report
    samples.py    K verified samples per prompt (shortest RS and DPO data)
    short_cot.py  short demonstrations; merge.py weight averaging; shortest.py shortest RS;
    dpo.py        DPO on long2short pairs; rl.py long2short RL; report.py table and plot
"""
