"""The SwiGLU MLP with its backward pass written out, so that XLA on CPU runs it lean.

    y = (silu(h W_gate) * (h W_up)) W_down          h [B, T, D], W_gate, W_up [D, F], W_down [F, D]

The math is autodiff's, op for op; only the layout the weight gradients see is chosen here.
Why: XLA's CPU dot library (YNNPACK) runs A @ B and A @ B^T but not A^T @ B, and each
weight gradient is an A^T @ B (a sum over the B x T tokens). Left to itself, XLA's layout
pass transposes the larger [B*T, F] operand of dW_gate and dW_up, fused into the silu
backward with a strided write, and runs those dots on its slower fallback: on the 54M bench
shape that transpose alone took 0.57 s of a 4.3 s training step (`docs/performance.md`).
Here the smaller operand is transposed once, as a plain copy, and every dot is one
YNNPACK runs: h^T [D, B*T] (4 MB at that shape) serves both dW_gate and dW_up, and
dW_down is computed transposed from dy^T [D, B*T] and flipped (a [D, F] copy).

The materialised transposes are pinned with an optimization barrier on CPU only: on GPU
and TPU the compiler folds transposes into its dots for free, so there they stay plain
transposes and XLA decides as before. Gradients equal autodiff's up to summation order
(tests/test_swiglu.py compares them, and with finite differences).
"""

import jax
import jax.numpy as jnp


def _tokens_last(x: jax.Array) -> jax.Array:
    """[B, T, C] -> [C, B, T], materialised on CPU (see the module docstring)."""
    xt = jnp.transpose(x, (2, 0, 1))
    return jax.lax.optimization_barrier(xt) if jax.default_backend() == "cpu" else xt


def _forward(h, w_gate, w_up, w_down):
    gate = jnp.einsum("btd,df->btf", h, w_gate)
    up = jnp.einsum("btd,df->btf", h, w_up)
    return jnp.einsum("btf,fd->btd", jax.nn.silu(gate) * up, w_down), (gate, up)


@jax.custom_vjp
def swiglu(h: jax.Array, w_gate: jax.Array, w_up: jax.Array, w_down: jax.Array) -> jax.Array:
    """SwiGLU MLP: h [B, T, D] -> [B, T, D]; weights already in h's dtype."""
    return _forward(h, w_gate, w_up, w_down)[0]


def _swiglu_fwd(h, w_gate, w_up, w_down):
    y, (gate, up) = _forward(h, w_gate, w_up, w_down)
    return y, (h, w_gate, w_up, w_down, gate, up)


def _swiglu_bwd(res, dy):
    h, w_gate, w_up, w_down, gate, up = res
    sig = jax.nn.sigmoid(gate)
    silu = gate * sig
    act = silu * up
    d_act = jnp.einsum("btd,fd->btf", dy, w_down)  # A @ B^T
    d_w_down = jnp.einsum("dbt,btf->df", _tokens_last(dy), act).T
    d_gate = d_act * up * (sig * (1 + gate * (1 - sig)))  # silu'(g) = s (1 + g (1 - s))
    d_up = d_act * silu
    d_h = jnp.einsum("btf,df->btd", d_gate, w_gate) + jnp.einsum("btf,df->btd", d_up, w_up)
    h_t = _tokens_last(h)
    d_w_gate = jnp.einsum("dbt,btf->df", h_t, d_gate)
    d_w_up = jnp.einsum("dbt,btf->df", h_t, d_up)
    return d_h, d_w_gate, d_w_up, d_w_down


swiglu.defvjp(_swiglu_fwd, _swiglu_bwd)
