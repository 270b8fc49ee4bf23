"""GRPO, DAPO, GSPO and CISPO (k15_jax/rl/clipped.py) against a float64 numpy re-derivation,
and one analytic limit per loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from k15_jax.rl import clipped, losses
from tests.clipped_reference import advantage, reference

ARMS = ("grpo", "dapo", "gspo", "cispo")


def make_inputs(seed, B=3, K=4, T=6, spread=0.3, weights=False):
    """Random inputs with a fully masked row, an all-equal reward group and, optionally,
    non-unit token weights."""
    rng = np.random.default_rng(seed)
    logp = -rng.exponential(1.0, (B, K, T))
    ref = logp + spread * rng.standard_normal((B, K, T))
    r = rng.standard_normal((B, K))
    r[B // 2] = 0.5  # all-equal group: no signal
    mask = (rng.random((B, K, T)) < 0.75).astype(float)
    mask[0, 1] = 0.0  # fully masked response
    mask[-1, -1, 0] = 1.0
    if weights:
        mask = mask * rng.uniform(0.1, 2.0, mask.shape)
    return logp, ref, r, mask


def options(name, **over):
    return losses.loss_options(losses.LossConfig(name=name, **over))


def value_and_grad64(name, logp, ref, r, mask, opts):
    with jax.enable_x64(True):
        args = [jnp.asarray(x, jnp.float64) for x in (ref, r, mask)]
        f = lambda lp: losses.LOSSES[name](lp, *args, **opts)
        (loss, metrics), g = jax.value_and_grad(f, has_aux=True)(jnp.asarray(logp, jnp.float64))
        return float(loss), np.asarray(g), {k: float(v) for k, v in metrics.items()}


CASES = [
    (name, agg, adv, kl)
    for name in ARMS
    for agg in ("token_mean", "seq_mean", "seq_sum")
    for adv, kl in (("group_std", 0.0), ("group_mean", 0.1))
]


@pytest.mark.parametrize("name,aggregation,adv_norm,kl_coef", CASES)
@pytest.mark.parametrize("weights", [False, True])
def test_value_and_gradient_match_numpy_float64(name, aggregation, adv_norm, kl_coef, weights):
    logp, ref, r, mask = make_inputs(0, weights=weights)
    clip = {"clip_low": 0.2, "clip_high": 0.28} if name == "gspo" else {}  # 3e-4 clips all
    opts = options(name, aggregation=aggregation, adv_norm=adv_norm, kl_coef=kl_coef, **clip)
    loss, g, m = value_and_grad64(name, logp, ref, r, mask, opts)
    want_loss, want_g = reference(name, logp, ref, r, mask, **opts)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g, want_g, rtol=1e-9, atol=1e-12)
    assert np.abs(want_g).max() > 1e-3  # not a trivial 0 == 0
    assert not np.any(g[0, 1]) and not np.any(g[mask == 0])  # masked tokens: no gradient
    if kl_coef == 0:
        assert not np.any(g[1])  # all-equal rewards (group B // 2): no signal
    A = advantage(r, adv_norm, opts["adv_eps"])
    np.testing.assert_allclose(m["adv_abs_mean"], np.abs(A).mean(), rtol=1e-10)
    assert m["zero_adv_frac"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("name", ARMS)
def test_paper_defaults_and_nan_at_masked_slots(name):
    logp, ref, r, mask = make_inputs(1)
    opts = options(name)
    assert opts == {**losses.LOSS_DEFAULTS[name], "adv_eps": 1e-6, "kl_coef": 0.0}
    rng = np.random.default_rng(2)
    junk = rng.choice(np.array([np.nan, np.inf, -np.inf]), size=logp.shape)
    dirty = [np.where(mask > 0, x, junk) for x in (logp, ref)]
    f = lambda lp, rf: jax.value_and_grad(
        lambda x: losses.LOSSES[name](x, jnp.asarray(rf, jnp.float32), *f32(r, mask), **opts)[0]
    )(jnp.asarray(lp, jnp.float32))
    (clean, g_clean), (loss, g) = f(logp, ref), f(*dirty)
    assert np.isfinite(loss) and np.all(np.isfinite(g))
    assert loss == clean
    np.testing.assert_array_equal(g, g_clean)
    want, _ = reference(name, logp, ref, r, mask, **opts)
    np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-6)


def f32(*xs):
    return [jnp.asarray(x, jnp.float32) for x in xs]


# ---------------------------------------------------------------- analytic limits


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean", "seq_sum"])
def test_on_policy_grpo_is_the_normalised_advantage_policy_gradient(aggregation):
    """pi_theta == pi_old (rho = 1, no clip active): grad L = -sum_t c A grad log pi, i.e. the
    policy gradient with A = (r - mean) / (std + eps), aggregated the same way."""
    logp, _, r, mask = make_inputs(3)
    opts = options("grpo", aggregation=aggregation)
    _, g, m = value_and_grad64("grpo", logp, logp, r, mask, opts)
    valid = mask > 0
    A = (r - r.mean(-1, keepdims=True)) / (r.std(-1, keepdims=True) + 1e-6)
    n_seq = (valid.sum(-1) > 0).sum()
    per_tok = {
        "token_mean": np.full(mask.shape, 1 / valid.sum()),
        "seq_mean": np.broadcast_to(
            1 / (n_seq * np.maximum(valid.sum(-1, keepdims=True), 1)), mask.shape
        ),
        "seq_sum": np.full(mask.shape, 1 / n_seq),
    }[aggregation]
    np.testing.assert_allclose(
        g, np.where(valid, -A[..., None] * per_tok, 0), rtol=1e-10, atol=1e-14
    )
    assert m["clip_frac"] == 0.0 and m["ratio_mean"] == pytest.approx(1.0)


def test_gspo_with_one_token_responses_is_token_level_ppo_clipping():
    logp, ref, r, _ = make_inputs(4, T=5, spread=0.4)
    rng = np.random.default_rng(4)
    mask = np.zeros_like(logp)
    mask[np.arange(3)[:, None], np.arange(4)[None, :], rng.integers(0, 5, (3, 4))] = 1.0
    fracs = []
    for clip in ({"clip_low": 0.2, "clip_high": 0.28}, {}):
        gspo = value_and_grad64("gspo", logp, ref, r, mask, options("gspo", **clip))
        opts = options("grpo", aggregation="seq_mean", **clip)
        if not clip:  # GSPO's own ranges
            opts.update(clip_low=3e-4, clip_high=4e-4)
        grpo = value_and_grad64("grpo", logp, ref, r, mask, opts)
        np.testing.assert_allclose(gspo[0], grpo[0], rtol=1e-12)
        np.testing.assert_allclose(gspo[1], grpo[1], rtol=1e-12, atol=1e-15)
        assert gspo[2]["clip_frac"] == pytest.approx(grpo[2]["clip_frac"])
        fracs.append(grpo[2]["clip_frac"])
    assert 0 < fracs[0] < 1 and fracs[1] > fracs[0]  # clipping active on some responses


def test_cispo_gradient_flows_only_through_log_pi():
    """grad = -c sg(rhat) A grad log pi: the ratio's own derivative never appears, clipped
    tokens keep their gradient (GRPO zeroes it), and ref_logp gets none."""
    logp, ref, r, mask = make_inputs(5, spread=0.6)
    opts = options("cispo", clip_high=0.1)  # a tight cap, so clipping is active
    _, g, m = value_and_grad64("cispo", logp, ref, r, mask, opts)
    valid = mask > 0
    rhat = np.clip(np.exp(logp - ref), 0.0, 1.1)
    A = advantage(r, "group_std", 1e-6)[..., None]
    want = np.where(valid, -rhat * A / valid.sum(), 0)
    np.testing.assert_allclose(g, want, rtol=1e-10, atol=1e-14)
    clipped_tok = valid & (np.exp(logp - ref) > 1.1) & (np.abs(A) > 0)
    assert clipped_tok.any() and np.all(g[clipped_tok] != 0) and m["clip_frac"] > 0
    _, g_grpo, _ = value_and_grad64("grpo", logp, ref, r, mask, options("grpo", clip_high=0.1))
    assert np.any(g_grpo[clipped_tok & (A > 0)] == 0)
    with jax.enable_x64(True):
        args = [jnp.asarray(x, jnp.float64) for x in (logp, ref, r, mask)]
        g_ref = jax.grad(lambda rf: losses.LOSSES["cispo"](args[0], rf, *args[2:], **opts)[0])(
            args[1]
        )
        assert not np.any(np.asarray(g_ref))


def test_dapo_clip_higher_keeps_gradient_between_the_two_upper_bounds():
    """A token with A > 0 and rho in (1.2, 1.28]: GRPO's symmetric clip drops its gradient,
    DAPO's clip-higher keeps it (Yu et al. 2025, sec. 3.1)."""
    logp = np.log(np.array([[[0.5, 0.5, 0.5, 0.5]]]))
    ref = logp - np.log(np.array([[[1.25, 1.25, 1.0, 1.0]]]))  # rho = 1.25 on tokens 0, 1
    r = np.array([[1.0, 0.0]])
    logp, ref = np.concatenate([logp, logp], 1), np.concatenate([ref, ref], 1)
    mask = np.ones_like(logp)
    _, g_grpo, _ = value_and_grad64("grpo", logp, ref, r, mask, options("grpo"))
    _, g_dapo, _ = value_and_grad64("dapo", logp, ref, r, mask, options("dapo"))
    assert np.all(g_grpo[0, 0, :2] == 0) and np.all(g_dapo[0, 0, :2] < 0)
    # rho = 1 elsewhere; seq_mean and token_mean weigh these 8 tokens alike (1/8)
    np.testing.assert_allclose(g_grpo[0, 0, 2:], g_dapo[0, 0, 2:], rtol=1e-12)


