"""Flash attention Pallas kernels (interpret mode on CPU) against the plain-jnp reference
(`k15_jax.kernels.reference`, the model's xla path), run as an fp32 oracle, which is itself
checked against jax.nn.dot_product_attention.

Tolerances (max |kernel - reference| / max(1, max |reference|)):
fp32 outputs, lse and gradients 1e-4; bf16 outputs 2e-2 and gradients 4e-2 (the reference
runs in fp32 on the same bf16-rounded inputs).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from k15_jax.kernels.flash_attention import flash_attention, flash_attention_lse
from k15_jax.kernels.flash_plan import FlashBlockSizes, block_ranges, make_plan
from k15_jax.kernels.reference import NEG_LSE, attention_lse_reference, attention_reference

TINY = FlashBlockSizes(16, 16, 16, 16, 16, 16)
TOL = {jnp.float32: (1e-4, 1e-4), jnp.bfloat16: (2e-2, 4e-2)}  # (outputs, gradients)


def assert_close(got, want, tol, what):
    got = np.asarray(jnp.asarray(got, jnp.float32))
    want = np.asarray(jnp.asarray(want, jnp.float32))
    assert np.all(np.isfinite(got)), f"{what}: non-finite values"
    err = np.max(np.abs(got - want)) / max(1.0, np.max(np.abs(want)))
    assert err <= tol, f"{what}: normalised max error {err:.2e} > {tol:.0e}"


def oracle(q, k, v, **kw):
    """The reference in fp32 (highest precision) on the same, possibly bf16-rounded, inputs."""
    f32 = lambda x: x.astype(jnp.float32)
    return attention_reference(f32(q), f32(k), f32(v), precision="highest", **kw).astype(q.dtype)


def make_case(seed, B, T, H, G, Dh, n_segments, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    q, k, v = (
        jnp.asarray(rng.normal(size=(B, T, h, Dh)), jnp.float32).astype(dtype) for h in (H, G, G)
    )
    seg = None
    if n_segments:  # sorted packed segments of random lengths, a different cut per row
        cuts = np.sort(rng.integers(1, T, size=(B, n_segments - 1)), axis=1)
        seg = jnp.asarray((np.arange(T)[None, :, None] >= cuts[:, None, :]).sum(-1), jnp.int32)
    w = jnp.asarray(rng.normal(size=(B, T, H, Dh)), jnp.float32)
    return q, k, v, seg, w


# (seed, B, T, H, G, Dh, segments, causal, window, dtype): T never a block multiple except 64;
# GQA ratios H/G = 1, 2, 4, 8; head dims 16..128 and a non-power-of-two 24.
CASES = [
    (0, 2, 40, 2, 2, 32, 0, True, None, jnp.float32),
    (1, 1, 37, 4, 2, 16, 3, True, None, jnp.float32),
    (2, 2, 33, 4, 1, 64, 2, False, None, jnp.float32),
    (3, 1, 50, 8, 1, 24, 0, True, 11, jnp.float32),
    (4, 2, 64, 8, 2, 32, 4, True, 20, jnp.float32),
    (5, 1, 45, 4, 2, 128, 2, True, None, jnp.bfloat16),
]
SLOW_CASES = [
    (10 + i, 2, int(T), 8, G, Dh, s, c, w, jnp.float32)
    for i, (T, G, Dh, s, c, w) in enumerate(
        [(100, 1, 64, 5, True, 30), (128, 8, 32, 0, False, None), (77, 4, 128, 3, True, None)]
    )
]


def out_and_grads(fn, q, k, v, w):
    """fn's output and d/d(q, k, v) of sum(output * w), traced and compiled once."""

    def loss(q, k, v):
        out = fn(q, k, v)
        return jnp.sum(out.astype(jnp.float32) * w), out

    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    return out, grads


