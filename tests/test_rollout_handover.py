"""Params hand-over into the engine and the rollout/trainer log-prob mismatch metric."""

import jax
import numpy as np
import pytest

from k15_jax.rollout import (
    RolloutConfig,
    collect,
    handover,
    logprob_mismatch,
    make_engine,
    mismatch_metrics,
    to_device,
    to_host,
)
from tests.test_rollout_reference import TINY, tiny_params

CFG = RolloutConfig(
    temperature=1.0, max_new_tokens=8, max_prompt_len=6, slots=4, stop_on_repeat=False
)
REQS = [("a", [5, 6, 7]), ("b", [9]), ("c", [3, 3, 4, 10, 11])]


def test_mismatch_metrics_match_numpy():
    rng = np.random.default_rng(0)
    e, t = rng.normal(size=(2, 3, 7)).astype(np.float32) * 0.1 - 2
    mask = (rng.random((3, 7)) > 0.4).astype(np.float32)
    got = {k: float(v) for k, v in mismatch_metrics(e, t, mask).items()}
    d = (e - t)[mask > 0].astype(np.float64)
    np.testing.assert_allclose(got["logp_mismatch_mean_abs"], np.abs(d).mean(), rtol=1e-5)
    np.testing.assert_allclose(got["logp_mismatch_max_abs"], np.abs(d).max(), rtol=1e-5)
    np.testing.assert_allclose(got["logp_mismatch_mean"], d.mean(), rtol=1e-5)
    np.testing.assert_allclose(got["logp_mismatch_kl_k3"], (np.exp(-d) - 1 + d).mean(), rtol=1e-4)
    assert got["logp_mismatch_tokens"] == mask.sum()


def test_mismatch_is_tiny_under_the_same_params_and_large_after_an_update():
    p0 = tiny_params(seed=6)
    engine = make_engine(TINY, CFG, eos_id=(), params=p0)
    ro = collect(engine, REQS, k=2, iteration=0, key=jax.random.key(0))[0]
    same = logprob_mismatch(p0, TINY, ro)
    assert same["logp_mismatch_tokens"] == 6 * 8
    assert same["logp_mismatch_max_abs"] < 1e-5  # float32: decode path == full forward
    p1 = jax.tree.map(lambda x: x * 1.05, p0)
    moved = logprob_mismatch(p1, TINY, ro)
    assert moved["logp_mismatch_mean_abs"] > 1e-3
    only_other = logprob_mismatch(p0, TINY, ro, version=1)
    assert only_other["logp_mismatch_tokens"] == 0


def test_handover_replaces_params_without_aliasing():
    p0, p1 = tiny_params(seed=6), tiny_params(seed=7)
    engine = make_engine(TINY, CFG, eos_id=(), params=p0)
    first = collect(engine, REQS, k=1, iteration=0, key=jax.random.key(0))[0]
    same_engine = handover(engine, p1)
    assert same_engine is engine
    for a, b in zip(jax.tree.leaves(engine.params), jax.tree.leaves(p1)):
        np.testing.assert_array_equal(a, b)
        assert a.unsafe_buffer_pointer() != b.unsafe_buffer_pointer()
    second = collect(engine, REQS, k=1, iteration=1, key=jax.random.key(0))[0]
    fresh = make_engine(TINY, CFG, eos_id=(), params=p1)
    want = collect(fresh, REQS, k=1, iteration=1, key=jax.random.key(0))[0]
    np.testing.assert_array_equal(second.tokens, want.tokens)
    assert not np.array_equal(np.asarray(first.tokens), np.asarray(second.tokens))
    with pytest.raises(ValueError, match="does not match the engine's model config"):
        handover(engine, {"embed": p1["embed"]})


def test_host_offload_round_trip():
    p = tiny_params(seed=8)
    host = to_host(p)
    assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(host))
    back = to_device(host, jax.tree.map(lambda x: x.sharding, p))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), back, p)
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(back))
