"""Policy losses (k15_jax/rl/losses.py) against a float64 numpy re-derivation of the formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from k15_jax.rl import losses

# ---------------------------------------------------------------- numpy reference (float64)


def np_seq(x, mask, seq_reduce="sum"):
    valid = mask > 0
    total = np.where(valid, x, 0.0).sum(-1)
    if seq_reduce == "token_mean":
        return total / np.maximum(valid.sum(-1), 1)
    return total


def np_tau_log_z(r, tau, log_z):
    if log_z == "mean":
        return r.mean(-1, keepdims=True)
    m = r.max(-1, keepdims=True)
    return m + tau * np.log(np.mean(np.exp((r - m) / tau), -1, keepdims=True))


def np_md(logp, ref, r, mask, tau, log_z="mean", seq_reduce="sum", loss_scale="none"):
    d = np_seq(logp - ref, mask, seq_reduce)
    loss = np.mean((r - np_tau_log_z(r, tau, log_z) - tau * d) ** 2)
    return {"none": 1.0, "inv_tau": 1 / tau, "inv_2tau": 1 / (2 * tau)}[loss_scale] * loss, d


def np_pg(logp, r, mask, seq_reduce="sum"):
    return -np.mean((r - r.mean(-1, keepdims=True)) * np_seq(logp, mask, seq_reduce))


def np_rest(logp, r, mask, keep, seq_reduce="sum"):
    keep = keep & (mask > 0).any(-1)  # a response without counted tokens is never fit
    s = np_seq(logp, mask, seq_reduce)
    return -np.where(keep, s, 0.0).sum() / max(keep.sum(), 1)


def np_zero_adv(r):
    return np.mean([len(set(row.tolist())) == 1 for row in r])


def make_inputs(seed, B=3, K=4, T=5, binary=True, p_mask=0.7):
    rng = np.random.default_rng(seed)
    logp = -rng.exponential(1.0, (B, K, T))
    ref = logp + 0.3 * rng.standard_normal((B, K, T))
    r = rng.integers(0, 2, (B, K)).astype(float) if binary else rng.standard_normal((B, K))
    mask = (rng.random((B, K, T)) < p_mask).astype(float)
    return logp, ref, r, mask


def f32(*xs):
    return [jnp.asarray(x, jnp.float32) for x in xs]


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("log_z", ["mean", "logmeanexp"])
@pytest.mark.parametrize("seq_reduce", ["sum", "token_mean"])
@pytest.mark.parametrize("loss_scale", ["none", "inv_tau", "inv_2tau"])
def test_mirror_descent_matches_numpy(log_z, seq_reduce, loss_scale):
    logp, ref, r, mask = make_inputs(0, binary=False)
    tau = 0.7
    want, d = np_md(logp, ref, r, mask, tau, log_z, seq_reduce, loss_scale)
    opts = dict(tau=tau, log_z=log_z, seq_reduce=seq_reduce, loss_scale=loss_scale)
    loss, m = losses.mirror_descent_loss(*f32(logp, ref, r, mask), **opts)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(m["reward_mean"], r.mean(), rtol=1e-6)
    np.testing.assert_allclose(m["abs_log_ratio"], np.abs(d).mean(), rtol=1e-5)
    np.testing.assert_allclose(m["sq_log_ratio"], (d**2).mean(), rtol=1e-5)
    np.testing.assert_allclose(m["tau_log_z"], np_tau_log_z(r, tau, log_z).mean(), rtol=1e-5)
    assert m["zero_adv_frac"] == np_zero_adv(r)


@pytest.mark.parametrize("seq_reduce", ["sum", "token_mean"])
def test_policy_gradient_and_rest_match_numpy(seq_reduce):
    logp, ref, r, mask = make_inputs(1)
    pg, pg_m = losses.policy_gradient_loss(*f32(logp, r, mask), seq_reduce=seq_reduce)
    np.testing.assert_allclose(pg, np_pg(logp, r, mask, seq_reduce), rtol=1e-5)
    rest, rest_m = losses.rest_loss(*f32(logp, r, mask), seq_reduce=seq_reduce)
    np.testing.assert_allclose(rest, np_rest(logp, r, mask, r >= 1, seq_reduce), rtol=1e-5)
    assert rest_m["kept_frac"] == pytest.approx((r >= 1).mean())
    assert pg_m["zero_adv_frac"] == rest_m["zero_adv_frac"] == np_zero_adv(r)


def test_rest_keeps_reward_one_and_correct_mask_overrides():
    logp, _, _, mask = make_inputs(2, B=2, K=4)
    # Rewards after a length penalty of weight 1: correct in [0.5, 1.5], incorrect in [-0.5, 0].
    r = np.array([[1.5, 0.5, 0.0, -0.5], [1.0, -0.2, 1.2, 0.0]])
    keep = r >= 0.5
    got, _ = losses.rest_loss(*f32(logp, r, mask))
    np.testing.assert_allclose(got, np_rest(logp, r, mask, keep), rtol=1e-5)
    correct = np.array([[0, 0, 1, 1], [1, 0, 0, 0]])
    got, m = losses.rest_loss(*f32(logp, r, mask), correct=jnp.asarray(correct))
    np.testing.assert_allclose(got, np_rest(logp, r, mask, correct > 0), rtol=1e-5)
    assert m["kept_frac"] == pytest.approx(3 / 8)
    got, _ = losses.rest_loss(*f32(logp, r, mask), correct_threshold=1.0)
    np.testing.assert_allclose(got, np_rest(logp, r, mask, r >= 1.0), rtol=1e-5)


def test_rest_without_correct_response_is_zero_with_zero_grad():
    logp, _, _, mask = make_inputs(3)
    r = np.zeros((3, 4))
    loss, g = jax.value_and_grad(lambda lp: losses.rest_loss(lp, *f32(r, mask))[0])(f32(logp)[0])
    assert loss == 0.0
    assert not np.any(np.asarray(g))


def test_rest_ignores_incorrect_responses_whatever_they_hold():
    """A -inf log-prob inside an incorrect response (counted token) cannot reach ReST's loss."""
    logp, _, _, mask = make_inputs(13, B=1, K=3, T=4)
    mask[0, 1] = 1.0
    r = np.array([[1.0, 0.0, 1.0]])
    dirty = logp.copy()
    dirty[0, 1, 2] = -np.inf
    f = jax.value_and_grad(lambda lp: losses.rest_loss(lp, *f32(r, mask))[0])
    (clean, g_clean), (loss, g) = f(f32(logp)[0]), f(f32(dirty)[0])
    assert loss == clean and np.all(np.isfinite(g))
    np.testing.assert_array_equal(g, g_clean)


