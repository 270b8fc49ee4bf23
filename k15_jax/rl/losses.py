"""Policy losses of k1.5: online mirror descent (report sec. 2.3.2) and its ablations (sec. 3.5).

All losses take per-token log-probs of the sampled tokens and return `(loss, metrics)`, where
`metrics` is a flat dict of scalar arrays. Shapes: B prompts, K samples per prompt, T tokens.

    logp      [B, K, T]  log pi_theta(token)      (the policy being trained; gets gradient)
    ref_logp  [B, K, T]  log pi_theta_i(token)    (the policy that sampled; a constant)
    rewards   [B, K]                              (a constant)
    mask      [B, K, T]  token weights: nonzero where the token counts, and the value scales the
                         token's term (1 for plain counting; k15_jax/rl/off_policy.py gives
                         importance weights). Masked positions may hold any value, NaN and inf
                         included: they are removed with `jnp.where`, never multiplied.

`LOSSES` maps a config name to a function with the common signature
`fn(logp, ref_logp, rewards, mask, **options)`; `loss_options(LossConfig)` gives the options.
The derivation is in docs/algorithm.md; the clipped-ratio arms GRPO, DAPO, GSPO and CISPO
live in k15_jax/rl/clipped.py (docs/losses.md) and share the table.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp

from k15_jax.rl import clipped
from k15_jax.rl.common import choice as _choice
from k15_jax.rl.common import zero_advantage_fraction

# How per-token quantities become one number per response (option `seq_reduce`).
# "sum" is the report's form: log pi(y|x) = sum_t log pi(y_t | x, y_<t).
# "token_mean" divides by the response's number of counted tokens, which keeps long responses
# from dominating the loss; it changes the objective and is not in the report.
SEQ_REDUCE = {
    "sum": lambda total, count: total,
    "token_mean": lambda total, count: total / jnp.maximum(count, 1),
}


def sequence_sum(x, mask, seq_reduce: str = "sum"):
    """Per-response weighted reduction of a per-token array over counted tokens.

        total = sum_t mask[t] * x[t]  over tokens with mask > 0;  count = #{t: mask[t] > 0}

    x, mask: [..., T] -> [...]. Positions with mask == 0 are replaced by 0 before the product,
    so their values (NaN, inf) reach neither the result nor the gradient. With 0/1 masks this
    is the plain sum; other weights are importance weights (k15_jax/rl/off_policy.py).
    """
    valid = mask > 0
    total = jnp.sum(jnp.where(valid, mask, 0) * jnp.where(valid, x, 0), axis=-1)
    count = jnp.sum(valid, axis=-1).astype(total.dtype)
    return _choice(SEQ_REDUCE, seq_reduce, "seq_reduce")(total, count)


def _mean_baseline(rewards, tau):
    """tau*logZ ~ mean_j r_j: the report's practical choice (sec. 2.3.2). [B, K] -> [B, 1]."""
    del tau
    return jnp.mean(rewards, axis=-1, keepdims=True)


def _logmeanexp_baseline(rewards, tau):
    """tau*logZ ~ tau * log(1/K sum_j exp(r_j / tau)). [B, K] -> [B, 1].

    Written as m + tau * log1p(mean_j expm1((r_j - m) / tau)) with m = max_j r_j: the
    arguments of expm1 are <= 0 (no overflow for small tau) and log1p/expm1 keep full precision
    when (r - m)/tau is tiny (large tau), where log(mean(exp(.))) would cancel catastrophically.
    """
    m = jnp.max(rewards, axis=-1, keepdims=True)
    x = jnp.mean(jnp.expm1((rewards - m) / tau), axis=-1, keepdims=True)
    return m + tau * jnp.log1p(x)


# Estimates of tau*logZ[b] (option `log_z`); both are treated as constants in the loss.
LOG_Z = {"mean": _mean_baseline, "logmeanexp": _logmeanexp_baseline}

# Overall loss factor (option `loss_scale`). "none" is the report's squared loss, whose gradient
# is 2*tau times a policy gradient; "inv_2tau" divides by 2*tau so that the gradient is exactly
# minus the sampled-baseline gradient, of the same size as `policy_gradient_loss`'s for any tau.
LOSS_SCALE = {
    "none": lambda tau: 1.0,
    "inv_tau": lambda tau: 1.0 / tau,
    "inv_2tau": lambda tau: 0.5 / tau,
}


