"""Flash attention forward as a Pallas kernel (FlashAttention-2, Dao 2023).

The forward streams K/V blocks past a resident Q block with an online softmax (in the exp2
domain) and saves the fp32 log-sum-exp for the backward (`flash_backward`). Per Q block it
loops only over the K/V block range the mask leaves non-empty (`flash_plan.block_ranges`);
blocks visible in full skip the elementwise mask.

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
    padded_head_dim,
    prepare_inputs,
)
from k15_jax.kernels.reference import MASK_VALUE, NEG_LSE


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
        s = dot(q, k, (1, 1)) * c
        mask = None
        if masked:
            mask = plan.tile_mask(q_pos, start + jnp.arange(bk), q_seg, ks_ref[pl.ds(start, bk)])
        if mask is not None:
            s = jnp.where(mask, s, MASK_VALUE)
        m_new = jnp.maximum(m, s.max(-1))
        alpha = jnp.exp2(m - m_new)
        p = jnp.exp2(s - m_new[:, None])
        if mask is not None:  # rows with nothing visible yet have s == m_new == MASK_VALUE
            p = jnp.where(mask, p, 0.0)
        l = alpha * l + p.sum(-1)
        o = alpha[:, None] * o + dot(p.astype(v.dtype), v)
        return o, m_new, l

    init = (
        jnp.zeros(q.shape, jnp.float32),
        jnp.full((bq,), MASK_VALUE, jnp.float32),
        jnp.zeros((bq,), jnp.float32),
    )
    o, m, l = block_loop(bound_refs, body, init)
    empty = l == 0.0
    l_safe = jnp.where(empty, 1.0, l)
    o_ref[...] = (o / l_safe[:, None]).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(empty, NEG_LSE, (m + jnp.log2(l_safe)) / LOG2E)


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
    (qp,), (kp, vp), q_seg, k_seg = prepare_inputs(plan, [q], [k, v], q_seg, k_seg, Dp)
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