def test_rest_gradient_only_from_kept_responses():
    logp, _, r, mask = make_inputs(4)
    g = jax.grad(lambda lp: losses.rest_loss(lp, *f32(r, mask))[0])(f32(logp)[0])
    keep = r >= 1
    want = np.where(keep[..., None] & (mask > 0), -1.0 / max(keep.sum(), 1), 0.0)
    np.testing.assert_allclose(g, want, rtol=1e-6)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("log_z", ["mean", "logmeanexp"])
@pytest.mark.parametrize("seq_reduce", ["sum", "token_mean"])
def test_sampled_baseline_identity_float64(log_z, seq_reduce):
    """-(1/(2 tau)) grad L_MD == grad J_sampled-baseline == numpy analytic gradient, to 1e-6."""
    logp, ref, r, mask = make_inputs(5, binary=False)
    tau = 0.37
    with jax.enable_x64(True):
        args = [jnp.asarray(x, jnp.float64) for x in (ref, r, mask)]
        opts = dict(tau=tau, log_z=log_z, seq_reduce=seq_reduce)
        g_md = jax.grad(lambda lp: losses.mirror_descent_loss(lp, *args, **opts)[0])(
            jnp.asarray(logp)
        )
        g_sb = jax.grad(lambda lp: losses.sampled_baseline_surrogate(lp, *args, **opts)[0])(
            jnp.asarray(logp)
        )
        assert g_md.dtype == jnp.float64
        g_md, g_sb = np.asarray(g_md), np.asarray(g_sb)
    # d(J)/d logp[b,j,t] = valid * (A - tau d) * dseq/dtoken / (B K); A = r - tau logZ.
    B, K, _ = logp.shape
    d = np_seq(logp - ref, mask, seq_reduce)
    per_seq = (r - np_tau_log_z(r, tau, log_z) - tau * d) / (B * K)
    scale = np.ones(mask.shape[:2]) if seq_reduce == "sum" else 1 / np.maximum(mask.sum(-1), 1)
    want = np.where(mask > 0, (per_seq * scale)[..., None], 0.0)
    np.testing.assert_allclose(-g_md / (2 * tau), g_sb, atol=1e-6, rtol=0)
    np.testing.assert_allclose(g_sb, want, atol=1e-6, rtol=0)
    assert np.abs(want).max() > 1e-3  # the identity is not a trivial 0 == 0


