"""Sampling: temperature / top-k / top-p against a numpy re-derivation, empirical
frequencies, policy log-probs, and samples independent of slots, batching and order."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from k15_jax.rollout import RolloutConfig, collect, make_engine
from k15_jax.rollout.sampling import (
    SamplingParams,
    filtered_logits,
    first_argmax,
    policy_logp,
    sample_tokens,
    top_p_mask,
)
from tests.test_rollout_reference import TINY, tiny_params


def numpy_distribution(logits, temperature, top_k, top_p):
    """The sampling distribution, re-derived: probabilities [V] for one row."""
    x = logits.astype(np.float64) / temperature
    keep = np.ones_like(x, bool)
    if top_k:
        keep &= x >= np.sort(x)[::-1][top_k - 1]
    x = np.where(keep, x, -np.inf)
    if top_p < 1:
        order = np.argsort(-x)
        p = np.exp(x[order] - x[order][0])
        p /= p.sum()
        before = np.cumsum(p) - p
        keep_sorted = before < top_p
        keep = np.zeros_like(keep)
        keep[order[keep_sorted]] = True
        x = np.where(keep, x, -np.inf)
    p = np.exp(x - x.max())
    return p / p.sum()


CASES = [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.0, 3, 1.0), (1.3, 0, 0.6), (0.9, 5, 0.8)]


@pytest.mark.parametrize("temperature,top_k,top_p", CASES)
def test_filtered_distribution_matches_numpy(temperature, top_k, top_p):
    logits = np.random.default_rng(0).normal(size=(4, 11)).astype(np.float32) * 2
    sp = SamplingParams(temperature, top_p, top_k, False)
    got = np.asarray(jax.nn.softmax(filtered_logits(jnp.asarray(logits), sp), axis=-1))
    for row, g in zip(logits, got):
        np.testing.assert_allclose(g, numpy_distribution(row, temperature, top_k, top_p), atol=1e-6)


def numpy_top_p_keep(x, top_p):
    """The sort rule in float64: (keep [V], mass before each token [V])."""
    order = np.argsort(-x, kind="stable")
    p = np.exp(x[order] - x[order][0])
    p /= p.sum()
    before = np.cumsum(p) - p
    keep, mass = np.zeros(x.shape, bool), np.zeros(x.shape)
    keep[order], mass[order] = before < top_p, before
    return keep, mass


@pytest.mark.parametrize("top_p", [0.1, 0.5, 0.9, 0.95, 0.999])
def test_top_p_mask_is_the_sort_rule_on_wide_rows(top_p):
    """Bisection against the sort, on rows of vocab 8192 (flat and peaked, with -inf):
    decisions may differ only where the mass before a token is within rounding of top_p."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(16, 8192)).astype(np.float32) * rng.uniform(0.1, 8, (16, 1))
    x = x.astype(np.float32)
    x[:4, :100] = -np.inf  # e.g. removed by top-k
    got = np.asarray(top_p_mask(jnp.asarray(x), top_p))
    for row, g in zip(x, got):
        want, mass = numpy_top_p_keep(row.astype(np.float64), top_p)
        differ = g != want
        assert np.all(np.abs(mass[differ] - top_p) < 1e-5), np.flatnonzero(differ)[:5]
        assert g.any() and not g[np.isneginf(row)].any()


def test_top_p_mask_ties_kept_by_index_order():
    # four equal logits of 0.2 each after one of 0.2: the nucleus at 0.5 is the first
    # three by index (mass before: 0, 0.2, 0.4 < 0.5; then 0.6)
    x = np.log(np.array([[0.2, 0.2, 0.2, 0.2, 0.2], [0.4, 0.15, 0.15, 0.15, 0.15]]))
    got = np.asarray(top_p_mask(jnp.asarray(x, jnp.float32), 0.5))
    np.testing.assert_array_equal(got[0], [True, True, True, False, False])
    np.testing.assert_array_equal(got[1], [True, True, False, False, False])
    for row, g in zip(x, got):
        np.testing.assert_array_equal(g, numpy_top_p_keep(row, 0.5)[0])


