"""Every training job starts here: `trainer.job` picks it (see configs/exp/*.yaml).

    python -m experiments.run +exp=curriculum [key=value ...]

    rl             the main job: SFT warm-up, then k1.5 RL iterations (k15_jax/train/loop.py)
    long2short     shorten a long-CoT policy (k15_jax/train/long2short/): the HF checkpoint
                   long2short.policy, or, without one, the policy the rl job trains first
    reward_models  train and compare the math reward models (k15_jax/train/reward_models/)

The run directory (runs/<name>-seed<seed>) is the last line printed; re-running the same
command resumes it from its newest complete checkpoint.
"""

from pathlib import Path

import hydra
from omegaconf import OmegaConf

from k15_jax.config import register

register()


def rl(cfg) -> Path:
    from k15_jax.train.loop import main

    return main(cfg)


def long2short(cfg) -> Path:
    from k15_jax.train.long2short.experiment import main

    if not cfg.long2short.policy:  # train the long-CoT policy first, then shorten it
        run_dir = rl(cfg)
        cfg = OmegaConf.merge(cfg, {"long2short": {"policy": str(run_dir / "final" / "hf")}})
    return main(cfg)


def reward_models(cfg) -> Path:
    from k15_jax.train.reward_models.job import main

    return main(cfg)


JOBS = {"rl": rl, "long2short": long2short, "reward_models": reward_models}


@hydra.main(config_path="../configs", config_name="config", version_base=None)
def main(cfg) -> None:
    if cfg.trainer.job not in JOBS:  # every other option: k15_jax.config.validate, in build
        raise ValueError(f"trainer.job={cfg.trainer.job!r}; choose one of {sorted(JOBS)}")
    print(JOBS[cfg.trainer.job](cfg), flush=True)


if __name__ == "__main__":
    main()
