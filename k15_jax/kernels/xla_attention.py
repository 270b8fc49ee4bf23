"""The model's "xla" attention: the reference's forward with a flash-style backward.

Forward: `reference._attend`, op for op, so the values are the reference's (the rollout,
the kernels' oracle and the trainer see the same attention). Backward: autodiff of the
reference would keep the [B, G, R, T, S] probabilities and masks of every layer for the
backward pass; the layer scan stacks them into [L, ...] buffers that XLA zero-fills,
writes and slices (on the 54M bench shape, 4 x 512 tokens and 12 layers: 400 MB per
buffer and 0.7 s of a 4.3 s step on CPU, `docs/performance.md`). Here the forward keeps
only o and the row log-sum-exp, and the backward recomputes the scores of one layer at a
time (one more QK^T matmul, ~1/12 of the layer's FLOPs at that shape):

    P  = exp(S - lse) on visible entries, 0 elsewhere        S = q k^T / sqrt(Dh)
    dV = P^T dO       dP = dO V^T       delta = rowsum(dO * O)
    dS = P * (dP - delta)       dQ = dS K / sqrt(Dh)       dK = dS^T Q / sqrt(Dh)

(Dao et al. 2022, FlashAttention, Algorithm 4, without the tiling: at the lengths the CPU
path trains on, one layer's scores fit in memory; the Pallas kernels tile for long ones.)
The backward runs in float32 and casts the gradients to the inputs' dtypes. Gradients
equal autodiff of `attention_reference` up to rounding (tests/test_xla_attention.py).

Shapes as in `reference.py`: q [B, T, H, Dh]; k, v [B, S, G, Dh]; segment_ids [B, T].
"""

import functools

import jax
import jax.numpy as jnp

from k15_jax.kernels.reference import _attend, _scores_and_mask


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _attention(q, k, v, segment_ids, causal, window):
    return _attend(q, k, v, segment_ids, segment_ids, causal, window, None)[0]


def _attention_fwd(q, k, v, segment_ids, causal, window):
    o, m, total = _attend(q, k, v, segment_ids, segment_ids, causal, window, None)
    lse = m + jnp.log(jnp.maximum(total, 1e-30))  # [B, G, R, T, 1]; empty rows: P is 0 anyway
    return o, (q, k, v, segment_ids, o, lse)


def _attention_bwd(causal, window, res, do):
    q, k, v, segment_ids, o, lse = res
    B, T, H, Dh = q.shape
    G = k.shape[2]
    scores, mask = _scores_and_mask(q, k, segment_ids, segment_ids, causal, window, None)
    p = jnp.where(mask, jnp.exp(scores - lse), 0.0)
    f32 = jnp.float32
    do_g = do.reshape(B, T, G, H // G, Dh).astype(f32)
    o_g = o.reshape(B, T, G, H // G, Dh).astype(f32)
    q_g = q.reshape(B, T, G, H // G, Dh).astype(f32)
    dv = jnp.einsum("bgrts,btgrd->bsgd", p, do_g)
    dp = jnp.einsum("btgrd,bsgd->bgrts", do_g, v.astype(f32))
    delta = jnp.einsum("btgrd,btgrd->bgrt", do_g, o_g)[..., None]
    ds = p * (dp - delta) * (Dh**-0.5)
    dq = jnp.einsum("bgrts,bsgd->btgrd", ds, k.astype(f32)).reshape(B, T, H, Dh)
    dk = jnp.einsum("bgrts,btgrd->bsgd", ds, q_g)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None


_attention.defvjp(_attention_fwd, _attention_bwd)


def xla_attention(q, k, v, *, causal=True, segment_ids=None, window=None):
    """`attention_reference` (default precision) with the recomputing backward above."""
    return _attention(q, k, v, segment_ids, causal, window)
