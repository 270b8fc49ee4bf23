"""The token weights an RL update trains on (k15_jax/train/rl_step.py) against numpy
re-derivations: `algo.skip_zero_advantage` (groups whose K rewards are all equal) and
`algo.off_policy=exclude_old` (old partial-rollout segments leave the loss, report sec. 2.6.2).
Rows of group b are b*K .. b*K+K-1, as the loop lays them out."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from k15_jax.rl.config import AlgoConfig
from k15_jax.rl.losses import LOSSES, LossConfig, loss_options
from k15_jax.train import rl_step

IT = 5  # the current iteration
B, K, T, P = 6, 4, 14, 2  # groups, samples, slots, prompt tokens


def segmented_batch(seed):
    """Responses made of segments sampled by iterations IT-2, IT-1, IT (partial rollouts): each
    row's version steps up at random boundaries, most rows end in a current segment, one row
    is all old. Groups 0 and 1 have all-equal rewards (1 and 0), the others mixed ones.
    Version holds junk at prompt and padding slots (the response mask governs there)."""
    rng = np.random.default_rng(seed)
    length = rng.integers(3, T - P + 1, B * K)
    slot = np.arange(T)
    response = ((slot >= P) & (slot < P + length[:, None])).astype(float)
    version = np.full((B * K, T), IT)
    for n in range(B * K):
        cuts = np.sort(rng.integers(P, P + length[n] + 1, 2))  # up to 3 segments
        version[n, P : cuts[0]], version[n, cuts[0] : cuts[1]] = IT - 2, IT - 1
    version[9, P:] = IT - 1  # all old (a row of mixed group 2)
    version = np.where(response > 0, version, rng.integers(-1, IT + 2, (B * K, T)))
    rewards = rng.integers(0, 2, (B, K)).astype(float)
    rewards[0], rewards[1] = 1.0, 0.0
    rewards[2:, 0], rewards[2:, 1] = 1.0, 0.0  # mixed
    rollout = -rng.exponential(1.0, (B * K, T))
    trainer = rollout + 0.1 * rng.standard_normal((B * K, T))
    logp = trainer + 0.3 * rng.standard_normal((B * K, T))  # pi_theta after some steps
    return response, version, rewards, rollout, trainer, logp


def np_loss_mask(response, rewards, skip):
    """Response tokens; with skip, none of a group whose K rewards are all the same."""
    out = np.zeros_like(response)
    for b in range(B):
        signal = len(set(rewards[b].tolist())) > 1
        for j in range(K):
            if signal or not skip:
                out[b * K + j] = response[b * K + j] > 0
    return out


def np_md_grad(logp, ref, rewards, w, tau):
    """d L / d logp of L = mean_{b,j} (r - rbar - tau d)^2, d = sum_t w (logp - ref)."""
    d = (w * (logp - ref)).reshape(B, K, T).sum(-1)
    residual = rewards - rewards.mean(-1, keepdims=True) - tau * d
    return (-2 * tau * residual.reshape(B * K, 1) * w / (B * K)), residual


def loss_grad(name, logp, ref, rewards, w, **over):
    """Gradient w.r.t. logp [N, T] of LOSSES[name] on [B, K, T], as rl_step.make_update calls
    it, with the loss's default options."""
    opts = loss_options(LossConfig(name=name, **over))
    shape = lambda x: jnp.asarray(x).reshape(B, K, T)
    f = lambda lp: LOSSES[name](shape(lp), shape(ref), jnp.asarray(rewards), shape(w), **opts)[0]
    return np.asarray(jax.grad(f)(jnp.asarray(logp)))


@pytest.mark.parametrize("seed", [0, 1])
def test_skip_zero_advantage_drops_exactly_the_all_equal_groups(seed):
    response, _, rewards, _, ref, logp = segmented_batch(seed)
    flat = np.repeat(np.ptp(rewards, axis=1) == 0, K)  # rows of all-equal groups
    for skip in (True, False):
        mask = rl_step.loss_mask(response, rewards, AlgoConfig(skip_zero_advantage=skip))
        np.testing.assert_array_equal(mask, np_loss_mask(response, rewards, skip))
        with jax.enable_x64(True):
            g = loss_grad("mirror_descent", logp, ref, rewards, mask, tau=0.5)
        want, _ = np_md_grad(logp, ref, rewards, mask, 0.5)
        np.testing.assert_allclose(g, want, rtol=1e-10, atol=1e-15)
        if skip:  # no value, no gradient from the all-equal groups
            assert not np.any(g[flat]) and not np.any(mask[flat])
        else:  # the tau d^2 regulariser acts on them once pi_theta != pi_theta_i
            assert np.all(np.abs(g[flat]).sum(-1) > 0)
        assert np.any(g[~flat])  # mixed groups train either way