def mirror_descent_loss(
    logp, ref_logp, rewards, mask, *, tau, log_z="mean", seq_reduce="sum", loss_scale="none"
):
    """k1.5 online-mirror-descent surrogate loss (report sec. 2.3.2).

        d[b,j]   = sum_t mask * (logp - ref_logp)              (sequence log pi_theta/pi_theta_i)
        L        = mean_{b,j} (r[b,j] - tau*logZ[b] - tau*d[b,j])**2

    tau*logZ[b] is `mean_j r[b,j]` (log_z="mean", default) or
    `tau*log(mean_j exp(r[b,j]/tau))` (log_z="logmeanexp"); it, the rewards and ref_logp get no
    gradient. With log_z="mean", -(1/(2 tau)) grad L is the sampled-baseline gradient of
    `sampled_baseline_surrogate`.

    Args: logp, ref_logp, mask [B, K, T]; rewards [B, K]; tau > 0; seq_reduce in SEQ_REDUCE;
      loss_scale in LOSS_SCALE (multiplies L).
    Returns: (loss [], metrics) with reward_mean, abs_log_ratio (mean |d|), sq_log_ratio
      (mean d**2), zero_adv_frac, tau_log_z (mean of tau*logZ).
    """
    rewards = jax.lax.stop_gradient(rewards)
    ref_logp = jax.lax.stop_gradient(ref_logp)
    valid = mask > 0
    # Both inputs are cleaned before the subtraction: inf - inf at a masked slot is never formed.
    diff = jnp.where(valid, logp, 0) - jnp.where(valid, ref_logp, 0)
    d = sequence_sum(diff, mask, seq_reduce)
    tau_log_z = jax.lax.stop_gradient(_choice(LOG_Z, log_z, "log_z")(rewards, tau))
    residual = rewards - tau_log_z - tau * d
    scale = _choice(LOSS_SCALE, loss_scale, "loss_scale")(tau)
    loss = scale * jnp.mean(residual**2)
    d_const = jax.lax.stop_gradient(d)
    metrics = {
        "reward_mean": jnp.mean(rewards),
        "abs_log_ratio": jnp.mean(jnp.abs(d_const)),
        "sq_log_ratio": jnp.mean(d_const**2),
        "zero_adv_frac": zero_advantage_fraction(rewards),
        "tau_log_z": jnp.mean(tau_log_z),
    }
    return loss, metrics


def sampled_baseline_surrogate(
    logp, ref_logp, rewards, mask, *, tau, log_z="mean", seq_reduce="sum"
):
    """Objective (to maximise) whose gradient is k1.5's sampled-baseline gradient (sec. 2.3.2).

        grad J = 1/(B K) sum_{b,j} [ (r[b,j] - rbar[b]) grad log pi_theta(y_bj|x_b)
                                     - (tau/2) grad d[b,j]**2 ]

    with rbar = tau*logZ (the mean reward by default) held constant and d as in
    `mirror_descent_loss`. For the same options, grad J == -(1/(2 tau)) grad mirror_descent_loss.
    Shapes as in `mirror_descent_loss`; returns (J [], metrics).
    """
    rewards = jax.lax.stop_gradient(rewards)
    ref_logp = jax.lax.stop_gradient(ref_logp)
    valid = mask > 0
    baseline = _choice(LOG_Z, log_z, "log_z")(rewards, tau)
    advantage = jax.lax.stop_gradient(rewards - baseline)
    seq_logp = sequence_sum(logp, mask, seq_reduce)
    d = sequence_sum(jnp.where(valid, logp, 0) - jnp.where(valid, ref_logp, 0), mask, seq_reduce)
    objective = jnp.mean(advantage * seq_logp - 0.5 * tau * d**2)
    metrics = {
        "reward_mean": jnp.mean(rewards),
        "zero_adv_frac": zero_advantage_fraction(rewards),
    }
    return objective, metrics


def policy_gradient_loss(logp, rewards, mask, *, seq_reduce="sum"):
    """REINFORCE with the group-mean baseline, no regulariser (ablation baseline, sec. 3.5).

        L = -mean_{b,j} (r[b,j] - mean_j r[b,j]) * sum_t mask * logp[b,j,t]

    Negative advantages push probability down ("negative gradients" on).
    Args: logp, mask [B, K, T]; rewards [B, K]. Returns (loss [], metrics).
    """
    rewards = jax.lax.stop_gradient(rewards)
    advantage = rewards - jnp.mean(rewards, axis=-1, keepdims=True)
    seq_logp = sequence_sum(logp, mask, seq_reduce)
    loss = -jnp.mean(advantage * seq_logp)
    metrics = {
        "reward_mean": jnp.mean(rewards),
        "adv_abs_mean": jnp.mean(jnp.abs(advantage)),
        "zero_adv_frac": zero_advantage_fraction(rewards),
    }
    return loss, metrics


def _rest_all_correct(correct, rewards, mask):
    """Every correct response (rejection-sampling fine-tuning). -> keep [B, K] bool."""
    return correct


