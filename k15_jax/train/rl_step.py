"""One RL iteration's policy update (report sec. 2.3.2): M optimizer steps on a batch.

The params at the start of the iteration are pi_theta_i: `reference_logprobs` recomputes
the sampled tokens' log-probs under them (the trainer's numerics). The engine's own log-probs
are compared to them as a metric and, with `algo.off_policy=tis|mask`, correct the token
weights (`make_weights`, k15_jax/rl/off_policy.py). The optimizer state is created fresh for
every iteration (the report resets it; `iteration.update` calls `optimizer.init` each time).
"""

import jax
import numpy as np
import optax

from k15_jax.model.config import ModelConfig
from k15_jax.model.logprobs import accumulated_grads, token_logprobs
from k15_jax.rl import filters, off_policy
from k15_jax.rl.config import AlgoConfig
from k15_jax.rl.losses import LOSSES, loss_options


def loss_mask(response_mask, rewards, cfg: AlgoConfig) -> np.ndarray:
    """Tokens that count in the loss [N, T]: response tokens, in groups with a reward signal
    if `skip_zero_advantage`. Old segments are left out (or reweighted) by `make_weights`."""
    mask = np.array(response_mask, np.float32)  # a copy: the caller zeroes padding rows
    if cfg.skip_zero_advantage:
        B, K = rewards.shape
        mixed = np.ptp(rewards, axis=1) > 0  # [B]
        mask = mask * np.repeat(mixed, K)[:, None]
    return mask


def keep_groups(rollouts, rewards, n: int, K: int):
    """The n groups the update sees (filters.mixed_groups_first: DAPO's dynamic sampling),
    padded with masked rows to n groups. rewards [G, K] of the G finished groups.
    Returns (rollouts [n K rows], kept group indices)."""
    keep = filters.mixed_groups_first(rewards, n)
    rows = (keep[:, None] * K + np.arange(K)).ravel()
    take = np.concatenate([rows, np.zeros((n - len(keep)) * K, np.int64)])  # filler: row 0
    picked = jax.tree.map(lambda x: np.asarray(x)[take], rollouts)
    real = (np.arange(n * K) < rows.size)[:, None]
    return picked.replace(response_mask=picked.response_mask * real), keep


def make_weights(cfg: AlgoConfig):
    """Jitted (mask, trainer_logp, rollout_logp, version [N, T], iteration) -> (token weights
    [N, T], metrics): `algo.off_policy` applied to the loss mask (k15_jax/rl/off_policy.py)."""
    off_policy.check(cfg.off_policy, cfg.importance)
    return jax.jit(lambda *args: off_policy.token_weights(cfg.off_policy, *args, cfg.importance))


def make_reference_logprobs(model_cfg: ModelConfig):
    """Jitted (params, tokens [N, T], images [N, M, P, C] or None) -> log pi_theta_i [N, T]."""
    return jax.jit(
        lambda params, tokens, images=None: token_logprobs(params, model_cfg, tokens, images=images)
    )


# Metrics also logged at the last of the M steps, where the policy has moved from pi_theta_i.
_LAST = {"clip_frac", "ratio_mean", "kl_k3", "abs_log_ratio"}


def make_optimizer(cfg: AlgoConfig) -> optax.GradientTransformation:
    """Adam with fresh moments every iteration (sec. 2.3.2: the optimizer state is reset)."""
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.lr))


def make_loss_of_logp(cfg: AlgoConfig):
    """(logp, ref_logp, mask [N, T], rewards [B, K]) -> (loss, metrics): algo.loss on rows
    reshaped to [B, K, T]."""
    loss_fn = LOSSES[cfg.loss.name]
    options = loss_options(cfg.loss)

    def loss_of_logp(logp, ref_logp, rewards, mask):
        shape = (*rewards.shape, logp.shape[1])  # [B, K, T]
        return loss_fn(
            logp.reshape(shape), ref_logp.reshape(shape), rewards, mask.reshape(shape), **options
        )

    return loss_of_logp


def apply_step(optimizer, params, opt_state, loss, metrics, grads):
    """One optimizer step from a loss and its gradient -> (params, opt_state, metrics)."""
    updates, opt_state = optimizer.update(grads, opt_state, params)
    metrics = {**metrics, "loss": loss, "grad_norm": optax.global_norm(grads)}
    return optax.apply_updates(params, updates), opt_state, metrics


def step_metrics(first: dict, last: dict) -> dict:
    """The logged figures of the M steps: every metric at the first step, the loss and the
    _LAST ratios at the last (at step 0 pi_theta = pi_theta_i: ratios are 1)."""
    out = {f"train/{k}": v for k, v in first.items()}
    out["train/loss_last"] = last["loss"]
    for k in _LAST & set(last):
        out[f"train/{k}_last"] = last[k]
    return out


