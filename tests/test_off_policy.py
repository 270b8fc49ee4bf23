"""Off-policy token weights (k15_jax/rl/off_policy.py): hand-built stale tokens, a float64 numpy
re-derivation, and the weights reaching the losses; DAPO's overlong penalty and group filter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from k15_jax.rl import filters, losses, off_policy, penalties
from k15_jax.rl.off_policy import ImportanceConfig

IT = 7  # the current iteration


def stale_batch():
    """Two responses of 6 slots. Row 0: 2 tokens from iteration 5, 3 from 7, 1 pad; row 1: 4
    tokens from 6 and 7, 2 pads. ratio = pi_trainer / pi_rollout chosen per token."""
    ratio = np.array([[3.0, 0.4, 1.0, 1.5, 6.0, 1.0], [0.6, 2.5, 1.0, 0.8, 1.0, 1.0]])
    version = np.array([[5, 5, 7, 7, 7, -1], [6, 7, 7, 7, -1, -1]])
    mask = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]], np.float64)
    rollout = np.log(np.full(ratio.shape, 0.3))
    trainer = rollout + np.log(ratio)
    trainer[0, 5], rollout[1, 4] = np.nan, -np.inf  # junk at masked slots
    return mask, trainer, rollout, version, ratio


def weights(name, cfg=None, batch=None):
    mask, trainer, rollout, version, _ = batch or stale_batch()
    cfg = cfg or ImportanceConfig()
    fn = jax.jit(lambda *a: off_policy.token_weights(name, *a, cfg))
    w, m = fn(*(jnp.asarray(x, jnp.float32) for x in (mask, trainer, rollout)), version, IT)
    return np.asarray(w), {k: float(v) for k, v in m.items()}


def test_tis_applies_the_ratio_and_truncates_at_the_cap():
    w, m = weights("tis", ImportanceConfig(cap=2.0))
    want = np.array([[2.0, 0.4, 1.0, 1.5, 2.0, 0], [0.6, 2.0, 1.0, 0.8, 0, 0]])
    np.testing.assert_allclose(w, want, rtol=1e-6)
    assert m["offpolicy/changed_frac"] == pytest.approx(3 / 9)  # 3.0, 6.0, 2.5 truncated
    assert m["offpolicy/old_frac"] == pytest.approx(3 / 9)
    assert m["offpolicy/weight_max"] == pytest.approx(2.0)


def test_sequence_level_tis_uses_the_product_of_ratios():
    w, m = weights("tis", ImportanceConfig(cap=2.0, level="sequence"))
    _, _, _, _, ratio = stale_batch()
    row1 = np.prod(ratio[1, :4])  # 0.6 * 2.5 * 0.8 = 1.2: kept; row 0's 10.8 is capped
    np.testing.assert_allclose(w[0], [2.0] * 5 + [0], rtol=1e-6)
    np.testing.assert_allclose(w[1], [row1] * 4 + [0, 0], rtol=1e-5)
    assert m["offpolicy/changed_frac"] == pytest.approx(5 / 9)


def test_mask_drops_exactly_the_out_of_band_tokens():
    w, m = weights("mask", ImportanceConfig(mask_low=0.5, mask_high=2.0))
    keep = np.array([[0, 0, 1, 1, 0, 0], [1, 0, 1, 1, 0, 0]])
    np.testing.assert_array_equal(w, keep)
    assert m["offpolicy/changed_frac"] == pytest.approx(4 / 9)  # 3.0, 0.4, 6.0, 2.5


def test_exclude_old_and_none():
    w, m = weights("exclude_old")
    np.testing.assert_array_equal(w, [[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 0, 0]])
    assert m["offpolicy/changed_frac"] == pytest.approx(3 / 9)
    w, m = weights("none")
    mask = stale_batch()[0]
    np.testing.assert_array_equal(w, mask)
    assert m["offpolicy/changed_frac"] == 0.0 and m["offpolicy/weight_mean"] == 1.0


def np_weights(name, mask, trainer, rollout, version, cfg):
    valid = mask > 0
    delta = np.where(valid, trainer - rollout, 0.0)
    if cfg.level == "sequence":
        delta = np.broadcast_to(delta.sum(-1, keepdims=True), delta.shape)
    ratio = np.exp(delta)
    corr = {
        "none": np.ones_like(ratio),
        "exclude_old": (version == IT).astype(float),
        "tis": np.minimum(ratio, cfg.cap),
        "mask": ((ratio >= cfg.mask_low) & (ratio <= cfg.mask_high)).astype(float),
    }[name]
    return np.where(valid, mask * corr, 0.0)


@pytest.mark.parametrize("name", sorted(off_policy.OFF_POLICY))
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_random_batches_match_numpy(name, level):
    rng = np.random.default_rng(0)
    N, T = 6, 9
    mask = (rng.random((N, T)) < 0.7) * rng.uniform(0.5, 1.0, (N, T))
    mask[2] = 0.0  # a fully masked row
    rollout = -rng.exponential(1.0, (N, T))
    trainer = rollout + 0.4 * rng.standard_normal((N, T))
    version = rng.integers(IT - 2, IT + 1, (N, T))
    cfg = ImportanceConfig(level=level, cap=1.5, mask_low=0.7, mask_high=1.4)
    with jax.enable_x64(True):
        w, _ = off_policy.token_weights(name, mask, trainer, rollout, version, IT, cfg)
    want = np_weights(name, mask, trainer, rollout, version, cfg)
    np.testing.assert_allclose(np.asarray(w), want, rtol=1e-12, atol=1e-15)
    if name in ("tis", "mask"):
        assert np.any((want != mask) & (mask > 0))  # the correction changed some tokens


def test_weights_reach_mirror_descent_and_policy_gradient():
    """A token weight w scales the token's term: d = sum_t w (log pi - log pi_old) in the
    mirror-descent residual, and sum_t w log pi in the policy gradient."""
    rng = np.random.default_rng(1)
    B, K, T = 2, 3, 5
    logp = -rng.exponential(1.0, (B, K, T))
    ref = logp + 0.2 * rng.standard_normal((B, K, T))
    r = rng.integers(0, 2, (B, K)).astype(float)
    w = (rng.random((B, K, T)) < 0.8) * rng.uniform(0.0, 2.0, (B, K, T))
    tau = 0.5
    d = (w * (logp - ref)).sum(-1)
    md = np.mean((r - r.mean(-1, keepdims=True) - tau * d) ** 2)
    pg = -np.mean((r - r.mean(-1, keepdims=True)) * (w * logp).sum(-1))
    with jax.enable_x64(True):
        got_md, _ = losses.mirror_descent_loss(logp, ref, r, w, tau=tau)
        got_pg, _ = losses.policy_gradient_loss(logp, r, w)
    np.testing.assert_allclose(got_md, md, rtol=1e-12)
    np.testing.assert_allclose(got_pg, pg, rtol=1e-12)


def test_bad_options_name_the_key():
    with pytest.raises(ValueError, match="algo.off_policy"):
        off_policy.check("truncate", ImportanceConfig())
    with pytest.raises(ValueError, match="algo.importance.level"):
        off_policy.check("tis", ImportanceConfig(level="segment"))
    with pytest.raises(ValueError, match="algo.importance.cap"):
        off_policy.check("tis", ImportanceConfig(cap=0.0))
    with pytest.raises(ValueError, match="mask_low"):
        off_policy.check("mask", ImportanceConfig(mask_low=1.5))


def test_overlong_penalty_is_dapos_ramp():
    lengths = np.array([[10, 60, 61, 62, 63, 64, 65]])
    got = np.asarray(penalties.overlong_penalty(lengths, max_len=64, cache=4))
    want = [[0, 0, -0.25, -0.5, -0.75, -1.0, -1.0]]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_mixed_groups_first():
    r = np.array([[1, 1], [0, 1], [0, 0], [1, 0], [0, 0]], float)
    np.testing.assert_array_equal(filters.mixed_groups_first(r, 3), [1, 3, 0])
    np.testing.assert_array_equal(filters.mixed_groups_first(r, 1), [1])
    np.testing.assert_array_equal(filters.mixed_groups_first(r, 9), [1, 3, 0, 2, 4])