def check_case(seed, B, T, H, G, Dh, n_seg, causal, window, dtype, blocks=TINY):
    q, k, v, seg, w = make_case(seed, B, T, H, G, Dh, n_seg, dtype)
    tol_o, tol_g = TOL[dtype]
    kw = dict(causal=causal, segment_ids=seg, window=window)
    out, got = out_and_grads(
        lambda q, k, v: flash_attention(q, k, v, block_sizes=blocks, **kw), q, k, v, w
    )
    out_ref, want = out_and_grads(lambda q, k, v: oracle(q, k, v, **kw), q, k, v, w)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert_close(out, out_ref, tol_o, "output")
    for name, g, r in zip(("dq", "dk", "dv"), got, want, strict=True):
        assert g.shape == r.shape and g.dtype == dtype
        assert_close(g, r, tol_g, name)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"seed{c[0]}")
def test_matches_reference(case):
    check_case(*case)


def test_unequal_block_sizes():
    """Forward, dQ and dK/dV tiles of different sizes (each pass pads T its own way), with a
    one-sided window (keys j > i - w) and no causal mask."""
    blocks = FlashBlockSizes(32, 16, 16, 32, 32, 16)
    check_case(6, 1, 52, 4, 2, 32, 3, False, 24, jnp.float32, blocks=blocks)


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW_CASES, ids=lambda c: f"seed{c[0]}")
def test_matches_reference_larger(case):
    check_case(*case)


def test_fully_masked_rows_give_zero_and_finite_grads():
    """Query segments absent from the keys see nothing: o = 0, lse = NEG_LSE, zero grads."""
    q, k, v, _, w = make_case(7, 2, 24, 4, 2, 16, 0)
    rng = np.random.default_rng(7)
    q_seg = jnp.asarray(rng.integers(0, 3, size=(2, 24)), jnp.int32)
    k_seg = jnp.asarray(rng.integers(0, 2, size=(2, 24)), jnp.int32)  # segment 2 has no keys
    w_lse = jnp.asarray(rng.normal(size=(2, 4, 24)), jnp.float32)
    empty = np.asarray(q_seg == 2)
    assert empty.any() and not empty.all()

    def out_and_grads(fn, **kw):
        def loss(q, k, v):
            o, lse = fn(q, k, v, q_seg, k_seg, causal=False, **kw)
            return jnp.sum(o * w) + jnp.sum(lse * w_lse), (o, lse)

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)

    (_, (o, lse)), got = out_and_grads(flash_attention_lse, block_sizes=TINY)
    (_, (o_ref, lse_ref)), want = out_and_grads(attention_lse_reference, precision="highest")
    assert_close(o, o_ref, 1e-4, "output")
    lse, lse_ref = (np.asarray(x).transpose(0, 2, 1) for x in (lse, lse_ref))  # [B, T, H]
    assert_close(lse[~empty], lse_ref[~empty], 1e-4, "lse")
    assert np.all(np.asarray(o)[empty] == 0.0)
    assert np.all(lse[empty] == NEG_LSE)
    for name, g, r in zip(("dq", "dk", "dv"), got, want, strict=True):
        assert_close(g, r, 1e-4, name)
    assert np.all(np.asarray(got[0])[empty] == 0.0)


def test_reference_agrees_with_jax_dot_product_attention():
    """The reference itself (the model's xla path, at default precision) against
    jax.nn.dot_product_attention(implementation='xla')."""
    q, k, v, seg, _ = make_case(8, 2, 30, 4, 2, 32, 3)
    window = 9
    mask = (seg[:, :, None] == seg[:, None, :])[:, None]
    want = jax.jit(
        lambda q, k, v: jax.nn.dot_product_attention(
            q,
            k,
            v,
            mask=mask,
            is_causal=True,
            local_window_size=(window - 1, 0),
            implementation="xla",
        )
    )(q, k, v)
    got = jax.jit(
        lambda q, k, v: attention_reference(q, k, v, causal=True, segment_ids=seg, window=window)
    )(q, k, v)
    assert_close(got, want, 1e-5, "reference vs jax.nn")


