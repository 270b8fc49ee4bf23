"""Clipped importance-ratio policy losses run in 2025-26, beside k1.5's (docs/losses.md).

GRPO (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300), DAPO (Yu et al. 2025, arXiv
2503.14476), GSPO (Zheng et al. 2025, arXiv 2507.18071) and CISPO (MiniMax 2025, MiniMax-M1,
arXiv 2506.13585). Each is a pure function with the signature of `losses.LOSSES`:

    fn(logp, ref_logp, rewards, mask, *, aggregation, clip_low, clip_high, adv_norm, adv_eps,
       kl_coef) -> (loss, metrics)

    logp      [B, K, T]  log pi_theta(token)     (trained; gets gradient)
    ref_logp  [B, K, T]  log pi_old(token)       (the params at the start of the iteration,
                                                  pi_theta_i; a constant)
    rewards   [B, K]                             (a constant)
    mask      [B, K, T]  token weights (> 0 counts; the value scales the token's term: 1, or
                         an importance weight of k15_jax/rl/off_policy.py)

Every arm builds a per-token loss l[b,j,t]; the named tables below turn rewards into
advantages (ADVANTAGES) and per-token losses into one number (AGGREGATIONS), so GRPO and DAPO
are the same function with other options (`losses.LOSS_DEFAULTS` holds each paper's values).
With `kl_coef > 0` the k3 estimate of KL(pi_theta || pi_old) is added per token,
    k3 = exp(log pi_old - log pi_theta) - (log pi_old - log pi_theta) - 1,
the only reference policy this loop holds (GRPO's paper regularises towards the SFT model).
"""

import jax
import jax.numpy as jnp

from k15_jax.rl.common import choice, clean_log_ratio, zero_advantage_fraction


def _group_std(rewards, eps):
    """GRPO's advantage: (r - mean_j r) / (std_j r + eps), population std over the K samples."""
    mean = jnp.mean(rewards, axis=-1, keepdims=True)
    return (rewards - mean) / (jnp.std(rewards, axis=-1, keepdims=True) + eps)


def _group_mean(rewards, eps):
    """Dr. GRPO's advantage (Liu et al. 2025, arXiv 2503.20783): r - mean_j r, no std."""
    del eps
    return rewards - jnp.mean(rewards, axis=-1, keepdims=True)


# Advantage per response from the K rewards of its group (option `adv_norm`). [B, K] -> [B, K]
ADVANTAGES = {"group_std": _group_std, "group_mean": _group_mean}


def _token_mean(per_token, mask):
    """DAPO's token-level aggregation: sum_{b,j,t} w l / #counted tokens of the whole batch."""
    valid = mask > 0
    total = jnp.sum(jnp.where(valid, mask, 0) * jnp.where(valid, per_token, 0))
    return total / jnp.maximum(jnp.sum(valid), 1)


def _per_sequence(per_token, mask):
    valid = mask > 0
    total = jnp.sum(jnp.where(valid, mask, 0) * jnp.where(valid, per_token, 0), axis=-1)
    count = jnp.sum(valid, axis=-1)
    return total, count, jnp.maximum(jnp.sum(count > 0), 1)


def _seq_mean(per_token, mask):
    """GRPO's aggregation: mean over responses of (sum_t w l / |y|), responses with counted
    tokens only."""
    total, count, n_seq = _per_sequence(per_token, mask)
    return jnp.sum(total / jnp.maximum(count, 1)) / n_seq


def _seq_sum(per_token, mask):
    """Dr. GRPO's aggregation: mean over responses of sum_t w l (no length normalisation)."""
    total, _, n_seq = _per_sequence(per_token, mask)
    return jnp.sum(total) / n_seq


# Per-token loss [B, K, T] and token weights -> scalar loss (option `aggregation`).
AGGREGATIONS = {"token_mean": _token_mean, "seq_mean": _seq_mean, "seq_sum": _seq_sum}


def _k3(log_ratio):
    """k3 estimate of KL(pi_theta || pi_old) per token, from log(pi_theta / pi_old)."""
    return jnp.exp(-log_ratio) + log_ratio - 1.0


def _finish(per_token, log_ratio, advantage, rewards, mask, options, extra):
    """Adds the KL term, aggregates, and collects the metrics shared by every arm."""
    valid = mask > 0
    kl = jnp.where(valid, _k3(log_ratio), 0)
    per_token = per_token + options["kl_coef"] * kl
    loss = choice(AGGREGATIONS, options["aggregation"], "aggregation")(per_token, mask)
    n = jnp.maximum(jnp.sum(valid), 1)
    ratio = jnp.where(valid, jnp.exp(jax.lax.stop_gradient(log_ratio)), 0)
    metrics = {
        "reward_mean": jnp.mean(rewards),
        "adv_abs_mean": jnp.mean(jnp.abs(advantage)),
        "zero_adv_frac": zero_advantage_fraction(rewards),
        "ratio_mean": jnp.sum(ratio) / n,
        "kl_k3": jax.lax.stop_gradient(jnp.sum(kl) / n),
        **{k: jax.lax.stop_gradient(v) for k, v in extra.items()},
    }
    return loss, metrics


