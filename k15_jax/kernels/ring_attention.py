"""Context-parallel ring attention over a `sequence` mesh axis (shard_map + ppermute).

The sequence is cut into n equal chunks, one per device on the axis. Each device keeps its
query chunk and passes its K/V chunk (and K segment ids) around the ring; at step s device i
holds the K/V chunk of device (i - s) mod n and attends to it with the Pallas flash kernel,
merging block results by their log-sum-exp (Liu et al. 2023, "Ring Attention"):

    lse = logaddexp(lse_a, lse_b),   o = exp(lse_a - lse) o_a + exp(lse_b - lse) o_b

Causal: chunk pairs above the diagonal are skipped, the diagonal uses the causal kernel,
those below the full one. The backward is a second ring (custom_vjp, not autodiff through the
forward loop): K/V travel again together with their dK/dV accumulators, each step runs the
Pallas backward kernels with the global lse and delta, and after n hops the accumulators are
home. Memory per device is O(T / n); no step's K/V is kept for the backward.

Shapes: B batch, T tokens (divisible by n), H query heads, G kv heads, Dh head dim.
Other mesh axes are treated as replicated by this call. Reference: `attention_reference` on
the gathered sequence (`k15_jax.kernels.reference`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from k15_jax.kernels.flash_attention import check_qkv
from k15_jax.kernels.flash_backward import flash_backward, row_delta
from k15_jax.kernels.flash_forward import flash_forward
from k15_jax.kernels.flash_plan import FlashBlockSizes, resolve_interpret
from k15_jax.kernels.reference import NEG_LSE

_SKIP, _DIAG, _FULL = 0, 1, 2


def _kind(src, me, causal):
    """Which block the K/V chunk of device `src` is for the queries of device `me`."""
    if not causal:
        return jnp.int32(_FULL)
    return jnp.where(src == me, _DIAG, jnp.where(src < me, _FULL, _SKIP)).astype(jnp.int32)


def _branches(skip, run):
    """lax.switch branches in `_kind` order; run(k_c, v_c, ks_c, causal) attends one chunk."""
    return [skip, lambda *kv: run(*kv, True), lambda *kv: run(*kv, False)]


def _ring_forward(q, k, v, seg, axis_name, n, causal, block_sizes, interpret):
    """Local chunks q [B, C, H, Dh], k/v [B, C, G, Dh], seg [B, C] or None -> o (fp32), lse."""
    me = lax.axis_index(axis_name)
    perm = [(j, (j + 1) % n) for j in range(n)]
    B, C, H, _ = q.shape
    kw = dict(window=None, block_sizes=block_sizes, interpret=interpret, out_dtype=jnp.float32)

    def run(k_c, v_c, ks_c, kind_causal):
        return flash_forward(q, k_c, v_c, seg, ks_c, causal=kind_causal, **kw)

    def skip(k_c, v_c, ks_c):
        return jnp.zeros(q.shape, jnp.float32), jnp.full((B, H, C), NEG_LSE, jnp.float32)

    branches = _branches(skip, run)

    def accumulate(s, kv, acc):
        o, lse = acc
        src = (me - s) % n
        o_b, lse_b = lax.switch(_kind(src, me, causal), branches, *kv)
        lse_new = jnp.logaddexp(lse, lse_b)
        w_a = jnp.exp(lse - lse_new).transpose(0, 2, 1)[..., None]  # [B, C, H, 1]
        w_b = jnp.exp(lse_b - lse_new).transpose(0, 2, 1)[..., None]
        return o * w_a + o_b * w_b, lse_new

    def step(s, carry):
        kv, acc = carry
        nxt = lax.ppermute(kv, axis_name, perm)  # sent while this chunk is computed
        return nxt, accumulate(s, kv, acc)

    acc = (jnp.zeros(q.shape, jnp.float32), jnp.full((B, H, C), NEG_LSE, jnp.float32))
    kv, acc = lax.fori_loop(0, n - 1, step, ((k, v, seg), acc))
    return accumulate(n - 1, kv, acc)


def _ring_backward(q, k, v, seg, o, lse, do, axis_name, n, causal, block_sizes, interpret):
    me = lax.axis_index(axis_name)
    perm = [(j, (j + 1) % n) for j in range(n)]
    delta = row_delta(o, do)
    kw = dict(window=None, block_sizes=block_sizes, interpret=interpret, out_dtype=jnp.float32)

    def run(k_c, v_c, ks_c, kind_causal):
        return flash_backward(q, k_c, v_c, seg, ks_c, lse, do, delta, causal=kind_causal, **kw)

    def skip(k_c, v_c, ks_c):
        z = lambda x: jnp.zeros(x.shape, jnp.float32)
        return z(q), z(k_c), z(v_c)

    branches = _branches(skip, run)

    def accumulate(s, kv, dkv, dq):
        dq_b, dk_b, dv_b = lax.switch(_kind((me - s) % n, me, causal), branches, *kv)
        return (dkv[0] + dk_b, dkv[1] + dv_b), dq + dq_b

    def step(s, carry):
        kv, dkv, dq = carry
        dkv, dq = accumulate(s, kv, dkv, dq)
        kv, dkv = lax.ppermute((kv, dkv), axis_name, perm)  # dK/dV travel with their K/V
        return kv, dkv, dq

    zeros = jnp.zeros(k.shape, jnp.float32)
    init = ((k, v, seg), (zeros, zeros), jnp.zeros(q.shape, jnp.float32))
    kv, dkv, dq = lax.fori_loop(0, n - 1, step, init)
    dkv, dq = accumulate(n - 1, kv, dkv, dq)
    dk, dv = lax.ppermute(dkv, axis_name, perm)  # the n-th hop brings them home
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7, 8))
def _ring(q, k, v, seg, axis_name, n, causal, block_sizes, interpret):
    return _ring_fwd(q, k, v, seg, axis_name, n, causal, block_sizes, interpret)[0]


def _ring_fwd(q, k, v, seg, *statics):
    """statics: (axis_name, n, causal, block_sizes, interpret), `_ring`'s static arguments."""
    o, lse = _ring_forward(q, k, v, seg, *statics)
    o = o.astype(q.dtype)
    return o, (q, k, v, seg, o, lse)