def _rest_best(correct, rewards, mask):
    """One response per prompt, the report's form of ReST (sec. 3.5: "fitting the best
    response sampled from the current model"): the correct response with the highest reward;
    ties (all correct ones under {0, 1} rewards) go to the shortest (fewest counted tokens, as
    shortest rejection sampling does, sec. 2.4; with the length penalty of sec. 2.3.3 the
    highest reward already is the shortest correct), then to the lowest index. None when the
    prompt has no correct response. -> keep [B, K] bool."""
    top = correct & (rewards == jnp.max(jnp.where(correct, rewards, -jnp.inf), -1, keepdims=True))
    length = jnp.sum(mask > 0, axis=-1).astype(jnp.float32)
    idx = jnp.argmin(jnp.where(top, length, jnp.inf), axis=-1)  # argmin: first of ties
    return correct & jax.nn.one_hot(idx, correct.shape[-1], dtype=bool)


# Which correct responses ReST fits (option `rest_select`).
REST_SELECT = {"all_correct": _rest_all_correct, "best": _rest_best}


def rest_loss(
    logp,
    rewards,
    mask,
    *,
    correct=None,
    correct_threshold=0.5,
    seq_reduce="sum",
    rest_select="all_correct",
):
    """ReST / rejection-sampling fine-tuning: NLL of correct responses only (sec. 3.5 ablation).

        ok[b,j] = correct[b,j]  if `correct` is given, else  rewards[b,j] >= correct_threshold,
                  and the response has a counted token (mask > 0 somewhere)
        c       = REST_SELECT[rest_select](ok, rewards, mask)     ("all_correct": c = ok;
                  "best": per prompt the one correct response of highest reward, ties to the
                  shortest then the lowest index: the report's "best response")
        L       = -sum_{b,j} c[b,j] * sum_t mask * logp[b,j,t] / max(1, sum_{b,j} c[b,j])

    i.e. the mean NLL over the kept responses; the others contribute neither value nor
    gradient (no negative gradient). The default threshold 0.5 keeps exactly reward 1
    for {0, 1} rewards and still separates correct from incorrect when the length penalty of
    sec. 2.3.3 (weight w <= 1) has been added: correct rewards are then >= 1 - w/2 >= 0.5 and
    incorrect ones <= 0. Pass `correct` ([B, K], nonzero = correct) to bypass the threshold.
    A response without counted tokens (its group dropped by algo.skip_zero_advantage, or all
    its tokens old under exclude_old) is never kept: it would count in the denominator, and
    "best" would pick it as the shortest, while it has nothing to fit.
    Args: logp, mask [B, K, T]; rewards [B, K]. Returns (loss [], metrics).
    """
    rewards = jax.lax.stop_gradient(rewards)
    ok = (rewards >= correct_threshold) if correct is None else (jnp.asarray(correct) > 0)
    ok = ok & jnp.any(mask > 0, axis=-1)
    keep = _choice(REST_SELECT, rest_select, "rest_select")(ok, rewards, mask)
    seq_logp = sequence_sum(logp, mask, seq_reduce)
    n_keep = jnp.sum(keep).astype(seq_logp.dtype)
    loss = -jnp.sum(jnp.where(keep, seq_logp, 0)) / jnp.maximum(n_keep, 1)
    metrics = {
        "reward_mean": jnp.mean(rewards),
        "kept_frac": jnp.mean(keep.astype(jnp.float32)),
        "zero_adv_frac": zero_advantage_fraction(rewards),
    }
    return loss, metrics


def _policy_gradient_common(logp, ref_logp, rewards, mask, **options):
    """`policy_gradient_loss` with the common signature; ref_logp is unused."""
    del ref_logp
    return policy_gradient_loss(logp, rewards, mask, **options)


def _rest_common(logp, ref_logp, rewards, mask, **options):
    """`rest_loss` with the common signature; ref_logp is unused."""
    del ref_logp
    return rest_loss(logp, rewards, mask, **options)


# Losses selectable by `LossConfig.name`, all `fn(logp, ref_logp, rewards, mask, **options)`.
# GRPO and DAPO are one function (per-token clipping); their options differ (LOSS_DEFAULTS).
LOSSES = {
    "mirror_descent": mirror_descent_loss,
    "policy_gradient": _policy_gradient_common,
    "rest": _rest_common,
    "grpo": clipped.clipped_token_loss,
    "dapo": clipped.clipped_token_loss,
    "gspo": clipped.sequence_ratio_loss,
    "cispo": clipped.clipped_weight_loss,
}