def test_skip_zero_advantage_in_rest_is_the_batch_without_those_groups():
    """ReST with skip on equals ReST on the batch with the all-equal groups deleted; off,
    the all-correct group 0 is fitted too."""
    response, _, rewards, _, ref, logp = segmented_batch(2)
    shape = lambda x: x.reshape(B, K, T)

    def np_rest(rows, groups):
        seq = (response[rows] * logp[rows]).sum(-1)
        kept = rewards[groups].ravel() >= 0.5
        return -seq[kept].sum() / max(kept.sum(), 1)

    mixed = np.flatnonzero(np.ptp(rewards, axis=1) > 0)
    rows = (mixed[:, None] * K + np.arange(K)).ravel()
    with jax.enable_x64(True):
        for skip, want in (
            (True, np_rest(rows, mixed)),
            (False, np_rest(slice(None), slice(None))),
        ):
            mask = rl_step.loss_mask(response, rewards, AlgoConfig(skip_zero_advantage=skip))
            got, _ = LOSSES["rest"](
                shape(logp),
                shape(ref),
                rewards,
                shape(mask),
                **loss_options(LossConfig(name="rest")),
            )
            np.testing.assert_allclose(got, want, rtol=1e-12)
    assert np_rest(rows, mixed) != pytest.approx(np_rest(slice(None), slice(None)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exclude_old_zeroes_old_segments_and_their_gradient(seed):
    """Default algo (exclude_old): weight 1 on this iteration's counted tokens, exactly 0 on
    old segments, and every loss's gradient w.r.t. log-probs at old positions is exactly 0."""
    response, version, rewards, rollout, trainer, logp = segmented_batch(seed)
    cfg = AlgoConfig()
    assert cfg.off_policy == "exclude_old"
    mask = rl_step.loss_mask(response, rewards, cfg)
    with jax.enable_x64(True):
        w, m = rl_step.make_weights(cfg)(mask, trainer, rollout, version, IT)
    w = np.asarray(w)
    counted = np_loss_mask(response, rewards, True) > 0
    old, fresh = counted & (version != IT), counted & (version == IT)
    assert old.sum() > 10 and fresh.sum() > 10 and (old & (version == IT - 2)).any()
    np.testing.assert_array_equal(w, fresh.astype(float))  # 0 old, 1 current, 0 elsewhere
    assert float(m["offpolicy/old_frac"]) == pytest.approx(old.sum() / counted.sum())
    with jax.enable_x64(True):
        grads = {name: loss_grad(name, logp, trainer, rewards, w) for name in LOSSES}
    for name, g in grads.items():
        assert not np.any(g[old]), name  # exactly zero, every loss
        assert np.all(np.isfinite(g)), name
    want, _ = np_md_grad(logp, trainer, rewards, w, LossConfig().tau)
    np.testing.assert_allclose(grads["mirror_descent"], want, rtol=1e-10, atol=1e-15)
    assert np.any(grads["mirror_descent"][fresh])


def test_no_reset_optimizer_option():
    """The optimizer state is fresh every iteration, always (sec. 2.3.2); the old
    algo.reset_optimizer switch is gone and must not come back unhonoured."""
    assert "reset_optimizer" not in {f.name for f in dataclasses.fields(AlgoConfig)}


@pytest.mark.parametrize("skip", [True, False])
def test_loss_mask_is_a_writable_copy(skip):
    """The update zeroes the padding rows of the mask in place: with either setting the mask
    must be a fresh writable array, also when the response mask is a read-only JAX view."""
    response_mask = np.asarray(jnp.ones((4, 3), jnp.float32))  # read-only, as from a device
    rewards = np.array([[0.0, 1.0], [1.0, 1.0]], np.float32)
    cfg = dataclasses.replace(AlgoConfig(), skip_zero_advantage=skip)
    mask = rl_step.loss_mask(response_mask, rewards, cfg)
    mask[2:] = 0.0  # what iteration.update does to the padding rows
    np.testing.assert_array_equal(response_mask, np.ones((4, 3)))
