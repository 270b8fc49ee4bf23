"""Off-policy correction of the token weights that reach the loss (its `mask` argument).

Two sources make a token off-policy for the trainer's pi_theta_i (the params at the start of
the iteration): partial rollouts continue trajectories whose earlier segments older params
sampled (report sec. 2.6.2), and the rollout engine's numerics differ from the trainer's. With
the trainer's log-probs `trainer_logp` (log pi_theta_i) and the engine's `rollout_logp`
(log pi_rollout: the version that sampled the token, engine numerics), per counted token

    delta[t] = log pi_theta_i(y_t) - log pi_rollout(y_t)          (level "token")
    delta[t] = sum_u delta[u] over the response's counted tokens    (level "sequence")

and each option (`algo.off_policy`, table OFF_POLICY) maps the loss mask to token weights:

    none         w = mask                           every response token, uncorrected
    exclude_old  w = mask * [version == iteration]  k1.5's answer (sec. 2.6.2), the default
    tis          w = mask * min(exp(delta), cap)    truncated importance sampling (Yao et al.
                                                    2025, "Your efficient RL framework secretly
                                                    brings you off-policy RL training"; C = 2)
    mask         w = mask * [low <= exp(delta) <= high]   IcePop-style masking (Ling team 2025,
                                                    Ring-1T), band [0.5, 5] by default

The weights multiply each token's term of the loss (k15_jax/rl/losses.py); the loss's own
ratio pi_theta / pi_theta_i is separate, so w * ratio = pi_theta / pi_rollout, truncated.
Shapes: N sequences, T tokens; every function is pure JAX (jit it with `iteration` traced).
"""

import dataclasses
import math

import jax.numpy as jnp

from k15_jax.rl.common import choice, clean_log_ratio


@dataclasses.dataclass
class ImportanceConfig:
    """Options of algo.off_policy=tis|mask: level (a key of LEVELS), cap (C of tis), and the
    band [mask_low, mask_high] of mask."""

    level: str = "token"
    cap: float = 2.0
    mask_low: float = 0.5
    mask_high: float = 5.0


def _token(delta, valid):
    return delta


def _sequence(delta, valid):
    return jnp.broadcast_to(jnp.sum(delta, axis=-1, keepdims=True), delta.shape)


# The log importance ratio each token's correction uses (option `level`).
LEVELS = {"token": _token, "sequence": _sequence}


def _none(valid, delta, fresh, cfg):
    return jnp.ones_like(delta), jnp.zeros_like(valid)


def _exclude_old(valid, delta, fresh, cfg):
    return fresh.astype(delta.dtype), valid & ~fresh


def _tis(valid, delta, fresh, cfg):
    log_w = choice(LEVELS, cfg.level, "level", "algo.importance")(delta, valid)
    return jnp.minimum(jnp.exp(log_w), cfg.cap), valid & (log_w > math.log(cfg.cap))


def _mask(valid, delta, fresh, cfg):
    log_w = choice(LEVELS, cfg.level, "level", "algo.importance")(delta, valid)
    inside = (log_w >= math.log(cfg.mask_low)) & (log_w <= math.log(cfg.mask_high))
    return inside.astype(delta.dtype), valid & ~inside


# algo.off_policy -> fn(valid, delta, fresh, cfg) -> (correction [N, T], changed [N, T] bool):
# the factor on each token's weight, and the tokens it truncated, masked or excluded.
OFF_POLICY = {"none": _none, "exclude_old": _exclude_old, "tis": _tis, "mask": _mask}


def check(name: str, cfg: ImportanceConfig) -> None:
    """Fails naming the key when an off-policy option cannot work."""
    choice(OFF_POLICY, name, "off_policy", "algo")
    choice(LEVELS, cfg.level, "level", "algo.importance")
    if not (math.isfinite(cfg.cap) and cfg.cap > 0):
        raise ValueError(f"algo.importance.cap={cfg.cap} must be a finite number > 0")
    if not 0 < cfg.mask_low <= 1 <= cfg.mask_high < math.inf:
        raise ValueError(
            f"algo.importance.mask_low={cfg.mask_low}, mask_high={cfg.mask_high}: need "
            "0 < mask_low <= 1 <= mask_high < inf"
        )


def token_weights(name, mask, trainer_logp, rollout_logp, version, iteration, cfg):
    """Token weights [N, T] for the loss, and their metrics (floats as 0-d arrays).

    mask [N, T]: the loss mask (response tokens of groups with a signal); trainer_logp,
    rollout_logp [N, T]: log pi_theta_i and log pi_rollout of the sampled tokens (any value
    where mask == 0); version [N, T]: iteration that sampled each token; iteration: this one.
    Metrics, over counted tokens: weight_mean, changed_frac (truncated by tis, masked by mask,
    excluded by exclude_old), old_frac (sampled before this iteration), weight_max.
    """
    valid = mask > 0
    delta = clean_log_ratio(trainer_logp, rollout_logp, mask)
    fresh = version == iteration
    correction, changed = choice(OFF_POLICY, name, "off_policy", "algo")(valid, delta, fresh, cfg)
    weights = jnp.where(valid, mask, 0) * jnp.where(valid, correction, 0)
    n = jnp.maximum(jnp.sum(valid), 1)
    metrics = {
        "offpolicy/weight_mean": jnp.sum(weights) / n,
        "offpolicy/weight_max": jnp.max(weights, initial=0.0),
        "offpolicy/changed_frac": jnp.sum(changed & valid) / n,
        "offpolicy/old_frac": jnp.sum(valid & ~fresh) / n,
    }
    return weights, metrics
