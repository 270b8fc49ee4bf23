"""Length penalty (k15_jax/rl/penalties.py, report sec. 2.3.3) against a numpy loop."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from k15_jax.rl import penalties


def np_length_penalty(lengths, correct):
    """Direct transcription of sec. 2.3.3, one prompt at a time."""
    out = np.zeros(lengths.shape)
    for b, (lens, ok) in enumerate(zip(lengths, correct, strict=True)):
        lo, hi = lens.min(), lens.max()
        if hi == lo:
            continue
        for j in range(len(lens)):
            lam = 0.5 - (lens[j] - lo) / (hi - lo)
            out[b, j] = lam if ok[j] else min(0.0, lam)
    return out


_penalty = jax.jit(penalties.length_penalty)


def test_hand_built_group():
    lengths = np.array([[10, 20, 30, 40, 50], [7, 7, 7, 7, 7]])
    correct = np.array([[1, 1, 0, 0, 1], [1, 0, 1, 0, 1]], bool)
    got = penalties.length_penalty(lengths, correct)
    want = [[0.5, 0.25, 0.0, -0.25, -0.5], [0.0] * 5]
    np.testing.assert_allclose(got, want, atol=1e-7)
    assert got.shape == (2, 5) and got.dtype == jnp.float32


def test_incorrect_short_response_is_not_rewarded():
    got = penalties.length_penalty(np.array([[5, 9, 13]]), np.array([[0, 1, 1]]))
    np.testing.assert_allclose(got, [[0.0, 0.0, -0.5]], atol=1e-7)


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(1, 6),
    seed=st.integers(0, 2**31 - 1),
    max_len=st.sampled_from([1, 3, 1000, 100_000]),
)
def test_properties(k, seed, max_len):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_len + 1, (3, k))
    correct = rng.random((3, k)) < 0.5
    got = np.asarray(_penalty(jnp.asarray(lengths), jnp.asarray(correct)))
    np.testing.assert_allclose(got, np_length_penalty(lengths, correct), atol=1e-6)
    assert np.all(got >= -0.5) and np.all(got <= 0.5)
    assert np.all(got[~correct] <= 0)
    for b in range(3):
        lens = lengths[b]
        if lens.max() == lens.min():
            assert not np.any(got[b])
            continue
        shortest = lens == lens.min()
        np.testing.assert_allclose(got[b][shortest & correct[b]], 0.5)
        np.testing.assert_allclose(got[b][lens == lens.max()], -0.5)
        # Among correct responses, shorter is never rewarded less.
        ok = np.flatnonzero(correct[b])
        order = ok[np.argsort(lens[ok], kind="stable")]
        assert np.all(np.diff(got[b][order]) <= 1e-7)


def test_float_lengths_and_vmap():
    lengths = np.array([[[1.0, 2.0, 3.0]], [[4.0, 4.0, 8.0]]])
    correct = np.ones_like(lengths, bool)
    got = jax.vmap(penalties.length_penalty)(lengths, correct)
    want = np.stack([np_length_penalty(x, c) for x, c in zip(lengths, correct, strict=True)])
    np.testing.assert_allclose(got, want, atol=1e-7)


def test_weight_schedule_is_zero_during_warmup_then_constant():
    w = jax.jit(lambda i: penalties.length_penalty_weight(i, warmup_iterations=3, weight=0.7))
    got = [float(w(jnp.int32(i))) for i in range(6)]
    np.testing.assert_allclose(got, [0, 0, 0, 0.7, 0.7, 0.7], rtol=1e-6)
    np.testing.assert_allclose(
        penalties.length_penalty_weight(np.arange(3), warmup_iterations=0, weight=0.2), [0.2] * 3
    )
