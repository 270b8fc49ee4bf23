"""The model's forward, gradients and KV-cache generation with implementation="pallas"
(interpret mode on CPU) against the XLA reference path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from k15_jax.model import ModelConfig, forward, init_params, token_logprobs
from k15_jax.model.attention import resolve

CFG = ModelConfig(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    logits_chunk=16,
)


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.key(0))


def test_forward_and_grads_match(params):
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, 64, (2, 21)).astype(np.int32))
    seg = jnp.asarray(np.repeat([[1] * 9 + [2] * 12], 2, 0).astype(np.int32))
    pallas = CFG.replace(attention_impl="pallas")
    for kw in ({}, {"segment_ids": seg}):
        ref = forward(params, CFG, tokens, **kw)
        out = forward(params, pallas, tokens, **kw)
        np.testing.assert_allclose(out, ref, atol=2e-5, rtol=1e-5)
    loss = lambda p, c: jnp.sum(token_logprobs(p, c, tokens, segment_ids=seg))
    g_ref, g_out = jax.grad(loss)(params, CFG), jax.grad(loss)(params, pallas)
    for a, b in zip(jax.tree.leaves(g_out), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, atol=5e-5, rtol=1e-4)


def test_engine_generation_matches(params):
    from k15_jax.rollout.driver import collect
    from k15_jax.rollout.engine import make_engine
    from k15_jax.rollout.types import RolloutConfig

    rcfg = RolloutConfig(
        greedy=True, max_prompt_len=8, max_new_tokens=12, slots=4, stop_on_repeat=False
    )
    requests = [(str(i), list(range(1, 3 + i))) for i in range(5)]
    outs = []
    for impl in ("xla", "pallas"):
        engine = make_engine(CFG.replace(attention_impl=impl), rcfg, eos_id=0, params=params)
        ro, ids, _, _ = collect(engine, requests, k=1, iteration=0, key=jax.random.key(0))
        outs.append((ids, np.asarray(ro.tokens), np.asarray(ro.logp)))
    assert outs[0][0] == outs[1][0]
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    np.testing.assert_allclose(outs[0][2], outs[1][2], atol=1e-5)


def test_auto_is_xla_on_cpu_and_bad_names_fail():
    assert resolve("auto") == "xla"
    with pytest.raises(ValueError, match="unknown; use one of"):
        resolve("flash")
