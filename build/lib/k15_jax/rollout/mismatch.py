"""Rollout/trainer log-prob mismatch (report sec. 2.6.3 colocation; a bf16 stability metric).

The engine's log-probs of the sampled tokens (decode path, KV cache) and the trainer's
recomputation (full forward, `token_logprobs`) under the same params should agree; in bf16
they drift, which silently biases importance ratios. Logged every iteration.
"""

import jax
import jax.numpy as jnp

from k15_jax.model.config import ModelConfig
from k15_jax.model.logprobs import token_logprobs
from k15_jax.rollout.types import Rollouts


@jax.jit
def mismatch_metrics(engine_logp: jax.Array, trainer_logp: jax.Array, mask: jax.Array) -> dict:
    """Differences d = engine - trainer on masked tokens. All [N, T]; mask float.

    Returns mean |d|, max |d|, mean d, and KL(engine || trainer) estimated on the sampled
    tokens with the non-negative k3 estimator E[exp(-d) - 1 + d] (tokens come from the
    engine's policy), plus the token count.
    """
    d = (engine_logp - trainer_logp) * mask
    n = jnp.maximum(jnp.sum(mask), 1.0)
    k3 = (jnp.exp(-d) - 1.0 + d) * mask
    return {
        "logp_mismatch_mean_abs": jnp.sum(jnp.abs(d)) / n,
        "logp_mismatch_max_abs": jnp.max(jnp.abs(d)),
        "logp_mismatch_mean": jnp.sum(d) / n,
        "logp_mismatch_kl_k3": jnp.sum(k3) / n,
        "logp_mismatch_tokens": jnp.sum(mask),
    }


def logprob_mismatch(
    params, cfg: ModelConfig, rollouts: Rollouts, *, version: int | None = None
) -> dict:
    """Engine-vs-trainer log-prob differences on response tokens, as a dict of floats.

    Compare under the params that sampled the tokens: `version` restricts the comparison to
    tokens produced in that iteration (with partial rollouts, older tokens come from older
    params); None uses every response token.
    """
    trainer = jax.jit(token_logprobs, static_argnums=1)(params, cfg, rollouts.tokens)
    mask = rollouts.response_mask
    if version is not None:
        mask = mask * (rollouts.version == version)
    out = mismatch_metrics(rollouts.logp, trainer, mask)
    return {k: float(v) for k, v in out.items()}
