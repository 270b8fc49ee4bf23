"""The `algo` config group: the policy loss (`LossConfig`, rl/losses.py) and the update around
it (learning rate, M steps per iteration, which tokens count, gradient accumulation)."""

import dataclasses

from k15_jax.rl.losses import LossConfig
from k15_jax.rl.off_policy import ImportanceConfig


@dataclasses.dataclass
class AlgoConfig:
    """The update (docs/algorithm.md; options of the loss itself in `LossConfig`).

    skip_zero_advantage (not in the report; docs/algorithm.md sec. 9): a group whose K rewards
    are all equal has advantage r - rbar = 0 for every response. True (default) sets the loss
    mask of its tokens to 0 (`train.rl_step.loss_mask`), so it gives no value and no gradient
    in any loss; False lets it in, where it still moves the policy: mirror descent's tau d^2
    regulariser pulls pi_theta back to pi_theta_i on it in the M - 1 later steps (d != 0),
    ReST fits an all-correct group, and the clipped arms' k3 KL term acts on it. Either way
    the mean-over-B*K losses (mirror descent, policy gradient) keep it in their denominator.
    """

    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    lr: float = 2e-4
    updates_per_iteration: int = 4  # M optimizer steps per iteration, fresh Adam state each
    max_grad_norm: float = 1.0
    skip_zero_advantage: bool = True  # all-equal-reward groups leave the loss mask
    # tokens sampled by older params (partial rollouts) or other numerics (the engine):
    # none | exclude_old (k1.5: loss only on this iteration's tokens) | tis | mask
    # (rl/off_policy.py; algo.importance holds the options of tis and mask)
    off_policy: str = "exclude_old"
    importance: ImportanceConfig = dataclasses.field(default_factory=ImportanceConfig)
    trainer_ref_logp: bool = True  # False: use the engine's sampling log-probs as ref_logp
    microbatches: int = 1  # gradient accumulation: sequences split into this many passes
