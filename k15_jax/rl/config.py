"""The `algo` config group: the policy loss (`LossConfig`, rl/losses.py) and the update around
it (learning rate, M steps per iteration, which tokens count, gradient accumulation)."""

import dataclasses

from k15_jax.rl.losses import LossConfig
from k15_jax.rl.off_policy import ImportanceConfig


@dataclasses.dataclass
class AlgoConfig:
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    lr: float = 2e-4
    updates_per_iteration: int = 4  # M optimizer steps per iteration, fresh Adam state each
    max_grad_norm: float = 1.0
    skip_zero_advantage: bool = True  # drop groups whose K rewards are all equal
    # tokens sampled by older params (partial rollouts) or other numerics (the engine):
    # none | exclude_old (k1.5: loss only on this iteration's tokens) | tis | mask
    # (rl/off_policy.py; algo.importance holds the options of tis and mask)
    off_policy: str = "exclude_old"
    importance: ImportanceConfig = dataclasses.field(default_factory=ImportanceConfig)
    trainer_ref_logp: bool = True  # False: use the engine's sampling log-probs as ref_logp
    microbatches: int = 1  # gradient accumulation: sequences split into this many passes
