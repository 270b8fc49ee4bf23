"""Length penalty of k1.5 (report sec. 2.3.3) and its warm-up schedule.

The reward step adds `weight * length_penalty(lengths, correct)` to the task reward, with
`weight = length_penalty_weight(iteration, ...)` (k15_jax/rewards/score.py; its config holds the
weight and warm-up: the report adds len_reward with weight 1 after an unspecified warm-up).
Shapes: B prompts, K samples per prompt.
"""

import jax.numpy as jnp


def length_penalty(lengths, correct):
    """len_reward of sec. 2.3.3, per group of K responses to one prompt.

        lambda[b,j] = 0.5 - (len[b,j] - min_j len[b,j]) / (max_j len[b,j] - min_j len[b,j])
        len_reward  = lambda if correct else min(0, lambda)

    and len_reward = 0 for the whole group when max_len == min_len. Values lie in [-0.5, 0.5]:
    the shortest response gets 0.5 (if correct), the longest -0.5; incorrect responses are never
    rewarded for being short.
    Args: lengths [B, K] (tokens, int or float); correct [B, K] (bool or nonzero = correct).
    Returns: [B, K] float32.
    """
    lengths = jnp.asarray(lengths).astype(jnp.float32)
    correct = jnp.asarray(correct).astype(bool)
    min_len = jnp.min(lengths, axis=-1, keepdims=True)
    max_len = jnp.max(lengths, axis=-1, keepdims=True)
    span = max_len - min_len
    # Same lambda as (max + min - 2 len) / (2 span): exactly +-0.5 at the extremes in float32
    # (0.5 - x/span may round past -0.5); the clip guards non-integer lengths. Divide by 1
    # where span == 0 so that no 0/0 is formed.
    safe_span = jnp.where(span > 0, span, 1.0)
    lam = jnp.clip((max_len + min_len - 2 * lengths) / (2 * safe_span), -0.5, 0.5)
    lam = jnp.where(span > 0, lam, 0.0)
    return jnp.where(correct, lam, jnp.minimum(lam, 0.0))


def length_penalty_weight(iteration, *, warmup_iterations, weight):
    """Weight of the length penalty at an RL iteration (sec. 2.3.3 warm-up).

        w(i) = 0 for i < warmup_iterations, weight afterwards

    `iteration` may be a traced integer (no Python branching). Returns [] float32.
    """
    before = jnp.asarray(iteration) < warmup_iterations
    return jnp.where(before, 0.0, weight).astype(jnp.float32)


def overlong_penalty(lengths, *, max_len, cache):
    """DAPO's soft overlong punishment (Yu et al. 2025, arXiv 2503.14476, eq. 13).

        R(len) = 0                                 len <= max_len - cache
                 ((max_len - cache) - len) / cache  max_len - cache < len <= max_len
                 -1                                 len > max_len

    A ramp from 0 to -1 over the last `cache` tokens before the length limit, added to the
    task reward. Args: lengths [B, K] (response tokens); max_len, cache > 0 with cache <=
    max_len. Returns [B, K] float32 in [-1, 0].
    """
    lengths = jnp.asarray(lengths).astype(jnp.float32)
    start = max_len - cache
    ramp = (start - lengths) / cache
    return jnp.where(lengths <= start, 0.0, jnp.where(lengths <= max_len, ramp, -1.0))
