"""The main job: SFT warm-up, then k1.5 RL iterations (see configs/exp/*.yaml).

    python -m experiments.run +exp=curriculum [key=value ...]

`trainer.job` picks the job: "rl" (the main job, default) or "reward_models" (train and
compare the math reward models, +exp=reward_models; k15_jax/train/reward_models.py).

The run directory (runs/<name>-seed<seed>) is the last line printed; re-running the same
command resumes it from its newest complete checkpoint.
"""

import hydra

from k15_jax.config import register

register()


@hydra.main(config_path="../configs", config_name="config", version_base=None)
def main(cfg) -> None:
    if cfg.trainer.job == "reward_models":
        from k15_jax.train.reward_models import main as run
    else:
        from k15_jax.train.loop import main as run

    run_dir = run(cfg)
    print(run_dir, flush=True)


if __name__ == "__main__":
    main()
