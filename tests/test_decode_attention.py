"""Split-K decode attention (interpret mode on CPU) against the plain-jnp references
(`k15_jax.kernels.reference`, the model's xla path) run as fp32 oracles.

Tolerance: max |kernel - reference| / max(1, max |reference|) <= 1e-5 for fp32, 2e-2 for bf16.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from k15_jax.kernels.decode_attention import DecodeBlockSizes, decode_attention
from k15_jax.kernels.reference import (
    attention_reference,
    cached_attention_reference,
    decode_attention_reference,
)

TOL = {jnp.float32: 1e-5, jnp.bfloat16: 2e-2}


def assert_close(got, want, tol):
    got = np.asarray(jnp.asarray(got, jnp.float32))
    want = np.asarray(jnp.asarray(want, jnp.float32))
    assert np.all(np.isfinite(got))
    err = np.max(np.abs(got - want)) / max(1.0, np.max(np.abs(want)))
    assert err <= tol, f"normalised max error {err:.2e} > {tol:.0e}"


def oracle(q, k, v, lengths):
    """The reference in fp32 (highest precision) on the same, possibly bf16-rounded, inputs."""
    f32 = lambda x: x.astype(jnp.float32)
    out = decode_attention_reference(f32(q), f32(k), f32(v), lengths, precision="highest")
    return out.astype(q.dtype)


def make_case(seed, B, S, H, G, Dh, dtype):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.normal(size=(B, H, Dh)), jnp.float32).astype(dtype)
    k, v = (jnp.asarray(rng.normal(size=(B, S, G, Dh)), jnp.float32).astype(dtype) for _ in "kv")
    lengths = rng.integers(1, S + 1, size=B)
    lengths[0] = 0  # an empty sequence
    lengths[-1] = S  # a full cache
    return q, k, v, jnp.asarray(lengths, jnp.int32)


# (seed, B, S, H, G, Dh, block_k, num_splits, dtype): GQA ratios 1/2/4/8, S not a block
# multiple, one to several splits.
CASES = [
    (0, 3, 48, 4, 4, 32, 16, 4, jnp.float32),
    (1, 4, 100, 8, 4, 64, 16, 2, jnp.float32),
    (2, 3, 64, 8, 2, 16, 16, 16, jnp.float32),
    (3, 2, 70, 8, 1, 24, 32, 1, jnp.float32),
    (4, 3, 64, 8, 1, 64, 16, 4, jnp.bfloat16),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"seed{c[0]}")
def test_matches_reference(case):
    seed, B, S, H, G, Dh, bk, splits, dtype = case
    q, k, v, lengths = make_case(seed, B, S, H, G, Dh, dtype)
    out = decode_attention(q, k, v, lengths, block_sizes=DecodeBlockSizes(bk, splits))
    assert out.shape == q.shape and out.dtype == q.dtype
    assert_close(out, jax.jit(oracle)(q, k, v, lengths), TOL[dtype])
    assert np.all(np.asarray(out[0]) == 0.0)  # lengths[0] == 0


def test_equals_last_row_of_causal_attention():
    """Decoding token L-1 over a cache of L entries = row L-1 of causal attention."""
    B, S, H, G, Dh = 3, 40, 4, 2, 32
    rng = np.random.default_rng(5)
    q = jnp.asarray(rng.normal(size=(B, S, H, Dh)), jnp.float32)
    k, v = (jnp.asarray(rng.normal(size=(B, S, G, Dh)), jnp.float32) for _ in "kv")
    lengths = np.array([1, 17, 40])
    full = jax.jit(lambda q, k, v: attention_reference(q, k, v, precision="highest"))(q, k, v)
    want = full[np.arange(B), lengths - 1]
    q_last = q[np.arange(B), lengths - 1]
    got = decode_attention(
        q_last, k, v, jnp.asarray(lengths, jnp.int32), block_sizes=DecodeBlockSizes(16, 4)
    )
    assert_close(got, want, 1e-5)


def test_gpu_path_lowers_to_triton():
    """Lowered for CUDA from this CPU host (Pallas -> Triton IR, no GPU needed): one kernel."""
    q = jax.ShapeDtypeStruct((4, 32, 128), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((4, 4096, 8, 128), jnp.bfloat16)
    lengths = jax.ShapeDtypeStruct((4,), jnp.int32)
    check = export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")
    fn = jax.jit(lambda q, k, v, n: decode_attention(q, k, v, n, interpret=False))
    exported = export.export(fn, platforms=["cuda"], disabled_checks=[check])(q, kv, kv, lengths)
    assert exported.mlir_module().count("xla.gpu.triton(") == 1


def test_shape_errors():
    q = jnp.zeros((2, 6, 16))
    k = jnp.zeros((2, 32, 4, 16))
    with pytest.raises(ValueError, match="kv heads"):
        decode_attention(q, k, k, jnp.zeros((2,), jnp.int32))
    with pytest.raises(ValueError, match="lengths"):
        decode_attention(q, k[:, :, :3], k[:, :, :3], jnp.zeros((3,), jnp.int32))
    with pytest.raises(ValueError, match="power of two"):
        DecodeBlockSizes(block_k=48)


def test_cached_attention_reference_is_decode_and_causal_attention():
    """One query at lengths - 1 is decode attention; T queries at positions 0..T-1 over a
    cache of their own T keys is causal attention (both independent references)."""
    kq, kk, kv = jax.random.split(jax.random.key(3), 3)
    B, T, H, G, Dh = 3, 5, 4, 2, 8
    q = jax.random.normal(kq, (B, T, H, Dh))
    k = jax.random.normal(kk, (B, T, G, Dh))
    v = jax.random.normal(kv, (B, T, G, Dh))
    positions = jnp.broadcast_to(jnp.arange(T), (B, T))
    np.testing.assert_allclose(
        cached_attention_reference(q, k, v, positions), attention_reference(q, k, v), atol=1e-5
    )
    lengths = jnp.array([5, 2, 0])
    got = cached_attention_reference(q[:, :1], k, v, (lengths - 1)[:, None])[:, 0]
    np.testing.assert_allclose(got, decode_attention_reference(q[:, 0], k, v, lengths), atol=1e-5)