def test_jit_and_vmap_agree_with_numpy():
    data = [make_inputs(20 + i, B=2, K=3, T=4, weights=True) for i in range(3)]
    stacked = [jnp.asarray(np.stack(xs), jnp.float32) for xs in zip(*data, strict=True)]
    for name in ARMS:
        opts = options(name, clip_low=0.2, clip_high=0.3)
        fn = jax.jit(lambda *a, name=name, opts=opts: losses.LOSSES[name](*a, **opts))
        batched = jax.vmap(fn)(*stacked)
        for i, xs in enumerate(data):
            want, _ = reference(name, *xs, **opts)
            np.testing.assert_allclose(batched[0][i], want, rtol=1e-5, atol=1e-6)


def test_bad_options_name_the_key():
    with pytest.raises(ValueError, match="algo.loss.aggregation"):
        options("grpo", aggregation="max")
    with pytest.raises(ValueError, match="algo.loss.adv_norm"):
        options("dapo", adv_norm="batch")
    with pytest.raises(ValueError, match="algo.loss.clip_low"):
        options("gspo", clip_low=1.5)
    with pytest.raises(ValueError, match="algo.loss.kl_coef"):
        options("cispo", kl_coef=-1.0)
    assert set(clipped.AGGREGATIONS) == {"token_mean", "seq_mean", "seq_sum"}
