"""Plain-jnp attention: the one reference of each attention operation.

    attention_reference(q, k, v, ...)           full sequences: causal, window, segment ids
    attention_lse_reference(q, k, v, ...)       the same plus the log-sum-exp (ring combine)
    decode_attention_reference(q, k, v, lens)   one query per sequence over a ragged KV cache

Ring attention is `attention_reference` on the gathered sequence, so it has no reference of
its own.

Why here: these functions define the operations the Pallas kernels beside them implement
(mask conventions, the empty-row result), and the kernel tests check the kernels against
them; the model's "xla" implementation (`k15_jax.model.attention`) is these functions, so
the oracle and the default path cannot drift apart. model -> kernels keeps the dependency
direction; nothing here imports the model.

Numerics are the model path's, op for op (its results must not move): the dots take the
inputs' dtype and accumulate in fp32, scores and softmax are fp32, probabilities are cast to
v's dtype for the second dot. Tests wanting an fp32 oracle upcast the inputs and pass
precision="highest" (None keeps the backend's default, which on accelerators may round
fp32 dot inputs, e.g. to TF32).

Masked scores are MASK_VALUE (finite), so fully masked rows give o = 0 and lse = NEG_LSE
rather than NaN, as the kernels do.

Shapes: B batch, T query tokens, S key tokens, H query heads, G kv heads (G divides H),
R = H / G, Dh head dim.
"""

import jax.numpy as jnp

# Finite "minus infinity": exp() of it underflows to 0 and max/subtract never make NaN.
MASK_VALUE = -1e30
# lse reported for rows that see no key (what ring attention's combine expects).
NEG_LSE = -1e30


def _softmax_masked(scores, mask):
    """(probs, row max m, row total l): probs = exp(s - m) / l over visible entries, 0 else."""
    scores = jnp.where(mask, scores, MASK_VALUE)
    m = jnp.max(scores, axis=-1, keepdims=True)
    p = jnp.where(mask, jnp.exp(scores - m), 0.0)
    total = jnp.sum(p, axis=-1, keepdims=True)
    return p / jnp.maximum(total, 1e-30), m, total


def _scores(q, k, precision):
    """fp32 scaled scores [B, G, R, T, S] of q [B, T, H, Dh] against k [B, S, G, Dh]."""
    B, T, H, Dh = q.shape
    qg = q.reshape(B, T, k.shape[2], H // k.shape[2], Dh)
    scores = jnp.einsum(
        "btgrd,bsgd->bgrts", qg, k, preferred_element_type=jnp.float32, precision=precision
    )
    return scores * (Dh**-0.5)


def _scores_and_mask(q, k, q_segment_ids, kv_segment_ids, causal, window, precision):
    """fp32 scores [B, G, R, T, S] and the visibility mask broadcastable to them."""
    B, T = q.shape[:2]
    S = k.shape[1]
    scores = _scores(q, k, precision)
    mask = jnp.ones((B, T, S), bool)
    t_idx, s_idx = jnp.arange(T)[:, None], jnp.arange(S)[None, :]
    if causal:
        mask = mask & (s_idx <= t_idx)[None]
    if window is not None:
        mask = mask & (s_idx > t_idx - window)[None]
    if q_segment_ids is not None:
        mask = mask & (q_segment_ids[:, :, None] == kv_segment_ids[:, None, :])
    return scores, mask[:, None, None]


def _attend(q, k, v, q_segment_ids, kv_segment_ids, causal, window, precision):
    """(o [B, T, H, Dh] in q's dtype, row max m and total l [B, G, R, T, 1] fp32)."""
    B, T, H, Dh = q.shape
    scores, mask = _scores_and_mask(q, k, q_segment_ids, kv_segment_ids, causal, window, precision)
    probs, m, total = _softmax_masked(scores, mask)
    out = jnp.einsum("bgrts,bsgd->btgrd", probs.astype(v.dtype), v, precision=precision)
    return out.reshape(B, T, H, Dh).astype(q.dtype), m, total


def attention_reference(q, k, v, *, causal=True, segment_ids=None, window=None, precision=None):
    """softmax(q k^T / sqrt(Dh) + mask) v, materialising the [B, G, R, T, S] scores.

    q [B, T, H, Dh]; k, v [B, S, G, Dh]; segment_ids [B, T] (needs T == S) or None: tokens
    attend only within their segment; causal: key j <= query i (positions from 0 on both
    sides); window w or None: j > i - w. Returns [B, T, H, Dh] in q's dtype.
    """
    return _attend(q, k, v, segment_ids, segment_ids, causal, window, precision)[0]


def attention_lse_reference(
    q, k, v, q_segment_ids=None, kv_segment_ids=None, *, causal=True, window=None, precision=None
):
    """`attention_reference` with separate q / kv segment ids [B, T] / [B, S] (both or
    neither), also returning lse [B, H, T] fp32 (NEG_LSE where a row sees no key)."""
    B, T, H, _ = q.shape
    o, m, total = _attend(q, k, v, q_segment_ids, kv_segment_ids, causal, window, precision)
    empty = total == 0.0
    lse = jnp.where(empty, NEG_LSE, m + jnp.log(jnp.where(empty, 1.0, total)))
    return o, lse[..., 0].reshape(B, H, T)


def cached_attention_reference(q, k_cache, v_cache, positions, *, precision=None):
    """Queries at known positions over a per-row cache that already holds their own keys:
    query t of row b sees cache slots j <= positions[b, t] (continuing a prefilled prompt,
    rollout/extend.py; decode is the case T = 1).

    q [B, T, H, Dh]; k_cache, v_cache [B, S, G, Dh]; positions [B, T]. Returns [B, T, H, Dh]
    in q's dtype (0 where a query sees no slot).
    """
    B, T, H, Dh = q.shape
    S = k_cache.shape[1]
    scores = _scores(q, k_cache, precision)
    mask = (jnp.arange(S)[None, None, :] <= positions[:, :, None])[:, None, None]
    probs = _softmax_masked(scores, mask)[0]
    out = jnp.einsum("bgrts,bsgd->btgrd", probs.astype(v_cache.dtype), v_cache, precision=precision)
    return out.reshape(B, T, H, Dh).astype(q.dtype)


def decode_attention_reference(q, k_cache, v_cache, lengths, *, precision=None):
    """One query per sequence over cache slots j < lengths[b].

    q [B, H, Dh]; k_cache, v_cache [B, S, G, Dh]; lengths [B]. Returns [B, H, Dh] in q's
    dtype (0 where lengths[b] == 0).
    """
    B, H, Dh = q.shape
    S, G = k_cache.shape[1], k_cache.shape[2]
    qg = q.reshape(B, G, H // G, Dh)
    scores = jnp.einsum(
        "bgrd,bsgd->bgrs", qg, k_cache, preferred_element_type=jnp.float32, precision=precision
    )
    scores = scores * (Dh**-0.5)
    mask = (jnp.arange(S)[None, :] < lengths[:, None])[:, None, None, :]
    probs = _softmax_masked(scores, mask)[0]
    out = jnp.einsum("bgrs,bsgd->bgrd", probs.astype(v_cache.dtype), v_cache, precision=precision)
    return out.reshape(B, H, Dh).astype(q.dtype)
