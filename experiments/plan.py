"""Will a run fit? Per-device memory of every phase, FLOPs and rough times, before launch.

    python -m experiments.plan +exp=curriculum mesh=h100_8 [key=value ...]

Takes the same overrides as experiments.run (Hydra), uses no accelerator and writes
nothing. Prints the plan (k15_jax.plan) and, when a phase does not fit, what to change;
exits with status 1 then. The same check runs at the start of experiments.run.
"""

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from k15_jax import plan
from k15_jax.config import model_config, register, validate

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def main(overrides: list[str]) -> int:
    register()
    with initialize_config_dir(str(CONFIGS), version_base=None):
        cfg = compose("config", overrides=overrides)
    validate(cfg)
    model = model_config(cfg.model)
    fixed = [getattr(cfg.mesh, a) for a in ("data", "fsdp", "tensor", "sequence")]
    if -1 in fixed:  # a free axis: size it from the devices of this machine
        import jax

        n_devices = jax.device_count()
    else:
        n_devices = 1
    shape = plan.mesh_shape(cfg.mesh, n_devices)
    p = plan.plan_config(cfg, model, shape)
    total = plan.memory_bytes(cfg.device, runtime=False)  # the preset's, not this machine's
    print(plan.report(p, total))
    return 1 if total is not None and plan.problems(p, total) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
