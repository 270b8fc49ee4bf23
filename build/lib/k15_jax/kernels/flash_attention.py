"""Flash attention forward and backward as Pallas kernels (training and prefill).

    o_i = sum_j softmax_j(q_i . k_j / sqrt(Dh) + mask_ij) v_j,   lse_i = log sum_j exp(...)

FlashAttention-2 (Dao 2023): the forward streams K/V blocks past a resident Q block with an
online softmax and saves the fp32 log-sum-exp; the backward recomputes P from the lse, one
kernel for dQ (grid over Q blocks) and one for dK/dV (grid over K/V blocks, looping over the
H/G query heads of its KV head, so grouped-query K/V are never repeated in memory).

The mask is causal (j <= i), segment (seg_q[i] == seg_k[j]), sliding window (i - w < j) and
padding (j < T). Block pairs the mask empties are skipped: per Q block the kernels loop only
over the K/V block range [lo, hi) computed in the wrapper from positions and per-block
segment min/max (and the transposed range for the dK/dV kernel), so causal costs about half
of full and packed sequences cost about the sum of their squares. Blocks visible in full
(below the diagonal, inside one segment) skip the elementwise mask.

Fully masked rows return o = 0, lse = NEG_LSE (finite), and zero gradients.

Shapes: B batch, T tokens, H query heads, G kv heads (G divides H), Dh head dim.
Used by the model's attention (k1.5 report, sections 2.6.2 and 3.3: long-context RL).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from k15_jax.kernels.flash_plan import (
    LOG2E,
    NEG_INF,
    NEG_LSE,
    FlashBlockSizes,
    _block_loop,
    _dot,
    _prepare,
    block_ranges,
    compiler_params,
    make_plan,
    pad_axis,
    padded_head_dim,
    resolve_interpret,
)


def _fwd_kernel(q_ref, k_ref, v_ref, qs_ref, ks_ref, *refs, plan):
    bound_refs, (o_ref, lse_ref) = refs[:4], refs[4:]
    bq, bk = plan.bq, plan.bk
    q = q_ref[...]
    q_pos = pl.program_id(0) * bq + jnp.arange(bq)
    q_seg = qs_ref[...]
    c = plan.scale * LOG2E  # exp2 domain: exp(x) = exp2(x * log2 e)

    def body(kb, carry, masked):
        o, m, l = carry
        start = pl.multiple_of(kb * bk, bk)
        k, v = k_ref[pl.ds(start, bk), :], v_ref[pl.ds(start, bk), :]
        s = _dot(q, k, (1, 1)) * c
        mask = None
        if masked:
            mask = plan.tile_mask(q_pos, start + jnp.arange(bk), q_seg, ks_ref[pl.ds(start, bk)])
        if mask is not None:
            s = jnp.where(mask, s, NEG_INF)
        m_new = jnp.maximum(m, s.max(-1))
        alpha = jnp.exp2(m - m_new)
        p = jnp.exp2(s - m_new[:, None])
        if mask is not None:  # rows with nothing visible yet have s == m_new == NEG_INF
            p = jnp.where(mask, p, 0.0)
        l = alpha * l + p.sum(-1)
        o = alpha[:, None] * o + _dot(p.astype(v.dtype), v)
        return o, m_new, l

    init = (
        jnp.zeros(q.shape, jnp.float32),
        jnp.full((bq,), NEG_INF, jnp.float32),
        jnp.zeros((bq,), jnp.float32),
    )
    o, m, l = _block_loop(bound_refs, body, init)
    empty = l == 0.0
    l_safe = jnp.where(empty, 1.0, l)
    o_ref[...] = (o / l_safe[:, None]).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(empty, NEG_LSE, (m + jnp.log2(l_safe)) / LOG2E)


def _probs_and_ds(q, k, v, do, lse, delta, mask, c):
    """Recomputed P = exp(s - lse) (0 where masked) and dS = P * (dP - delta), both [bq, bk]."""
    p = jnp.exp2(_dot(q, k, (1, 1)) * c - lse[:, None] * LOG2E)
    if mask is not None:
        p = jnp.where(mask, p, 0.0)
    return p, p * (_dot(do, v, (1, 1)) - delta[:, None])


def _dq_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, dl_ref, qs_ref, ks_ref, *refs, plan):
    bound_refs, dq_ref = refs[:4], refs[4]
    bq, bk = plan.bq, plan.bk
    q, do, lse, delta, q_seg = q_ref[...], do_ref[...], lse_ref[...], dl_ref[...], qs_ref[...]
    q_pos = pl.program_id(0) * bq + jnp.arange(bq)

    def body(kb, dq, masked):
        start = pl.multiple_of(kb * bk, bk)
        k, v = k_ref[pl.ds(start, bk), :], v_ref[pl.ds(start, bk), :]
        mask = None
        if masked:
            mask = plan.tile_mask(q_pos, start + jnp.arange(bk), q_seg, ks_ref[pl.ds(start, bk)])
        _, ds = _probs_and_ds(q, k, v, do, lse, delta, mask, plan.scale * LOG2E)
        return dq + _dot(ds.astype(k.dtype), k)

    dq = _block_loop(bound_refs, body, jnp.zeros(q.shape, jnp.float32))
    dq_ref[...] = (dq * plan.scale).astype(dq_ref.dtype)


def _dkv_kernel(k_ref, v_ref, q_ref, do_ref, lse_ref, dl_ref, qs_ref, ks_ref, *refs, plan, rep):
    bound_refs, (dk_ref, dv_ref) = refs[:4], refs[4:]
    bq, bk = plan.bq, plan.bk
    k, v, k_seg = k_ref[...], v_ref[...], ks_ref[...]
    k_pos = pl.program_id(0) * bk + jnp.arange(bk)
    carry = (jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32))
    for r in range(rep):  # the query heads sharing this KV head

        def body(qb, carry, masked, r=r):
            dk, dv = carry
            start = pl.multiple_of(qb * bq, bq)
            rows = pl.ds(start, bq)
            q, do = q_ref[rows, r, :], do_ref[rows, r, :]
            mask = None
            if masked:
                mask = plan.tile_mask(start + jnp.arange(bq), k_pos, qs_ref[rows], k_seg)
            p, ds = _probs_and_ds(
                q, k, v, do, lse_ref[r, rows], dl_ref[r, rows], mask, plan.scale * LOG2E
            )
            dv = dv + _dot(p.astype(do.dtype), do, (0, 0))
            dk = dk + _dot(ds.astype(q.dtype), q, (0, 0))
            return dk, dv

        carry = _block_loop(bound_refs, body, carry)
    dk, dv = carry
    dk_ref[...] = (dk * plan.scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


# ----------------------------------------------------------------------------- pallas calls


def flash_forward(q, k, v, q_seg, k_seg, *, causal, window, block_sizes, interpret, out_dtype=None):
    """Forward pass, not differentiable: o [B, Tq, H, Dh] (q's dtype unless out_dtype) and lse
    [B, H, Tq] fp32. Segment ids are [B, Tq] / [B, Tk] int32 or both None."""
    B, Tq, H, Dh = q.shape
    rep = H // k.shape[2]
    bs = block_sizes.fit(Tq, k.shape[1])
    plan = make_plan(
        q.shape,
        k.shape[1],
        causal=causal,
        window=window,
        bq=bs.block_q,
        bk=bs.block_k,
        has_seg=q_seg is not None,
    )
    Dp = padded_head_dim(Dh)
    (qp,), (kp, vp), q_seg, k_seg = _prepare(plan, [q], [k, v], q_seg, k_seg, Dp)
    bounds, _ = block_ranges(q_seg, k_seg, plan, B)
    bq = plan.bq
    q_spec = pl.BlockSpec((None, bq, None, Dp), lambda i, b, h: (b, i, h, 0))
    kv_spec = pl.BlockSpec((None, plan.kv_pad, None, Dp), lambda i, b, h: (b, 0, h // rep, 0))
    range_spec = pl.BlockSpec((None, None), lambda i, b, h: (b, i))
    in_specs = [
        q_spec,
        kv_spec,
        kv_spec,
        pl.BlockSpec((None, bq), lambda i, b, h: (b, i)),
        pl.BlockSpec((None, plan.kv_pad), lambda i, b, h: (b, 0)),
        *[range_spec] * 4,
    ]
    o, lse = pl.pallas_call(
        functools.partial(_fwd_kernel, plan=plan),
        grid=(plan.q_pad // bq, B, H),
        in_specs=in_specs,
        out_specs=[q_spec, pl.BlockSpec((None, None, bq), lambda i, b, h: (b, h, i))],
        out_shape=[
            jax.ShapeDtypeStruct(qp.shape, out_dtype or q.dtype),
            jax.ShapeDtypeStruct((B, H, plan.q_pad), jnp.float32),
        ],
        compiler_params=compiler_params(interpret, Dp, bs.num_warps, bs.num_stages),
        interpret=interpret,
        name="flash_attention_fwd",
    )(qp, kp, vp, q_seg, k_seg, *bounds)
    return o[:, :Tq, :, :Dh], lse[:, :, :Tq]


def flash_backward(
    q, k, v, q_seg, k_seg, lse, do, delta, *, causal, window, block_sizes, interpret, out_dtype=None
):
    """dq, dk, dv given the forward's lse [B, H, Tq] and delta = rowsum(o * do) - dlse [B, H, Tq].

    Subtracting the lse cotangent from delta folds d(lse)/d(s) = p into the usual
    ds = p * (dp - delta). Outputs have the inputs' dtypes unless out_dtype is given.
    """
    B, Tq, H, Dh = q.shape
    Tk, G = k.shape[1], k.shape[2]
    rep = H // G
    bs = block_sizes.fit(Tq, Tk)
    Dp = padded_head_dim(Dh)
    plan_for = functools.partial(
        make_plan,
        q.shape,
        Tk,
        causal=causal,
        window=window,
        has_seg=q_seg is not None,
        pad_q=max(bs.block_q_dq, bs.block_q_dkv),
        pad_k=max(bs.block_k_dq, bs.block_k_dkv),
    )
    plan = plan_for(bq=bs.block_q_dq, bk=bs.block_k_dq)
    # Padded query rows have do = 0 and delta = 0, so they add nothing to dk/dv.
    (qp, dop), (kp, vp), q_seg, k_seg = _prepare(plan, [q, do], [k, v], q_seg, k_seg, Dp)
    lse_p = pad_axis(lse.astype(jnp.float32), 2, plan.q_pad)
    delta_p = pad_axis(delta.astype(jnp.float32), 2, plan.q_pad)
    args = (lse_p, delta_p, q_seg, k_seg)
    cparams = compiler_params(interpret, Dp, bs.num_warps, bs.num_stages)
    dq_dtype, dk_dtype, dv_dtype = (out_dtype or x.dtype for x in (q, k, v))

    # dQ: grid over query blocks, loop over visible K/V blocks.
    bq, Tk_p = plan.bq, plan.kv_pad
    bounds, _ = block_ranges(q_seg, k_seg, plan, B)
    q_spec = pl.BlockSpec((None, bq, None, Dp), lambda i, b, h: (b, i, h, 0))
    kv_spec = pl.BlockSpec((None, Tk_p, None, Dp), lambda i, b, h: (b, 0, h // rep, 0))
    row_spec = pl.BlockSpec((None, None, bq), lambda i, b, h: (b, h, i))
    range_spec = pl.BlockSpec((None, None), lambda i, b, h: (b, i))
    seg_specs = [
        pl.BlockSpec((None, bq), lambda i, b, h: (b, i)),
        pl.BlockSpec((None, Tk_p), lambda i, b, h: (b, 0)),
    ]
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, plan=plan),
        grid=(plan.q_pad // bq, B, H),
        in_specs=[q_spec, kv_spec, kv_spec, q_spec, row_spec, row_spec, *seg_specs]
        + [range_spec] * 4,
        out_specs=q_spec,
        out_shape=jax.ShapeDtypeStruct(qp.shape, dq_dtype),
        compiler_params=cparams,
        interpret=interpret,
        name="flash_attention_dq",
    )(qp, kp, vp, dop, *args, *bounds)

    # dK, dV: grid over K/V blocks of each KV head, loop over its query heads' visible blocks.
    plan = plan_for(bq=bs.block_q_dkv, bk=bs.block_k_dkv)
    bk, Tq_p = plan.bk, plan.q_pad
    _, bounds = block_ranges(q_seg, k_seg, plan, B)
    kv_spec = pl.BlockSpec((None, bk, None, Dp), lambda j, b, g: (b, j, g, 0))
    q_spec = pl.BlockSpec((None, Tq_p, rep, Dp), lambda j, b, g: (b, 0, g, 0))
    row_spec = pl.BlockSpec((None, rep, Tq_p), lambda j, b, g: (b, g, 0))
    range_spec = pl.BlockSpec((None, None), lambda j, b, g: (b, j))
    seg_specs = [
        pl.BlockSpec((None, Tq_p), lambda j, b, g: (b, 0)),
        pl.BlockSpec((None, bk), lambda j, b, g: (b, j)),
    ]
    dk, dv = pl.pallas_call(
        functools.partial(_dkv_kernel, plan=plan, rep=rep),
        grid=(plan.kv_pad // bk, B, G),
        in_specs=[kv_spec, kv_spec, q_spec, q_spec, row_spec, row_spec, *seg_specs]
        + [range_spec] * 4,
        out_specs=[kv_spec, kv_spec],
        out_shape=[
            jax.ShapeDtypeStruct(kp.shape, dk_dtype),
            jax.ShapeDtypeStruct(vp.shape, dv_dtype),
        ],
        compiler_params=cparams,
        interpret=interpret,
        name="flash_attention_dkv",
    )(kp, vp, qp, dop, *args, *bounds)
    return dq[:, :Tq, :, :Dh], dk[:, :Tk, :, :Dh], dv[:, :Tk, :, :Dh]


def row_delta(o, do, dlse=None):
    """delta_i = sum_d o_id do_id - dlse_i, fp32 [B, H, T] (the FlashAttention-2 'D' term)."""
    delta = jnp.einsum(
        "bthd,bthd->bht", o.astype(jnp.float32), do.astype(jnp.float32), precision="highest"
    )
    return delta if dlse is None else delta - dlse.astype(jnp.float32)


# ----------------------------------------------------------------------------- custom vjp


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _flash(q, k, v, q_seg, k_seg, mask, opts):
    """mask = (causal, window); opts = (block_sizes, interpret): static."""
    return flash_forward(
        q,
        k,
        v,
        q_seg,
        k_seg,
        causal=mask[0],
        window=mask[1],
        block_sizes=opts[0],
        interpret=opts[1],
    )


def _flash_fwd(q, k, v, q_seg, k_seg, mask, opts):
    o, lse = _flash(q, k, v, q_seg, k_seg, mask, opts)
    return (o, lse), (q, k, v, q_seg, k_seg, o, lse)


def _flash_bwd(mask, opts, res, cotangents):
    q, k, v, q_seg, k_seg, o, lse = res
    do, dlse = cotangents
    delta = row_delta(o, do, dlse)
    dq, dk, dv = flash_backward(
        q,
        k,
        v,
        q_seg,
        k_seg,
        lse,
        do.astype(q.dtype),
        delta,
        causal=mask[0],
        window=mask[1],
        block_sizes=opts[0],
        interpret=opts[1],
    )
    return dq, dk, dv, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def check_qkv(q, k, v, *, name="flash_attention"):
    """Validates [B, T, H, Dh] / [B, T, G, Dh] shapes and dtypes with errors that say the fix."""
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(
            f"{name}: q, k, v must be 4-D [batch, length, heads, head_dim]; "
            f"got q{q.shape} k{k.shape} v{v.shape}"
        )
    if k.shape != v.shape:
        raise ValueError(f"{name}: k{k.shape} and v{v.shape} must have the same shape")
    B, T, H, Dh = q.shape
    if k.shape[0] != B or k.shape[3] != Dh:
        raise ValueError(
            f"{name}: k/v {k.shape} must match q {q.shape} in batch and head_dim; "
            "reshape the projections to [batch, length, heads, head_dim]"
        )
    if H % k.shape[2]:
        raise ValueError(
            f"{name}: kv heads ({k.shape[2]}) must divide query heads ({H}); "
            "choose num_kv_heads among the divisors of num_heads"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"{name}: q, k, v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype})")


def check_mask_args(window, *, name="flash_attention"):
    if window is not None and int(window) < 1:
        raise ValueError(
            f"{name}: window={window!r} must be a positive int (keys i - w < j) or None"
        )


@functools.partial(jax.jit, static_argnames=("causal", "window", "interpret", "block_sizes"))
def flash_attention_lse(
    q,
    k,
    v,
    q_segment_ids=None,
    kv_segment_ids=None,
    *,
    causal=True,
    window=None,
    interpret=None,
    block_sizes=None,
):
    """Attention output and log-sum-exp, both differentiable (ring attention combines blocks).

    q [B, Tq, H, Dh], k/v [B, Tk, G, Dh], segment ids [B, Tq] / [B, Tk] int32 (both or neither);
    causal and window compare positions counted from 0 on both sides.
    Returns o [B, Tq, H, Dh] (q's dtype) and lse [B, H, Tq] fp32 (NEG_LSE where no key is seen).
    """
    check_qkv(q, k, v, name="flash_attention_lse")
    check_mask_args(window, name="flash_attention_lse")
    if (q_segment_ids is None) != (kv_segment_ids is None):
        raise ValueError(
            "flash_attention_lse: pass both q_segment_ids and kv_segment_ids or neither"
        )
    if q_segment_ids is not None and (
        q_segment_ids.shape != q.shape[:2] or kv_segment_ids.shape != k.shape[:2]
    ):
        raise ValueError(
            f"flash_attention_lse: segment ids {q_segment_ids.shape}/{kv_segment_ids.shape} "
            f"must be [batch, length] = {q.shape[:2]}/{k.shape[:2]}"
        )
    opts = (block_sizes or FlashBlockSizes(), resolve_interpret(interpret))
    return _flash(q, k, v, q_segment_ids, kv_segment_ids, (causal, window), opts)


@functools.partial(jax.jit, static_argnames=("causal", "window", "interpret", "block_sizes"))
def flash_attention(
    q, k, v, *, causal=True, segment_ids=None, window=None, interpret=None, block_sizes=None
):
    """Flash attention: softmax(q k^T / sqrt(Dh) + mask) v with fp32 accumulation.

    q [B, T, H, Dh]; k, v [B, T, G, Dh] with G dividing H (grouped-query, K/V not repeated);
    segment_ids [B, T] int32 or None: tokens attend only within their own segment (every id,
    padding's included, is an ordinary segment); window w or None: query i sees keys j > i - w
    (with causal, the sliding window i - w < j <= i). Returns [B, T, H, Dh] in q's dtype.
    interpret=None runs the Pallas interpreter exactly when the default backend is the CPU.
    """
    check_qkv(q, k, v)
    if k.shape[1] != q.shape[1]:
        raise ValueError(
            f"flash_attention: q length {q.shape[1]} != k/v length {k.shape[1]}; "
            "use flash_attention_lse for cross-length attention"
        )
    if segment_ids is not None and segment_ids.shape != q.shape[:2]:
        raise ValueError(
            f"flash_attention: segment_ids {segment_ids.shape} must be [batch, length] = "
            f"{q.shape[:2]}"
        )
    kw = dict(causal=causal, window=window, interpret=interpret, block_sizes=block_sizes)
    return flash_attention_lse(q, k, v, segment_ids, segment_ids, **kw)[0]


# ----------------------------------------------------------------------------- reference


def flash_attention_lse_reference(
    q, k, v, q_segment_ids=None, kv_segment_ids=None, *, causal=True, window=None
):
    """Plain-jnp oracle for flash_attention_lse: materialises the [B, G, H/G, Tq, Tk] scores."""
    B, Tq, H, Dh = q.shape
    Tk, G = k.shape[1], k.shape[2]
    qg = q.astype(jnp.float32).reshape(B, Tq, G, H // G, Dh)
    s = jnp.einsum("bqgrd,bkgd->bgrqk", qg, k.astype(jnp.float32), precision="highest")
    s = s / math.sqrt(Dh)
    i = jnp.arange(Tq)[:, None]
    j = jnp.arange(Tk)[None, :]
    mask = jnp.ones((Tq, Tk), bool)
    if causal:
        mask &= j <= i
    if window is not None:
        mask &= j > i - window
    mask = jnp.broadcast_to(mask, (B, 1, 1, Tq, Tk))
    if q_segment_ids is not None:
        mask &= (q_segment_ids[:, :, None] == kv_segment_ids[:, None, :])[:, None, None]
    s = jnp.where(mask, s, -jnp.inf)
    m = lax.stop_gradient(jnp.max(s, -1, keepdims=True))
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    p = jnp.where(mask, jnp.exp(s - m), 0.0)
    l = p.sum(-1, keepdims=True)
    empty = l == 0.0
    l_safe = jnp.where(empty, 1.0, l)
    o = jnp.einsum("bgrqk,bkgd->bqgrd", p / l_safe, v.astype(jnp.float32), precision="highest")
    lse = jnp.where(empty, NEG_LSE, m + jnp.log(l_safe))[..., 0].reshape(B, H, Tq)
    return o.reshape(B, Tq, H, Dh).astype(q.dtype), lse


def flash_attention_reference(q, k, v, *, causal=True, segment_ids=None, window=None):
    """Plain-jnp oracle for flash_attention (same signature minus kernel options)."""
    o, _ = flash_attention_lse_reference(
        q, k, v, segment_ids, segment_ids, causal=causal, window=window
    )
    return o