def test_check_grads_against_finite_differences():
    logp, ref, r, mask = make_inputs(6, B=2, K=3, T=4, binary=False)
    with jax.enable_x64(True):
        lp, rf, rw, mk = (jnp.asarray(x, jnp.float64) for x in (logp, ref, r, mask))
        fns = [
            lambda x: losses.mirror_descent_loss(x, rf, rw, mk, tau=0.5)[0],
            lambda x: losses.mirror_descent_loss(
                x, rf, rw, mk, tau=0.5, log_z="logmeanexp", seq_reduce="token_mean"
            )[0],
            lambda x: losses.sampled_baseline_surrogate(x, rf, rw, mk, tau=0.5)[0],
            lambda x: losses.policy_gradient_loss(x, rw, mk)[0],
            lambda x: losses.rest_loss(x, rw, mk, correct_threshold=0.0)[0],
        ]
        for fn in fns:
            check_grads(jax.jit(fn), (lp,), order=2, modes=["rev"], eps=1e-4, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("seq_reduce", ["sum", "token_mean"])
def test_on_policy_md_gradient_is_2tau_policy_gradient(seq_reduce):
    """logp == ref_logp (d = 0): grad L_MD = -2 tau/(BK) sum A grad log pi = 2 tau grad L_PG."""
    logp, _, r, mask = make_inputs(7)
    lp, rw, mk = f32(logp, r, mask)
    tau = 0.3
    g_pg = jax.grad(lambda x: losses.policy_gradient_loss(x, rw, mk, seq_reduce=seq_reduce)[0])(lp)
    for scale, factor in [("none", 2 * tau), ("inv_2tau", 1.0), ("inv_tau", 2.0)]:
        g_md = jax.grad(
            lambda x, s=scale: losses.mirror_descent_loss(
                x, lp, rw, mk, tau=tau, seq_reduce=seq_reduce, loss_scale=s
            )[0]
        )(lp)
        np.testing.assert_allclose(g_md, factor * g_pg, atol=1e-7, rtol=1e-5)
    assert np.abs(np.asarray(g_pg)).max() > 1e-3


def test_rewards_and_reference_get_no_gradient():
    logp, ref, r, mask = make_inputs(8, binary=False)
    lp, rf, rw, mk = f32(logp, ref, r, mask)
    g_ref, g_r = jax.grad(
        lambda a, b: losses.mirror_descent_loss(lp, a, b, mk, tau=0.5)[0], (0, 1)
    )(rf, rw)
    assert not np.any(np.asarray(g_ref)) and not np.any(np.asarray(g_r))
    g_r = jax.grad(lambda b: losses.policy_gradient_loss(lp, b, mk)[0])(rw)
    assert not np.any(np.asarray(g_r))


# ---------------------------------------------------------------- masking


def _poison(x, mask, seed):
    rng = np.random.default_rng(seed)
    junk = rng.choice(np.array([np.nan, np.inf, -np.inf]), size=x.shape)
    return np.where(mask > 0, x, junk)


@pytest.mark.parametrize("name", ["mirror_descent", "policy_gradient", "rest", "surrogate"])
def test_masked_tokens_hold_nan_inf_without_effect(name):
    logp, ref, r, mask = make_inputs(9, binary=True)
    fn = losses.LOSSES.get(name, None)
    if name == "surrogate":
        fn = lambda *a: losses.sampled_baseline_surrogate(*a, tau=0.5)
    elif name == "mirror_descent":
        fn = lambda *a: losses.mirror_descent_loss(*a, tau=0.5)
    r = np.where(np.arange(4) == 0, 1.0, r)  # ensure some kept responses for ReST

    def value_and_grad(lp, rf):
        return jax.value_and_grad(lambda x: fn(x, *f32(rf, r, mask))[0])(f32(lp)[0])

    clean_loss, clean_grad = value_and_grad(logp, ref)
    dirty_loss, dirty_grad = value_and_grad(_poison(logp, mask, 1), _poison(ref, mask, 2))
    assert np.isfinite(dirty_loss) and np.all(np.isfinite(dirty_grad))
    assert dirty_loss == clean_loss
    np.testing.assert_array_equal(dirty_grad, clean_grad)
    assert not np.any(np.asarray(dirty_grad)[mask == 0])


# ---------------------------------------------------------------- log Z


def test_logmeanexp_tends_to_mean_as_tau_grows():
    _, _, r, _ = make_inputs(10, B=4, K=8, binary=False)
    lme = lambda tau: np.asarray(losses.LOG_Z["logmeanexp"](jnp.asarray(r, jnp.float32), tau))
    mean = r.mean(-1, keepdims=True)
    gaps = [np.abs(lme(t) - mean).max() for t in (0.1, 1.0, 10.0, 100.0, 1e4)]
    assert all(a > b for a, b in zip(gaps, gaps[1:], strict=False)), gaps
    assert gaps[-1] < 1e-3
    # Second-order expansion: tau log mean exp(r/tau) = mean + var/(2 tau) + O(1/tau^2).
    var = r.var(-1, keepdims=True)
    np.testing.assert_allclose(lme(1e3) - mean, var / 2e3, rtol=1e-2, atol=1e-6)
    # Jensen: never below the mean; tends to the max as tau -> 0 (no overflow).
    assert np.all(lme(0.3) >= mean - 1e-6)
    np.testing.assert_allclose(lme(1e-4), r.max(-1, keepdims=True), atol=1e-3)


def test_logmeanexp_matches_numpy_at_moderate_tau():
    _, _, r, _ = make_inputs(11, binary=False)
    for tau in (0.2, 1.0, 5.0):
        want = tau * np.log(np.mean(np.exp(r / tau), -1, keepdims=True))
        got = losses.LOG_Z["logmeanexp"](jnp.asarray(r, jnp.float32), tau)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- properties

shapes = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5))


