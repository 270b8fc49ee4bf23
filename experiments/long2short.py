"""The long2short experiment on a saved long-CoT policy (report sec. 2.4, Fig. 7).

    python -m experiments.long2short +exp=long2short \\
        long2short.policy=runs/curriculum-seed0/final/hf

runs the methods of k15_jax/train/long2short.py without training the long-CoT policy again
(`python -m experiments.run +exp=long2short` trains it first, then does the same). Outputs go
to <trainer.run_dir>/long2short (long2short.png, long2short.md, results.json, one HF
checkpoint per method); the run directory is the last line printed.
"""

import hydra

from k15_jax.config import register

register()


@hydra.main(config_path="../configs", config_name="config", version_base=None)
def main(cfg) -> None:
    from k15_jax.train.long2short import main as run

    print(run(cfg), flush=True)


if __name__ == "__main__":
    main()