@dataclasses.dataclass
class LossConfig:
    """Which policy loss to train with and its options (docs/algorithm.md, docs/losses.md).

    name: a key of LOSSES. tau: KL weight of sec. 2.3.2 (the report gives no value; 1.0 keeps the
    per-iteration sequence log-ratio near the advantage). log_z: a key of LOG_Z. seq_reduce: a
    key of SEQ_REDUCE ("sum" is the report's). loss_scale: a key of LOSS_SCALE ("none" is the
    report's). correct_threshold: reward at or above which ReST counts a response correct.
    rest_select: a key of REST_SELECT, which correct responses ReST fits: "all_correct"
    (rejection-sampling fine-tuning, the default) or "best" (one per prompt, the report's).
    Clipped-ratio arms (grpo, dapo, gspo, cispo; k15_jax/rl/clipped.py), None = the paper's
    value from LOSS_DEFAULTS: aggregation (a key of clipped.AGGREGATIONS), clip_low and
    clip_high (ratio range [1 - clip_low, 1 + clip_high]), adv_norm (a key of
    clipped.ADVANTAGES); adv_eps: the std floor of group_std; kl_coef: weight of the k3 KL to
    pi_old (0 = off).
    """

    name: str = "mirror_descent"
    tau: float = 1.0
    log_z: str = "mean"
    seq_reduce: str = "sum"
    loss_scale: str = "none"
    correct_threshold: float = 0.5
    rest_select: str = "all_correct"
    aggregation: str | None = None
    clip_low: float | None = None
    clip_high: float | None = None
    adv_norm: str | None = None
    adv_eps: float = 1e-6
    kl_coef: float = 0.0


_CLIPPED = ("aggregation", "clip_low", "clip_high", "adv_norm", "adv_eps", "kl_coef")

# Which LossConfig fields each loss takes as keyword options.
_OPTION_FIELDS = {
    "mirror_descent": ("tau", "log_z", "seq_reduce", "loss_scale"),
    "policy_gradient": ("seq_reduce",),
    "rest": ("seq_reduce", "correct_threshold", "rest_select"),
    **{name: _CLIPPED for name in ("grpo", "dapo", "gspo", "cispo")},
}

# Each paper's values of the options left None in LossConfig.
LOSS_DEFAULTS = {
    "grpo": dict(aggregation="seq_mean", clip_low=0.2, clip_high=0.2, adv_norm="group_std"),
    "dapo": dict(aggregation="token_mean", clip_low=0.2, clip_high=0.28, adv_norm="group_std"),
    "gspo": dict(aggregation="seq_mean", clip_low=3e-4, clip_high=4e-4, adv_norm="group_std"),
    "cispo": dict(aggregation="token_mean", clip_low=1.0, clip_high=4.0, adv_norm="group_std"),
}


def _nonneg(field):
    ok = lambda v: math.isfinite(v) and v >= 0
    return lambda v: None if ok(v) else _bad(field, v, "a finite number >= 0")


# Checks of each option value; each raises ValueError naming the field to fix.
_CHECKS = {
    "tau": lambda v: None if math.isfinite(v) and v > 0 else _bad("tau", v, "a finite number > 0"),
    "log_z": lambda v: _choice(LOG_Z, v, "log_z"),
    "seq_reduce": lambda v: _choice(SEQ_REDUCE, v, "seq_reduce"),
    "loss_scale": lambda v: _choice(LOSS_SCALE, v, "loss_scale"),
    "correct_threshold": lambda v: (
        None if math.isfinite(v) else _bad("correct_threshold", v, "finite")
    ),
    "rest_select": lambda v: _choice(REST_SELECT, v, "rest_select"),
    "aggregation": lambda v: _choice(clipped.AGGREGATIONS, v, "aggregation"),
    "adv_norm": lambda v: _choice(clipped.ADVANTAGES, v, "adv_norm"),
    "clip_low": lambda v: (
        None if math.isfinite(v) and 0 <= v <= 1 else _bad("clip_low", v, "a number in [0, 1]")
    ),
    "clip_high": _nonneg("clip_high"),
    "adv_eps": _nonneg("adv_eps"),
    "kl_coef": _nonneg("kl_coef"),
}


def _bad(field, value, want):
    raise ValueError(f"algo.loss.{field}={value!r} is invalid; set algo.loss.{field} to {want}")


def loss_options(cfg: LossConfig) -> dict:
    """Keyword options for `LOSSES[cfg.name]`, validated: `LOSSES[cfg.name](..., **opts)`.
    Options left None take the loss's LOSS_DEFAULTS."""
    fields = _choice(_OPTION_FIELDS, cfg.name, "name")
    defaults = LOSS_DEFAULTS.get(cfg.name, {})
    options = {f: defaults[f] if getattr(cfg, f) is None else getattr(cfg, f) for f in fields}
    for field, value in options.items():
        _CHECKS[field](value)
    return options
