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

This module: the custom_vjp and the jitted, checked entry points. The kernels are in
flash_forward.py and flash_backward.py, the tiling in flash_plan.py, the plain-jnp
reference they are tested against in reference.py.

Shapes: B batch, T tokens, H query heads, G kv heads (G divides H), Dh head dim.
Used by the model's attention (k1.5 report, sections 2.6.2 and 3.3: long-context RL).
"""

from __future__ import annotations

import functools

import jax

from k15_jax.kernels.flash_backward import flash_backward, row_delta
from k15_jax.kernels.flash_forward import flash_forward
from k15_jax.kernels.flash_plan import FlashBlockSizes, resolve_interpret


def _options(mask, opts) -> dict:
    """The kernels' static keywords from mask = (causal, window), opts = (block_sizes,
    interpret)."""
    return dict(causal=mask[0], window=mask[1], block_sizes=opts[0], interpret=opts[1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _flash(q, k, v, q_seg, k_seg, mask, opts):
    return flash_forward(q, k, v, q_seg, k_seg, **_options(mask, opts))


def _flash_fwd(q, k, v, q_seg, k_seg, mask, opts):
    o, lse = _flash(q, k, v, q_seg, k_seg, mask, opts)
    return (o, lse), (q, k, v, q_seg, k_seg, o, lse)


def _flash_bwd(mask, opts, res, cotangents):
    q, k, v, q_seg, k_seg, o, lse = res
    do, dlse = cotangents
    delta = row_delta(o, do, dlse)
    do = do.astype(q.dtype)
    dq, dk, dv = flash_backward(q, k, v, q_seg, k_seg, lse, do, delta, **_options(mask, opts))
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
