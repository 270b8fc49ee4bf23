"""ReST's two selections (k15_jax/rl/losses.py, report sec. 3.5) against a pure-Python
re-derivation: "all_correct" fits every correct response, "best" only the report's best
response per prompt (highest reward among the correct, ties to the shortest, then the lowest
index)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from k15_jax.rl import losses


def py_keep(select, r, ok, mask):
    """Kept responses [B, K] by a loop over each prompt's samples; only responses with a
    counted token can be kept (a fully masked one has nothing to fit)."""
    B, K = r.shape
    ok = ok & (mask > 0).any(-1)
    keep = np.zeros((B, K), bool)
    length = (mask > 0).sum(-1)
    for b in range(B):
        right = [j for j in range(K) if ok[b, j]]
        if select == "all_correct":
            keep[b, right] = True
        elif right:  # best: highest reward, then fewest counted tokens, then lowest index
            keep[b, min((-r[b, j], length[b, j], j) for j in right)[2]] = True
    return keep


def np_loss_and_grad(logp, mask, keep):
    """L = -sum_kept sum_t mask logp / max(1, #kept); dL/dlogp = -mask [kept] / max(1, #kept)."""
    n = max(keep.sum(), 1)
    seq = np.where(mask > 0, mask * logp, 0.0).sum(-1)
    grad = np.where(keep[..., None] & (mask > 0), -mask / n, 0.0)
    return -seq[keep].sum() / n, grad


def batch(seed, B=40, K=6, T=7):
    """Few reward levels (ties) and few lengths (ties), some prompts without a correct one."""
    rng = np.random.default_rng(seed)
    logp = -rng.exponential(1.0, (B, K, T))
    ok = rng.random((B, K)) < rng.uniform(0.0, 1.0, (B, 1))
    r = np.where(ok, rng.choice([1.0, 1.0, 1.25, 1.5], (B, K)), rng.choice([0.0, -0.25], (B, K)))
    mask = (np.arange(T) < rng.integers(1, 4, (B, K, 1))).astype(float)  # lengths 1..3
    mask[rng.random((B, K)) < 0.15] = 0.0  # no counted token (skipped group, all-old tokens)
    return logp, r, ok, mask


@pytest.mark.parametrize("select", ["all_correct", "best"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rest_selection_loss_and_grad_match_python(select, seed):
    logp, r, ok, mask = batch(seed)
    keep = py_keep(select, r, ok, mask)
    want, want_grad = np_loss_and_grad(logp, mask, keep)
    opts = losses.loss_options(losses.LossConfig(name="rest", rest_select=select))
    assert opts["rest_select"] == select
    with jax.enable_x64(True):
        f = lambda lp: losses.LOSSES["rest"](lp, lp, r, mask, **opts)
        (loss, m), grad = jax.value_and_grad(f, has_aux=True)(jnp.asarray(logp))
    np.testing.assert_allclose(loss, want, rtol=1e-12)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=0)
    assert m["kept_frac"] == pytest.approx(keep.mean())
    if select == "best":  # one per prompt with a correct response, none elsewhere
        np.testing.assert_array_equal(keep.sum(1), (ok & (mask > 0).any(-1)).any(1))


def test_best_uses_the_correct_flags_and_prefers_reward_then_length():
    """Hand-built: with `correct` given, an incorrect response of top reward is never kept."""
    r = np.array([[1.0, 1.0, 1.0], [0.5, 2.0, 1.0], [1.0, 1.0, 0.0]])
    correct = np.array([[1, 1, 1], [1, 0, 1], [0, 0, 0]])
    lengths = np.array([[3, 2, 2], [1, 1, 4], [1, 1, 1]])
    mask = (np.arange(4) < lengths[..., None]).astype(np.float32)
    logp = -np.ones((3, 3, 4), np.float32)
    keep = losses.REST_SELECT["best"](jnp.asarray(correct > 0), jnp.asarray(r), jnp.asarray(mask))
    np.testing.assert_array_equal(keep, [[0, 1, 0], [0, 0, 1], [0, 0, 0]])
    loss, m = losses.rest_loss(logp, r, mask, correct=correct, rest_select="best")
    assert float(loss) == pytest.approx((2 + 4) / 2) and float(m["kept_frac"]) == pytest.approx(
        2 / 9
    )


def test_rest_select_default_and_bad_name():
    assert losses.LossConfig().rest_select == "all_correct"  # today's behaviour by default
    with pytest.raises(ValueError, match="algo.loss.rest_select"):
        losses.loss_options(losses.LossConfig(name="rest", rest_select="top"))