@jax.jit
def _all_losses(lp, rf, rw, mk, tau):
    """One compiled call per shape keeps the property tests fast (eager mode compiles per op)."""
    md, md_m = losses.mirror_descent_loss(lp, rf, rw, mk, tau=tau)
    pg, _ = losses.policy_gradient_loss(lp, rw, mk)
    rest, _ = losses.rest_loss(lp, rw, mk)
    return md, pg, rest, md_m["zero_adv_frac"]


@jax.jit
def _on_policy_grads(lp, rw, mk):
    md = lambda x: losses.mirror_descent_loss(x, lp, rw, mk, tau=0.5)
    loss, m = md(lp)
    g_md = jax.grad(lambda x: md(x)[0])(lp)
    g_pg = jax.grad(lambda x: losses.policy_gradient_loss(x, rw, mk)[0])(lp)
    return loss, m["zero_adv_frac"], g_md, g_pg


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1), binary=st.booleans(), tau=st.floats(0.05, 5))
def test_property_losses_match_numpy(shape, seed, binary, tau):
    B, K, T = shape
    logp, ref, r, mask = make_inputs(seed, B, K, T, binary=binary)
    md, pg, rest, zero_adv = _all_losses(*f32(logp, ref, r, mask), tau)
    np.testing.assert_allclose(md, np_md(logp, ref, r, mask, tau)[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pg, np_pg(logp, r, mask), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rest, np_rest(logp, r, mask, r >= 0.5), rtol=1e-4, atol=1e-5)
    assert zero_adv == pytest.approx(np_zero_adv(r))
    if K == 1:  # one sample: the group baseline is the reward itself
        assert zero_adv == 1.0 and pg == 0.0


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1), value=st.sampled_from([0.0, 1.0, -0.3]))
def test_property_zero_advantage_groups_give_no_signal(shape, seed, value):
    """All-equal rewards: on-policy MD and PG gradients vanish; MD loss is 0 at d = 0."""
    B, K, T = shape
    logp, _, _, mask = make_inputs(seed, B, K, T)
    rw = jnp.full((B, K), value, jnp.float32)
    loss, zero_adv, g_md, g_pg = _on_policy_grads(*f32(logp), rw, *f32(mask))
    assert loss == 0.0 and zero_adv == 1.0
    assert not np.any(np.asarray(g_md)) and not np.any(np.asarray(g_pg))


# ---------------------------------------------------------------- config, jit, vmap, sharding