def _prepare(logp, ref_logp, rewards, mask, adv_norm, adv_eps):
    rewards = jax.lax.stop_gradient(rewards)
    log_ratio = clean_log_ratio(logp, jax.lax.stop_gradient(ref_logp), mask)
    advantage = choice(ADVANTAGES, adv_norm, "adv_norm")(rewards, adv_eps)
    return rewards, log_ratio, advantage


def _outside(ratio, valid, clip_low, clip_high):
    """Fraction of counted tokens (or responses) whose ratio lies outside [1-low, 1+high]."""
    out = valid & ((ratio < 1 - clip_low) | (ratio > 1 + clip_high))
    return jnp.sum(out) / jnp.maximum(jnp.sum(valid), 1)


def clipped_token_loss(logp, ref_logp, rewards, mask, **options):
    """GRPO / DAPO: PPO's clipped surrogate per token with a group-relative advantage.

        rho[b,j,t] = pi_theta / pi_old                       (per token)
        l[b,j,t]   = -min(rho A[b,j], clip(rho, 1 - clip_low, 1 + clip_high) A[b,j])

    GRPO (Shao et al. 2024, eq. 3): A = group_std, aggregation seq_mean, clip 0.2 / 0.2.
    DAPO (Yu et al. 2025, eq. 8): the same with clip-higher 0.2 / 0.28 and token_mean
    aggregation; its overlong reward shaping (`penalties.overlong_penalty`) and dynamic sampling
    (`filters.mixed_groups_first`) act on the batch, not here. Shapes: module docstring.
    """
    rewards, log_ratio, advantage = _prepare(
        logp, ref_logp, rewards, mask, options["adv_norm"], options["adv_eps"]
    )
    lo, hi = options["clip_low"], options["clip_high"]
    rho = jnp.exp(log_ratio)
    A = advantage[..., None]
    per_token = -jnp.minimum(rho * A, jnp.clip(rho, 1 - lo, 1 + hi) * A)
    extra = {"clip_frac": _outside(jax.lax.stop_gradient(rho), mask > 0, lo, hi)}
    return _finish(per_token, log_ratio, advantage, rewards, mask, options, extra)


def sequence_ratio_loss(logp, ref_logp, rewards, mask, **options):
    """GSPO (Zheng et al. 2025, eq. 5-7): a length-normalised sequence ratio, clipped per response.

        s[b,j]   = exp( 1/|y_bj| sum_t (log pi_theta - log pi_old) )     (counted tokens)
        L[b,j]   = -min(s A[b,j], clip(s, 1 - clip_low, 1 + clip_high) A[b,j])
        l[b,j,t] = L[b,j] on every counted token

    so with aggregation seq_mean the loss is mean_{b,j} wbar[b,j] L[b,j], wbar the mean token
    weight of the response (exact for sequence-level importance weights). The paper's ranges
    are 3e-4 / 4e-4. A response of one token gives GRPO's per-token clipping.
    """
    rewards, log_ratio, advantage = _prepare(
        logp, ref_logp, rewards, mask, options["adv_norm"], options["adv_eps"]
    )
    lo, hi = options["clip_low"], options["clip_high"]
    valid = mask > 0
    count = jnp.sum(valid, axis=-1)
    s = jnp.exp(jnp.sum(log_ratio, axis=-1) / jnp.maximum(count, 1))  # [B, K]
    seq = -jnp.minimum(s * advantage, jnp.clip(s, 1 - lo, 1 + hi) * advantage)
    per_token = jnp.broadcast_to(seq[..., None], mask.shape)
    extra = {"clip_frac": _outside(jax.lax.stop_gradient(s), count > 0, lo, hi)}
    return _finish(per_token, log_ratio, advantage, rewards, mask, options, extra)


def clipped_weight_loss(logp, ref_logp, rewards, mask, **options):
    """CISPO (MiniMax-M1, eq. 4-5): a clipped, stop-gradient importance weight on log pi.

        rhat[b,j,t] = sg( clip(pi_theta / pi_old, 1 - clip_low, 1 + clip_high) )
        l[b,j,t]    = -rhat A[b,j] log pi_theta(token)

    The gradient flows through log pi_theta only, so no token's gradient is dropped (PPO's
    clip zeroes it). The paper sets no lower bound (clip_low 1: 1 - 1 = 0) and gives no value
    for clip_high; we take 4. Aggregation token_mean, as in the paper.
    """
    rewards, log_ratio, advantage = _prepare(
        logp, ref_logp, rewards, mask, options["adv_norm"], options["adv_eps"]
    )
    lo, hi = options["clip_low"], options["clip_high"]
    valid = mask > 0
    rhat = jax.lax.stop_gradient(jnp.clip(jnp.exp(log_ratio), 1 - lo, 1 + hi))
    per_token = -rhat * advantage[..., None] * jnp.where(valid, logp, 0)
    extra = {"clip_frac": _outside(jax.lax.stop_gradient(jnp.exp(log_ratio)), valid, lo, hi)}
    return _finish(per_token, log_ratio, advantage, rewards, mask, options, extra)