def _ring_bwd(*args):
    *statics, (q, k, v, seg, o, lse), do = args
    dq, dk, dv = _ring_backward(q, k, v, seg, o, lse, do.astype(q.dtype), *statics)
    return dq, dk, dv, None


_ring.defvjp(_ring_fwd, _ring_bwd)


@functools.partial(
    jax.jit, static_argnames=("mesh", "axis_name", "causal", "interpret", "block_sizes")
)
def ring_attention(
    q,
    k,
    v,
    *,
    mesh,
    axis_name="sequence",
    causal=True,
    segment_ids=None,
    interpret=None,
    block_sizes=None,
):
    """Attention with the sequence split over mesh axis `axis_name`; differentiable.

    q [B, T, H, Dh], k/v [B, T, G, Dh], segment_ids [B, T] int32 or None, T divisible by the
    axis size. Same result as flash_attention(q, k, v, causal=causal, segment_ids=...), but each
    device only ever holds T / n tokens of q, k, v. Returns [B, T, H, Dh] sharded along T.
    """
    check_qkv(q, k, v, name="ring_attention")
    if axis_name not in mesh.shape:
        raise ValueError(
            f"ring_attention: mesh axes {tuple(mesh.shape)} have no '{axis_name}'; pass "
            "axis_name= one of them or build the mesh with a sequence axis"
        )
    n = mesh.shape[axis_name]
    T = q.shape[1]
    if k.shape[1] != T or T % n:
        raise ValueError(
            f"ring_attention: q/k/v length {T} (k {k.shape[1]}) must be equal and divisible by "
            f"the '{axis_name}' axis size {n}; pad the sequence to a multiple of {n}"
        )
    if segment_ids is not None and segment_ids.shape != q.shape[:2]:
        raise ValueError(
            f"ring_attention: segment_ids {segment_ids.shape} must be [batch, length] = "
            f"{q.shape[:2]}"
        )
    statics = (axis_name, n, causal, block_sizes or FlashBlockSizes(), resolve_interpret(interpret))
    local = lambda q, k, v, seg: _ring(q, k, v, seg, *statics)
    x_spec, s_spec = P(None, axis_name, None, None), P(None, axis_name)
    if segment_ids is None:
        fn = lambda q, k, v: local(q, k, v, None)
        in_specs, args = (x_spec,) * 3, (q, k, v)
    else:
        fn = local
        in_specs, args = (x_spec,) * 3 + (s_spec,), (q, k, v, segment_ids.astype(jnp.int32))
    args = [_place(a, mesh, axis_name, spec) for a, spec in zip(args, in_specs, strict=True)]
    # check_vma off: pallas_call carries no varying-manual-axes typing.
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=x_spec, check_vma=False)(*args)


def _place(x, mesh, axis_name, spec):
    """Shards x as `spec` on meshes whose sequence axis is Explicit (reshard) or Auto."""
    sharding = NamedSharding(mesh, spec)
    axis_type = dict(zip(mesh.axis_names, mesh.axis_types, strict=True))[axis_name]
    if axis_type == AxisType.Explicit:
        return jax.reshard(x, sharding)
    return lax.with_sharding_constraint(x, sharding)
