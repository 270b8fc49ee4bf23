"""The model's "xla" attention (k15_jax/kernels/xla_attention.py): its forward is the
reference's, its recomputing backward matches autodiff of `attention_reference` and finite
differences, for causal, windowed, packed (segment ids), GQA and bfloat16 inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from k15_jax.kernels.reference import attention_reference
from k15_jax.kernels.xla_attention import xla_attention


def qkv(seed, B=2, T=9, H=4, G=2, Dh=8, dtype=np.float32):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, T, H, Dh))
    k, v = (rng.standard_normal((B, T, G, Dh)) for _ in range(2))
    return [jnp.asarray(x, dtype) for x in (q, k, v)]


SEGMENTS = np.array([[1, 1, 1, 2, 2, 2, 2, 3, 3], [1] * 9], np.int32)
CASES = {
    "causal": dict(causal=True),
    "full": dict(causal=False),
    "window": dict(causal=True, window=3),
    "segments": dict(causal=True, segment_ids=jnp.asarray(SEGMENTS)),
    "segments_full": dict(causal=False, segment_ids=jnp.asarray(SEGMENTS)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_equal_and_grads_match_autodiff(case):
    kw = CASES[case]
    q, k, v = qkv(0)
    np.testing.assert_array_equal(xla_attention(q, k, v, **kw), attention_reference(q, k, v, **kw))
    w = jnp.asarray(np.random.default_rng(1).standard_normal(q.shape), jnp.float32)
    loss = lambda f: lambda q, k, v: jnp.sum(f(q, k, v, **kw) * w)  # noqa: E731
    ours = jax.grad(loss(xla_attention), argnums=(0, 1, 2))(q, k, v)
    ref = jax.grad(loss(attention_reference), argnums=(0, 1, 2))(q, k, v)
    for name, a, b in zip("qkv", ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=f"d{name} ({case})")


@pytest.mark.parametrize("case", ["causal", "window", "segments"])
def test_finite_differences_float64(case):
    kw = CASES[case]
    with jax.enable_x64(True):
        q, k, v = qkv(2, B=1, T=5, H=2, G=1, Dh=3, dtype=np.float64)
        if "segment_ids" in kw:
            kw = dict(kw, segment_ids=jnp.asarray([[1, 1, 2, 2, 2]], np.int32))
        f = lambda q, k, v: xla_attention(q, k, v, **kw)  # noqa: E731
        # the scores are float32 even here (preferred_element_type), hence eps and tolerances
        check_grads(f, (q, k, v), order=1, modes=["rev"], eps=1e-3, atol=2e-3, rtol=2e-3)


def test_bfloat16_inputs_give_bfloat16_grads_close_to_float32():
    q, k, v = qkv(3)
    loss = lambda q, k, v: jnp.sum(xla_attention(q, k, v).astype(jnp.float32) ** 2)  # noqa: E731
    g32 = jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
    g16 = jax.grad(loss, argnums=(0, 1, 2))(*(x.astype(jnp.bfloat16) for x in (q, k, v)))
    for a, b in zip(g16, g32):
        assert a.dtype == jnp.bfloat16
        np.testing.assert_allclose(a.astype(np.float32), b, atol=0.03 * float(jnp.max(jnp.abs(b))))