def make_value_and_grad(model_cfg: ModelConfig, cfg: AlgoConfig):
    """(params, tokens, ref_logp, rewards, mask, images) -> ((loss, metrics), grads);
    cfg.microbatches > 1 accumulates the gradient (`model.logprobs.accumulated_grads`)."""
    loss_of_logp = make_loss_of_logp(cfg)

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

    return value_and_grad


def scan_steps(value_and_grad, optimizer, params, opt_state, batch: tuple, steps: int):
    """`steps` optimizer steps on one batch (tokens, ref_logp, rewards, mask, images) in a
    lax.scan (one compiled body for any M). Returns (params, opt_state, stacked metrics)."""

    def one(carry, _):
        params, opt_state = carry
        (loss, metrics), grads = value_and_grad(params, *batch)
        params, opt_state, metrics = apply_step(optimizer, params, opt_state, loss, metrics, grads)
        return (params, opt_state), metrics

    (params, opt_state), metrics = jax.lax.scan(one, (params, opt_state), length=steps)
    return params, opt_state, metrics


def make_update(model_cfg: ModelConfig, cfg: AlgoConfig):
    """Jitted (params, opt_state, tokens, ref_logp, rewards, mask[, images]) -> (params,
    opt_state, m).

    tokens, ref_logp, mask: [N, T] with N = B*K; rewards [B, K]; images [N, M, P, C]
    (model.vision; None for text) as the rollout's prefill saw them. Runs M steps in a scan;
    cfg.microbatches > 1 accumulates each step's gradient (`model.logprobs.accumulated_grads`).
    The main job runs `rl_fused.make_fused_update` (the same steps, sharing the reference
    forward); this is the plain form, and its oracle in tests.
    """
    optimizer = make_optimizer(cfg)
    value_and_grad = make_value_and_grad(model_cfg, cfg)

    @jax.jit
    def update(params, opt_state, tokens, ref_logp, rewards, mask, images=None):
        batch = (tokens, ref_logp, rewards, mask, images)
        params, opt_state, metrics = scan_steps(
            value_and_grad, optimizer, params, opt_state, batch, cfg.updates_per_iteration
        )
        first = jax.tree.map(lambda v: v[0], metrics)
        last = jax.tree.map(lambda v: v[-1], metrics)
        return params, opt_state, step_metrics(first, last)

    return update, optimizer


def logprob_gap(engine_logp, trainer_logp, response_mask, version=None, iteration=0) -> dict:
    """Rollout-vs-trainer log-prob gap |log pi_rollout - log pi_theta_i| on response tokens:
    mean and max over all, and per token age (iteration - version: 0 = sampled by this
    iteration's params, where only numerics differ; 1, 2+ = older params, partial rollouts),
    with each age's share of the tokens and the share of trajectories that span iterations."""
    m = np.asarray(response_mask) > 0
    gap = np.abs(np.asarray(engine_logp) - np.asarray(trainer_logp))
    out = {"rollout/logp_gap_mean": 0.0, "rollout/logp_gap_max": 0.0}
    if m.any():
        out = {
            "rollout/logp_gap_mean": float(gap[m].mean()),
            "rollout/logp_gap_max": float(gap[m].max()),
        }
    if version is None:
        return out
    age = iteration - np.asarray(version)
    rows = m.any(axis=1)  # trajectories sampled over two or more iterations (partial rollouts)
    out["rollout/spanning_frac"] = (
        float(((age >= 1) & m).any(axis=1)[rows].mean()) if rows.any() else 0.0
    )
    for name, sel in (("0", age == 0), ("1", age == 1), ("2plus", age >= 2)):
        sel = sel & m
        out[f"rollout/logp_gap_age{name}_frac"] = float(sel.sum() / max(m.sum(), 1))
        if sel.any():
            out[f"rollout/logp_gap_age{name}_mean"] = float(gap[sel].mean())
            out[f"rollout/logp_gap_age{name}_max"] = float(gap[sel].max())
    return out


def group_stats(rewards: np.ndarray, correct: np.ndarray) -> dict:
    """Share of groups with mixed outcomes (the only ones with a learning signal)."""
    return {
        "train/mixed_groups": float(np.mean(np.ptp(rewards, axis=1) > 0)),
        "train/all_wrong_groups": float(np.mean(correct.max(axis=1) == 0)),
        "train/all_right_groups": float(np.mean(correct.min(axis=1) == 1)),
    }