@pytest.mark.parametrize("temperature,top_k,top_p", CASES[2:])
def test_sample_frequencies(temperature, top_k, top_p):
    row = np.random.default_rng(1).normal(size=(8,)).astype(np.float32)
    n = 20000
    keys = jax.random.split(jax.random.key(3), n)
    sp = SamplingParams(temperature, top_p, top_k, False)
    toks = np.asarray(jax.jit(sample_tokens, static_argnums=2)(jnp.tile(row, (n, 1)), keys, sp))
    freq = np.bincount(toks, minlength=8) / n
    want = numpy_distribution(row, temperature, top_k, top_p)
    assert np.all(freq[want == 0] == 0)  # filtered tokens are never drawn
    np.testing.assert_allclose(freq, want, atol=4 * np.sqrt(0.25 / n))


def test_greedy_and_policy_logp():
    logits = np.random.default_rng(2).normal(size=(5, 13)).astype(np.float32)
    toks = np.asarray(sample_tokens(jnp.asarray(logits), None, SamplingParams(greedy=True)))
    np.testing.assert_array_equal(toks, logits.argmax(-1))
    lse = np.log(np.exp(logits.astype(np.float64)).sum(-1))
    want = logits[np.arange(5), toks] - lse
    np.testing.assert_allclose(
        np.asarray(policy_logp(jnp.asarray(logits), jnp.asarray(toks))), want, atol=1e-6
    )


def test_first_argmax_is_numpy_argmax_with_ties_nan_and_inf():
    rng = np.random.default_rng(4)
    x = rng.integers(-3, 4, size=(64, 37)).astype(np.float32)  # many ties
    x[1] = -np.inf  # all filtered: index 0, as np.argmax
    x[2, [5, 9]] = np.nan  # the first NaN, as np.argmax
    x[3, 30] = np.inf
    np.testing.assert_array_equal(np.asarray(first_argmax(jnp.asarray(x))), x.argmax(-1))


def test_sampled_tokens_are_jax_categorical():
    """The sampler's Gumbel-max is `jax.random.categorical` row by row (same keys)."""
    logits = jnp.asarray(np.random.default_rng(5).normal(size=(16, 300)).astype(np.float32))
    keys = jax.random.split(jax.random.key(7), 16)
    sp = SamplingParams(0.7, 0.9, 0, False)
    got = sample_tokens(logits, keys, sp)
    x = filtered_logits(logits, sp)
    want = [jax.random.categorical(k, row) for k, row in zip(keys, x)]
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_samples_do_not_depend_on_slots_batching_or_order():
    params = tiny_params(seed=3)
    cfg = RolloutConfig(
        temperature=1.0,
        top_p=0.9,
        max_new_tokens=10,
        max_prompt_len=6,
        slots=4,
        steps_per_sync=2,
        stop_on_repeat=False,
    )
    reqs = [("a", [5, 6, 7]), ("b", [9]), ("c", [3, 3, 4, 10, 11]), ("d", [8, 8])]
    key = jax.random.key(11)
    e4 = make_engine(TINY, cfg, eos_id=4, params=params)
    e2 = make_engine(TINY, dataclasses.replace(cfg, slots=2), eos_id=4, params=params)
    base = collect(e4, reqs, k=3, iteration=0, key=key)[0]
    other = collect(e2, reqs[::-1], k=3, iteration=0, key=key)[0]
    t0, t1 = np.asarray(base.tokens), np.asarray(other.tokens)
    for g, _ in enumerate(reqs):
        h = len(reqs) - 1 - g
        np.testing.assert_array_equal(t0[3 * g : 3 * g + 3], t1[3 * h : 3 * h + 3])
        np.testing.assert_allclose(
            np.asarray(base.logp)[3 * g : 3 * g + 3],
            np.asarray(other.logp)[3 * h : 3 * h + 3],
            atol=1e-5,
        )
    assert len({tuple(r) for r in t0}) == len(t0)  # every sample differs
    again = collect(e4, reqs, k=3, iteration=0, key=jax.random.key(12))[0]
    assert not np.array_equal(np.asarray(again.tokens), t0)  # the call key matters