def test_losses_dict_and_options():
    clipped = {"grpo", "dapo", "gspo", "cispo"}  # tests/test_clipped_losses.py
    assert set(losses.LOSSES) == {"mirror_descent", "policy_gradient", "rest"} | clipped
    logp, ref, r, mask = f32(*make_inputs(12))
    for name in losses.LOSSES:
        cfg = losses.LossConfig(name=name, tau=0.5, seq_reduce="token_mean")
        loss, metrics = losses.LOSSES[name](logp, ref, r, mask, **losses.loss_options(cfg))
        assert loss.shape == () and np.isfinite(loss)
        assert "zero_adv_frac" in metrics
        assert all(v.shape == () for v in metrics.values())
    assert losses.loss_options(losses.LossConfig()) == {
        "tau": 1.0,
        "log_z": "mean",
        "seq_reduce": "sum",
        "loss_scale": "none",
    }
    with pytest.raises(ValueError, match="loss.name"):
        losses.loss_options(losses.LossConfig(name="ppo"))
    with pytest.raises(ValueError, match="loss.log_z"):
        losses.loss_options(losses.LossConfig(log_z="max"))
    with pytest.raises(ValueError, match="loss.tau"):
        losses.loss_options(losses.LossConfig(tau=0.0))
    with pytest.raises(ValueError, match="loss.seq_reduce"):
        losses.mirror_descent_loss(logp, ref, r, mask, tau=1.0, seq_reduce="max")


NP_LOSSES = {
    "mirror_descent": lambda logp, ref, r, mask: np_md(logp, ref, r, mask, 0.4)[0],
    "policy_gradient": lambda logp, ref, r, mask: np_pg(logp, r, mask),
    "rest": lambda logp, ref, r, mask: np_rest(logp, r, mask, r >= 0.0),
}


def test_jit_and_vmap_agree_with_numpy():
    data = [make_inputs(20 + i, B=2, K=3, T=4, binary=False) for i in range(3)]
    stacked = [jnp.asarray(np.stack(xs), jnp.float32) for xs in zip(*data, strict=True)]
    for name, want_fn in NP_LOSSES.items():  # clipped arms: tests/test_clipped_losses.py
        fn = losses.LOSSES[name]
        opts = losses.loss_options(losses.LossConfig(name=name, tau=0.4, correct_threshold=0.0))
        jitted = jax.jit(lambda *a, fn=fn, opts=opts: fn(*a, **opts))
        batched = jax.vmap(jitted)(*stacked)
        for i, (logp, ref, r, mask) in enumerate(data):
            want = want_fn(logp, ref, r, mask)
            np.testing.assert_allclose(batched[0][i], want, rtol=1e-5, atol=1e-6)
            assert batched[1]["zero_adv_frac"][i] == np_zero_adv(r)


def test_sharded_inputs_over_8_devices(fake_devices):
    code = """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from k15_jax.rl import losses, penalties, long2short
    assert jax.device_count() == 8
    rng = np.random.default_rng(0)
    B, K, T = 8, 4, 6
    logp = -rng.exponential(1.0, (B, K, T)).astype(np.float32)
    ref = (logp + 0.2 * rng.standard_normal((B, K, T))).astype(np.float32)
    r = rng.integers(0, 2, (B, K)).astype(np.float32)
    mask = (rng.random((B, K, T)) < 0.7).astype(np.float32)
    lengths = rng.integers(1, 50, (B, K))
    mesh = Mesh(np.array(jax.devices()), ("data",))
    put = lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))
    for name, fn in losses.LOSSES.items():
        opts = losses.loss_options(losses.LossConfig(name=name, tau=0.5))
        f = jax.jit(jax.value_and_grad(lambda lp, *a: fn(lp, *a, **opts)[0]))
        (v1, g1), (v0, g0) = f(*map(put, (logp, ref, r, mask))), f(logp, ref, r, mask)
        assert len(g1.sharding.device_set) == 8, name
        np.testing.assert_allclose(v1, v0, rtol=1e-5, atol=1e-7)  # clipped arms: loss ~1e-4
        np.testing.assert_allclose(g1, g0, rtol=1e-5, atol=1e-7)
    lp = jax.jit(penalties.length_penalty)(put(lengths), put(r > 0))
    np.testing.assert_allclose(lp, penalties.length_penalty(lengths, r > 0), rtol=1e-6)
    pairs = jax.jit(long2short.long2short_pairs)(put(lengths), put(r > 0))
    ref_pairs = long2short.long2short_pairs(lengths, r > 0)
    for a, b in zip(pairs, ref_pairs):
        np.testing.assert_array_equal(a, b)
    print("ok")
    """
    assert fake_devices(code, n_devices=8).strip().endswith("ok")
