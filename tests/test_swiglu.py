"""The SwiGLU MLP's written-out backward (k15_jax/model/swiglu.py) against autodiff of the
plain formula and against finite differences; the forward is the formula itself."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from k15_jax.model.swiglu import swiglu


def plain(h, w_gate, w_up, w_down):
    gate = jnp.einsum("btd,df->btf", h, w_gate)
    up = jnp.einsum("btd,df->btf", h, w_up)
    return jnp.einsum("btf,fd->btd", jax.nn.silu(gate) * up, w_down)


def inputs(seed, B=2, T=7, D=12, F=20, dtype=np.float32):
    rng = np.random.default_rng(seed)
    shapes = [(B, T, D), (D, F), (D, F), (F, D)]
    return [jnp.asarray(rng.standard_normal(s) * 0.7, dtype) for s in shapes]


@pytest.mark.parametrize("seed", [0, 1])
def test_forward_is_the_formula_and_grads_match_autodiff(seed):
    args = inputs(seed)
    np.testing.assert_array_equal(swiglu(*args), plain(*args))
    w = jnp.asarray(np.random.default_rng(9).standard_normal((2, 7, 12)), jnp.float32)
    loss = lambda f: lambda *a: jnp.sum(f(*a) * w)  # noqa: E731  a non-uniform cotangent
    ours = jax.grad(loss(swiglu), argnums=(0, 1, 2, 3))(*args)
    ref = jax.grad(loss(plain), argnums=(0, 1, 2, 3))(*args)
    for name, a, b in zip(("h", "w_gate", "w_up", "w_down"), ours, ref):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5, err_msg=name)


def test_finite_differences_float64():
    with jax.enable_x64(True):
        args = inputs(3, B=1, T=3, D=4, F=5, dtype=np.float64)
        check_grads(swiglu, args, order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_bfloat16_grads_close_to_float32():
    args = inputs(4)
    loss = lambda *a: jnp.sum(swiglu(*a).astype(jnp.float32) ** 2)  # noqa: E731
    g32 = jax.grad(loss, argnums=(0, 1, 2, 3))(*args)
    g16 = jax.grad(loss, argnums=(0, 1, 2, 3))(*[a.astype(jnp.bfloat16) for a in args])
    for a, b in zip(g16, g32):
        assert a.dtype == jnp.bfloat16
        scale = float(jnp.max(jnp.abs(b)))
        np.testing.assert_allclose(a.astype(np.float32), b, atol=0.05 * scale)


def test_under_remat_vmap_and_jit():
    args = inputs(5)
    f = jax.jit(jax.grad(lambda h, *w: jnp.sum(jax.checkpoint(swiglu)(h, *w) ** 2)))
    g = jax.grad(lambda h, *w: jnp.sum(plain(h, *w) ** 2))
    np.testing.assert_allclose(f(*args), g(*args), rtol=2e-5, atol=2e-5)
    batched = jax.vmap(
        jax.grad(lambda h, *w: jnp.sum(swiglu(h[None], *w) ** 2)), (0, None, None, None)
    )
    ref = jax.vmap(jax.grad(lambda h, *w: jnp.sum(plain(h[None], *w) ** 2)), (0, None, None, None))
    np.testing.assert_allclose(batched(*args), ref(*args), rtol=2e-5, atol=2e-5)