def test_block_ranges_cover_visible_pairs_and_unmasked_runs_are_fully_visible():
    """[lo, hi) must contain every visible pair's block; [flo, fhi) only fully visible blocks."""
    rng = np.random.default_rng(3)
    B, T, bq, bk, window = 2, 75, 16, 16, 20
    T_p = math.ceil(T / 16) * 16
    seg = np.sort(rng.integers(0, 3, size=(B, T)), axis=1)
    seg_p = np.concatenate([seg, np.repeat(seg[:, -1:], T_p - T, 1)], 1)
    for causal, win, s in [(True, None, None), (True, window, seg_p), (False, None, seg_p)]:
        plan = make_plan(
            (B, T, 1, 16), T, causal=causal, window=win, bq=bq, bk=bk, has_seg=s is not None
        )
        assert plan.q_pad == plan.kv_pad == T_p
        s_j = None if s is None else jnp.asarray(s)
        per_q, per_k = (tuple(map(np.asarray, x)) for x in block_ranges(s_j, s_j, plan, B))
        i, j = np.arange(T_p)[:, None], np.arange(T_p)[None, :]
        vis = np.broadcast_to((j < T) & (i < T), (B, T_p, T_p)).copy()
        if causal:
            vis &= j <= i
        if win:
            vis &= j > i - win
        if s is not None:
            vis &= seg_p[:, :, None] == seg_p[:, None, :]
        # [b, q block, k block] -> visible pairs; real query rows only for "fully visible"
        blocks = vis.reshape(B, T_p // bq, bq, T_p // bk, bk).transpose(0, 1, 3, 2, 4)
        real_q = (np.arange(T_p) < T).reshape(T_p // bq, bq)[None, :, None, :, None]
        any_vis = blocks.any((3, 4))
        all_vis = (blocks | ~real_q).all((3, 4)) & real_q.any((3, 4))
        for (lo, flo, fhi, hi), a_vis, a_all in [
            (per_q, any_vis, all_vis),
            (per_k, any_vis.transpose(0, 2, 1), all_vis.transpose(0, 2, 1)),
        ]:
            idx = np.arange(a_vis.shape[-1])
            inside = (idx >= lo[..., None]) & (idx < hi[..., None])
            unmasked = (idx >= flo[..., None]) & (idx < fhi[..., None])
            assert np.all(inside[a_vis]), "a block with visible pairs is skipped"
            assert np.all(a_all[unmasked]), "a block run without its mask is not fully visible"
            assert np.all((lo <= flo) & (flo <= fhi) & (fhi <= hi))
        if causal and s is None:  # lower triangle only: about half of full
            n = T_p // bq
            lo, flo, fhi, hi = per_q
            assert int((hi - lo).sum()) == B * n * (n + 1) // 2
            assert int((fhi - flo).sum()) == B * n * (n - 1) // 2  # all but the diagonal


def triton_kernel_count(fn, *args):
    """Lowers fn for CUDA from this CPU host (Pallas -> Triton IR, no GPU needed); returns the
    number of Triton kernel calls in the module."""
    check = export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")
    exported = export.export(jax.jit(fn), platforms=["cuda"], disabled_checks=[check])(*args)
    return exported.mlir_module().count("xla.gpu.triton(")


def test_gpu_path_lowers_to_triton_with_pallas_backward():
    """Default GPU tiles, head dim 128, bf16, GQA 4, segments and window: forward is one
    Triton kernel, forward + backward three (fwd, dQ, dK/dV) - no XLA attention fallback."""
    q = jax.ShapeDtypeStruct((2, 1024, 8, 128), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((2, 1024, 2, 128), jnp.bfloat16)
    seg = jax.ShapeDtypeStruct((2, 1024), jnp.int32)

    def fwd(q, k, v, seg):
        return flash_attention(q, k, v, segment_ids=seg, window=300, interpret=False)

    def fwd_bwd(q, k, v, seg):
        return jax.vjp(lambda q, k, v: fwd(q, k, v, seg), q, k, v)[1](q)

    assert triton_kernel_count(fwd, q, kv, kv, seg) == 1
    assert triton_kernel_count(fwd_bwd, q, kv, kv, seg) == 3


def test_shape_and_option_errors():
    q = jnp.zeros((1, 16, 6, 16))
    k = jnp.zeros((1, 16, 4, 16))
    with pytest.raises(ValueError, match="kv heads"):
        flash_attention(q, k, k)
    with pytest.raises(ValueError, match="positive int"):
        flash_attention(q, q, q, window=0)
    with pytest.raises(ValueError, match="segment_ids"):
        flash_attention(q, q, q, segment_ids=jnp.zeros((1, 15), jnp.int32))
    with pytest.raises(ValueError, match="power of two"):
        FlashBlockSizes(block_q=24)
