"""Long2short DPO pairs and loss (k15_jax/rl/long2short.py, report sec. 2.4)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from k15_jax.rl import long2short
from tests.long2short_reference import np_pairs, qualifying_negatives


def as_set(pairs):
    pos, neg, valid = (np.asarray(x) for x in pairs)
    return {(b, int(pos[b]), int(neg[b, m])) for b, m in zip(*np.nonzero(valid), strict=True)}


def test_hand_built_groups():
    lengths = np.array(
        [
            [100, 120, 400, 300],  # correct: 100, 120, 400; wrong: 300
            [100, 140, 200, 50],  # correct: 100, 140 (< 1.5x); wrong: 200, 50
            [100, 200, 300, 400],  # nothing correct: no pair
            [80, 90, 120, 130],  # all correct; 130 >= 120 = 1.5 * 80
            [60, 60, 60, 60],  # one correct, rest wrong with equal length: no pair
            [90, 40, 30, 200],  # correct: 90, 200 (>= 1.5x); wrong 40, 30 shorter: no pair
        ]
    )
    correct = np.array(
        [[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 0], [1, 0, 0, 1]], bool
    )
    pairs = long2short.long2short_pairs(lengths, correct)
    np.testing.assert_array_equal(pairs.pos_idx, [0, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(
        np.asarray(pairs.neg_idx)[[0, 1, 3, 5]], [[3, 2], [2, 1], [0, 3], [1, 3]]
    )
    np.testing.assert_array_equal(
        pairs.valid,
        [[True, True], [True, False], [False, False], [False, True], [False, False], [False, True]],
    )
    assert as_set(pairs) == {(0, 0, 3), (0, 0, 2), (1, 0, 2), (3, 0, 3), (5, 0, 3)}


def test_single_correct_response_is_not_its_own_negative():
    pairs = long2short.long2short_pairs(np.array([[0, 5]]), np.array([[1, 0]]))
    assert as_set(pairs) == {(0, 0, 1)}
    pairs = long2short.long2short_pairs(np.array([[5, 5]]), np.array([[1, 0]]))
    assert as_set(pairs) == set()  # an equally long wrong answer is no long2short negative
    pairs = long2short.long2short_pairs(np.array([[5, 4]]), np.array([[1, 0]]))
    assert as_set(pairs) == set()  # nor a shorter one
    pairs = long2short.long2short_pairs(np.array([[0, 0]]), np.array([[1, 1]]))
    assert as_set(pairs) == set()  # 0 >= 1.5 * 0, but equal lengths are no long2short pair
    pairs = long2short.long2short_pairs(np.array([[0, 3]]), np.array([[1, 1]]))
    assert as_set(pairs) == {(0, 0, 1)}
    pairs = long2short.long2short_pairs(np.array([[7]]), np.array([[1]]))
    assert as_set(pairs) == set()


_pairs = jax.jit(long2short.long2short_pairs)


@settings(max_examples=25, deadline=None)
@given(k=st.integers(1, 6), seed=st.integers(0, 2**31 - 1), max_len=st.sampled_from([3, 500]))
def test_pairs_match_brute_force(k, seed, max_len):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_len + 1, (4, k))
    correct = rng.random((4, k)) < 0.5
    assert as_set(_pairs(jnp.asarray(lengths), jnp.asarray(correct))) == np_pairs(lengths, correct)


def test_random_groups_every_pair_follows_the_rule():
    """2000 random groups, short lengths so that ties and shorter wrong answers are common:
    the pairs equal the brute force, every negative qualifies (longer than the positive;
    incorrect, or correct and >= 1.5x), and it is the longest qualifying one of its kind."""
    rng = np.random.default_rng(7)
    lengths = rng.integers(1, 8, (2000, 6))
    correct = rng.random((2000, 6)) < rng.uniform(0.1, 0.9, (2000, 1))
    pairs = _pairs(jnp.asarray(lengths), jnp.asarray(correct))
    got = as_set(pairs)
    assert got == np_pairs(lengths, correct)
    for b, pos, neg in got:
        wrong, right = qualifying_negatives(lengths[b], correct[b], pos)
        kind = right if correct[b, neg] else wrong
        assert neg in kind and lengths[b, neg] == max(lengths[b, kind])
    # the groups exercise the fix: a correct positive with only no-longer wrong answers
    pos = np.asarray(pairs.pos_idx)
    pos_len = lengths[np.arange(2000), pos]
    only_short_wrong = correct.any(1) & (~correct).any(1)
    only_short_wrong &= np.where(correct, 0, lengths).max(1) <= pos_len
    assert only_short_wrong.sum() > 50 and not np.asarray(pairs.valid)[only_short_wrong, 0].any()


def np_dpo(pos, neg, ref_pos, ref_neg, beta, valid):
    m = beta * ((pos - ref_pos) - (neg - ref_neg))
    loss = np.log1p(np.exp(-m))
    return loss[valid].sum() / max(valid.sum(), 1), m


def test_dpo_matches_numpy_and_masks_invalid_pairs():
    rng = np.random.default_rng(0)
    pos, neg, ref_pos, ref_neg = (-rng.exponential(20.0, (5, 2)) for _ in range(4))
    valid = rng.random((5, 2)) < 0.6
    valid[0, 0] = True
    want, m = np_dpo(pos, neg, ref_pos, ref_neg, 0.1, valid)
    dirty = [np.where(valid, x, np.nan) for x in (pos, neg, ref_pos, ref_neg)]
    f = lambda p: long2short.dpo_loss(p, *dirty[1:], beta=0.1, mask=valid)
    (loss, metrics), grad = jax.value_and_grad(f, has_aux=True)(jnp.asarray(dirty[0]))
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    assert metrics["pair_count"] == valid.sum()
    np.testing.assert_allclose(metrics["accuracy"], (m[valid] > 0).mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["margin"], m[valid].mean(), rtol=1e-5)
    # d/dpos of -log sigmoid(beta m) = -beta sigmoid(-beta m) / n_valid, zero on invalid pairs.
    want_grad = np.where(valid, -0.1 / (1 + np.exp(m)) / valid.sum(), 0.0)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-9)


def test_dpo_without_pairs_is_zero_and_default_mask_is_all():
    z = jnp.zeros((3,))
    loss, metrics = long2short.dpo_loss(z, z, z, z, beta=0.5, mask=jnp.zeros((3,), bool))
    assert loss == 0.0 and metrics["pair_count"] == 0
    loss, _ = long2short.dpo_loss(z + 1.0, z, z, z, beta=0.5)
    np.testing.assert_allclose(loss, np.log1p(np.exp(-0.5)), rtol=1e-6)


def test_dpo_grads_and_reference_constant():
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        pos, neg, ref_pos, ref_neg = (jnp.asarray(rng.standard_normal(4)) for _ in range(4))
        f = jax.jit(lambda p, n: long2short.dpo_loss(p, n, ref_pos, ref_neg, beta=0.3)[0])
        check_grads(f, (pos, neg), order=2, modes=["fwd", "rev"], eps=1e-4)
        g = jax.grad(lambda a, b: long2short.dpo_loss(pos, neg, a, b, beta=0.3)[0], (0, 1))(
            ref_pos, ref_neg
        )
        assert not np.any(np.asarray(g[0])) and not np.any(np.asarray(g[1]))


def test_end_to_end_pairs_to_loss():
    lengths = np.array([[100, 120, 400, 300], [10, 20, 30, 40]])
    correct = np.array([[1, 1, 1, 0], [0, 0, 0, 0]], bool)
    seq_logp = -np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    ref_logp = seq_logp + 0.5 * np.array([[1.0, 0.0, -1.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    pairs = long2short.long2short_pairs(lengths, correct)
    pos, neg = long2short.gather_pair_logps(jnp.asarray(seq_logp), pairs)
    ref_pos, ref_neg = long2short.gather_pair_logps(jnp.asarray(ref_logp), pairs)
    np.testing.assert_array_equal(pos[0], [-1.0, -1.0])
    np.testing.assert_array_equal(neg[0], [-4.0, -3.0])
    loss, metrics = long2short.dpo_loss(pos, neg, ref_pos, ref_neg, beta=1.0, mask=pairs.valid)
    # pairs (0 vs 3): m = (-0.5) - (-1.0) = 0.5 ; (0 vs 2): m = (-0.5) - (0.5) = -1.0
    want = (np.log1p(np.exp(-0.5)) + np.log1p(np.exp(1.0))) / 2
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    assert metrics["pair_count"] == 2
    with pytest.raises(TypeError):
        long2short.dpo_loss(pos, neg, ref_pos, ref_neg)  # beta is required
