"""One RL iteration's policy update (report sec. 2.3.2): M optimizer steps on a batch.

The params at the start of the iteration are pi_theta_i: `reference_logprobs` recomputes
the sampled tokens' log-probs under them (the trainer's numerics; the engine's own log-probs
are compared to them as a metric). The optimizer state is created fresh for every
iteration (the report resets it; `iteration.update` calls `optimizer.init` each time).
"""

import jax
import numpy as np
import optax

from k15_jax.model.config import ModelConfig
from k15_jax.model.logprobs import accumulated_grads, token_logprobs
from k15_jax.rl.config import AlgoConfig
from k15_jax.rl.losses import LOSSES, loss_options


def loss_mask(response_mask, version, rewards, iteration: int, cfg: AlgoConfig) -> np.ndarray:
    """Tokens that count in the loss [N, T]: response tokens, of this iteration if
    `exclude_old_segments`, in groups with a reward signal if `skip_zero_advantage`."""
    mask = np.asarray(response_mask, np.float32)
    if cfg.exclude_old_segments:
        mask = mask * (np.asarray(version) == iteration)
    if cfg.skip_zero_advantage:
        B, K = rewards.shape
        mixed = np.ptp(rewards, axis=1) > 0  # [B]
        mask = mask * np.repeat(mixed, K)[:, None]
    return mask


def make_reference_logprobs(model_cfg: ModelConfig):
    """Jitted (params, tokens [N, T], images [N, M, P, C] or None) -> log pi_theta_i [N, T]."""
    return jax.jit(
        lambda params, tokens, images=None: token_logprobs(params, model_cfg, tokens, images=images)
    )


def make_update(model_cfg: ModelConfig, cfg: AlgoConfig):
    """Jitted (params, opt_state, tokens, ref_logp, rewards, mask[, images]) -> (params,
    opt_state, m).

    tokens, ref_logp, mask: [N, T] with N = B*K; rewards [B, K]; images [N, M, P, C]
    (model.vision; None for text) as the rollout's prefill saw them. Runs M steps in a scan;
    cfg.microbatches > 1 accumulates each step's gradient (`model.logprobs.accumulated_grads`).
    """
    loss_fn = LOSSES[cfg.loss.name]
    options = loss_options(cfg.loss)
    # Adam with fresh moments every iteration (sec. 2.3.2: the optimizer state is reset)
    optimizer = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.lr))

    def loss_of_logp(logp, ref_logp, rewards, mask):
        shape = (*rewards.shape, logp.shape[1])  # [B, K, T]
        return loss_fn(
            logp.reshape(shape), ref_logp.reshape(shape), rewards, mask.reshape(shape), **options
        )

    def objective(params, tokens, ref_logp, rewards, mask, images):
        logp = token_logprobs(params, model_cfg, tokens, images=images)
        return loss_of_logp(logp, ref_logp, rewards, mask)

    def value_and_grad(params, tokens, ref_logp, rewards, mask, images):
        if cfg.microbatches == 1:
            return jax.value_and_grad(objective, has_aux=True)(
                params, tokens, ref_logp, rewards, mask, images
            )
        return accumulated_grads(
            params,
            lambda p, tok, img: token_logprobs(p, model_cfg, tok, images=img),
            lambda lp: loss_of_logp(lp, ref_logp, rewards, mask),
            (tokens, images),
            cfg.microbatches,
        )

    @jax.jit
    def update(params, opt_state, tokens, ref_logp, rewards, mask, images=None):
        def one(carry, _):
            params, opt_state = carry
            (loss, metrics), grads = value_and_grad(params, tokens, ref_logp, rewards, mask, images)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            metrics = {**metrics, "loss": loss, "grad_norm": optax.global_norm(grads)}
            return (optax.apply_updates(params, updates), opt_state), metrics

        (params, opt_state), metrics = jax.lax.scan(
            one, (params, opt_state), length=cfg.updates_per_iteration
        )
        first = {f"train/{k}": v[0] for k, v in metrics.items()}
        first["train/loss_last"] = metrics["loss"][-1]
        return params, opt_state, first

    return update, optimizer


def logprob_gap(engine_logp, trainer_logp, response_mask) -> dict:
    """Rollout-vs-trainer log-prob mismatch on response tokens (a bf16 instability signal)."""
    m = np.asarray(response_mask) > 0
    if not m.any():
        return {"rollout/logp_gap_mean": 0.0, "rollout/logp_gap_max": 0.0}
    gap = np.abs(np.asarray(engine_logp) - np.asarray(trainer_logp))[m]
    return {"rollout/logp_gap_mean": float(gap.mean()), "rollout/logp_gap_max": float(gap.max())}


def group_stats(rewards: np.ndarray, correct: np.ndarray) -> dict:
    """Share of groups with mixed outcomes (the only ones with a learning signal)."""
    return {
        "train/mixed_groups": float(np.mean(np.ptp(rewards, axis=1) > 0)),
        "train/all_wrong_groups": float(np.mean(correct.max(axis=1) == 0)),
        "train/all_right_groups": float(np.mean(correct.min(axis=1) == 1)),
    }
