"""Flash attention backward as Pallas kernels (FlashAttention-2, Dao 2023).

The backward recomputes P from the forward's fp32 log-sum-exp: one kernel for dQ (grid over
Q blocks, looping over the visible K/V blocks) and one for dK/dV (grid over K/V blocks,
looping over the H/G query heads of its KV head, so grouped-query K/V are never repeated in
memory). Masks and skipped blocks as in the forward (`flash_forward`).

Shapes: B batch, Tq / Tk tokens, H query heads, G kv heads (G divides H), Dh head dim.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from k15_jax.kernels.flash_plan import (
    LOG2E,
    block_loop,
    block_ranges,
    compiler_params,
    dot,
    make_plan,
    pad_axis,
    padded_head_dim,
    prepare_inputs,
)


def _probs_and_ds(q, k, v, do, lse, delta, mask, c):
    """Recomputed P = exp(s - lse) (0 where masked) and dS = P * (dP - delta), both [bq, bk]."""
    p = jnp.exp2(dot(q, k, (1, 1)) * c - lse[:, None] * LOG2E)
    if mask is not None:
        p = jnp.where(mask, p, 0.0)
    return p, p * (dot(do, v, (1, 1)) - delta[:, None])


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
        return dq + dot(ds.astype(k.dtype), k)

    dq = block_loop(bound_refs, body, jnp.zeros(q.shape, jnp.float32))
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
            dv = dv + dot(p.astype(do.dtype), do, (0, 0))
            dk = dk + dot(ds.astype(q.dtype), q, (0, 0))
            return dk, dv

        carry = block_loop(bound_refs, body, carry)
    dk, dv = carry
    dk_ref[...] = (dk * plan.scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


# ----------------------------------------------------------------------------- pallas calls


def _dq_call(plan, rep, qp, kp, vp, dop, args, out_dtype, cparams, interpret):
    """dQ: grid over query blocks of each query head, loop over its visible K/V blocks."""
    B, H, Dp = qp.shape[0], qp.shape[2], qp.shape[3]
    bq, Tk_p = plan.bq, plan.kv_pad
    bounds, _ = block_ranges(args[2], args[3], plan, B)
    q_spec = pl.BlockSpec((None, bq, None, Dp), lambda i, b, h: (b, i, h, 0))
    kv_spec = pl.BlockSpec((None, Tk_p, None, Dp), lambda i, b, h: (b, 0, h // rep, 0))
    row_spec = pl.BlockSpec((None, None, bq), lambda i, b, h: (b, h, i))
    range_spec = pl.BlockSpec((None, None), lambda i, b, h: (b, i))
    seg_specs = [
        pl.BlockSpec((None, bq), lambda i, b, h: (b, i)),
        pl.BlockSpec((None, Tk_p), lambda i, b, h: (b, 0)),
    ]
    return pl.pallas_call(
        functools.partial(_dq_kernel, plan=plan),
        grid=(plan.q_pad // bq, B, H),
        in_specs=[q_spec, kv_spec, kv_spec, q_spec, row_spec, row_spec, *seg_specs]
        + [range_spec] * 4,
        out_specs=q_spec,
        out_shape=jax.ShapeDtypeStruct(qp.shape, out_dtype),
        compiler_params=cparams,
        interpret=interpret,
        name="flash_attention_dq",
    )(qp, kp, vp, dop, *args, *bounds)


def _dkv_call(plan, rep, qp, kp, vp, dop, args, out_dtypes, cparams, interpret):
    """dK, dV: grid over K/V blocks of each KV head, loop over its query heads' visible
    blocks."""
    B, G, Dp = kp.shape[0], kp.shape[2], kp.shape[3]
    bk, Tq_p = plan.bk, plan.q_pad
    _, bounds = block_ranges(args[2], args[3], plan, B)
    kv_spec = pl.BlockSpec((None, bk, None, Dp), lambda j, b, g: (b, j, g, 0))
    q_spec = pl.BlockSpec((None, Tq_p, rep, Dp), lambda j, b, g: (b, 0, g, 0))
    row_spec = pl.BlockSpec((None, rep, Tq_p), lambda j, b, g: (b, g, 0))
    range_spec = pl.BlockSpec((None, None), lambda j, b, g: (b, j))
    seg_specs = [
        pl.BlockSpec((None, Tq_p), lambda j, b, g: (b, 0)),
        pl.BlockSpec((None, bk), lambda j, b, g: (b, j)),
    ]
    return pl.pallas_call(
        functools.partial(_dkv_kernel, plan=plan, rep=rep),
        grid=(plan.kv_pad // bk, B, G),
        in_specs=[kv_spec, kv_spec, q_spec, q_spec, row_spec, row_spec, *seg_specs]
        + [range_spec] * 4,
        out_specs=[kv_spec, kv_spec],
        out_shape=[
            jax.ShapeDtypeStruct(kp.shape, out_dtypes[0]),
            jax.ShapeDtypeStruct(vp.shape, out_dtypes[1]),
        ],
        compiler_params=cparams,
        interpret=interpret,
        name="flash_attention_dkv",
    )(kp, vp, qp, dop, *args, *bounds)


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
    (qp, dop), (kp, vp), q_seg, k_seg = prepare_inputs(plan, [q, do], [k, v], q_seg, k_seg, Dp)
    lse_p = pad_axis(lse.astype(jnp.float32), 2, plan.q_pad)
    delta_p = pad_axis(delta.astype(jnp.float32), 2, plan.q_pad)
    args = (lse_p, delta_p, q_seg, k_seg)
    cparams = compiler_params(interpret, Dp, bs.num_warps, bs.num_stages)
    dq_dtype, dk_dtype, dv_dtype = (out_dtype or x.dtype for x in (q, k, v))
    dq = _dq_call(plan, rep, qp, kp, vp, dop, args, dq_dtype, cparams, interpret)
    plan = plan_for(bq=bs.block_q_dkv, bk=bs.block_k_dkv)
    dk, dv = _dkv_call(plan, rep, qp, kp, vp, dop, args, (dk_dtype, dv_dtype), cparams, interpret)
    return dq[:, :Tq, :, :Dh], dk[:, :Tk, :, :Dh], dv[:, :Tk, :, :Dh]


def row_delta(o, do, dlse=None):
    """delta_i = sum_d o_id do_id - dlse_i, fp32 [B, H, T] (the FlashAttention-2 'D' term)."""
    delta = jnp.einsum(
        "bthd,bthd->bht", o.astype(jnp.float32), do.astype(jnp.float32), precision="highest"
    )
    return delta if dlse is None else delta - dlse.astype(jnp.float32)
