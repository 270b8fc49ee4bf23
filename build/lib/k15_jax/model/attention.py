"""Attention with a pluggable implementation.

Two entry points, each a dict of implementations selected by name:
  attention(q, k, v, ...)          full sequences (training, prefill)
  decode_attention(q, k, v, lens)  one query token per sequence against a KV cache

"xla" is the plain-jnp reference (and the test oracle); "pallas" uses the kernels in
`k15_jax/kernels/`; "cudnn" is jax.nn's cuDNN path (GPU only); "auto" picks pallas on GPU/TPU and
xla on CPU (interpret mode is for tests).
"""

import jax
import jax.numpy as jnp

_NEG = -1e30  # finite, so fully masked rows give zeros rather than NaN


def _softmax_masked(scores: jax.Array, mask: jax.Array) -> jax.Array:
    scores = jnp.where(mask, scores, _NEG)
    m = jnp.max(scores, axis=-1, keepdims=True)
    p = jnp.where(mask, jnp.exp(scores - m), 0.0)
    return p / jnp.maximum(jnp.sum(p, axis=-1, keepdims=True), 1e-30)


def xla_attention(q, k, v, *, causal=True, segment_ids=None, window=None):
    """Reference attention.

    q: [B, T, H, Dh]; k, v: [B, S, G, Dh] with G dividing H; segment_ids: [B, T] (T == S).
    Returns [B, T, H, Dh] in q's dtype; scores and softmax in float32.
    """
    B, T, H, Dh = q.shape
    S, G = k.shape[1], k.shape[2]
    qg = q.reshape(B, T, G, H // G, Dh)
    scores = jnp.einsum("btgrd,bsgd->bgrts", qg, k, preferred_element_type=jnp.float32)
    scores = scores * (Dh**-0.5)
    mask = jnp.ones((B, T, S), bool)
    t_idx, s_idx = jnp.arange(T)[:, None], jnp.arange(S)[None, :]
    if causal:
        mask = mask & (s_idx <= t_idx)[None]
    if window is not None:
        mask = mask & (s_idx > t_idx - window)[None]
    if segment_ids is not None:
        mask = mask & (segment_ids[:, :, None] == segment_ids[:, None, :])
    probs = _softmax_masked(scores, mask[:, None, None])
    out = jnp.einsum("bgrts,bsgd->btgrd", probs.astype(v.dtype), v)
    return out.reshape(B, T, H, Dh).astype(q.dtype)


def xla_decode_attention(q, k_cache, v_cache, lengths):
    """Reference decode attention.

    q: [B, H, Dh]; k_cache, v_cache: [B, S, G, Dh]; lengths: [B] valid cache positions.
    Returns [B, H, Dh].
    """
    B, H, Dh = q.shape
    S, G = k_cache.shape[1], k_cache.shape[2]
    qg = q.reshape(B, G, H // G, Dh)
    scores = jnp.einsum("bgrd,bsgd->bgrs", qg, k_cache, preferred_element_type=jnp.float32)
    scores = scores * (Dh**-0.5)
    mask = (jnp.arange(S)[None, :] < lengths[:, None])[:, None, None, :]
    probs = _softmax_masked(scores, mask)
    out = jnp.einsum("bgrs,bsgd->bgrd", probs.astype(v_cache.dtype), v_cache)
    return out.reshape(B, H, Dh).astype(q.dtype)


def _pallas_attention(q, k, v, *, causal=True, segment_ids=None, window=None):
    from k15_jax.kernels import flash_attention

    return flash_attention(q, k, v, causal=causal, segment_ids=segment_ids, window=window)


def _pallas_decode_attention(q, k_cache, v_cache, lengths):
    from k15_jax.kernels import decode_attention as kernel

    return kernel(q, k_cache, v_cache, lengths)


def _cudnn_attention(q, k, v, *, causal=True, segment_ids=None, window=None):
    """cuDNN fused attention through jax.nn (GPU only; no packed segments)."""
    if segment_ids is not None:
        raise NotImplementedError(
            "attention implementation 'cudnn' does not take segment ids; use 'pallas' or 'xla'"
        )
    local = None if window is None else (window - 1, 0)
    return jax.nn.dot_product_attention(
        q, k, v, is_causal=causal, local_window_size=local, implementation="cudnn"
    )


ATTENTION = {"xla": xla_attention, "pallas": _pallas_attention, "cudnn": _cudnn_attention}
# one query token per sequence: cuDNN's fused kernel brings nothing, the reference is used
DECODE_ATTENTION = {
    "xla": xla_decode_attention,
    "pallas": _pallas_decode_attention,
    "cudnn": xla_decode_attention,
}


def resolve(implementation: str) -> str:
    if implementation == "auto":
        return "xla" if jax.default_backend() == "cpu" else "pallas"
    if implementation not in ATTENTION:
        raise ValueError(
            f"attention implementation {implementation!r} is unknown; "
            f"use one of {sorted(ATTENTION) + ['auto']}"
        )
    return implementation


def attention(q, k, v, *, causal=True, segment_ids=None, window=None, implementation="xla"):
    """Full-sequence attention, see `xla_attention` for shapes."""
    fn = ATTENTION[resolve(implementation)]
    return fn(q, k, v, causal=causal, segment_ids=segment_ids, window=window)


def decode_attention(q, k_cache, v_cache, lengths, *, implementation="xla"):
    """One-token attention against a KV cache, see `xla_decode_attention` for shapes."""
    return DECODE_ATTENTION[resolve(implementation)](q, k_cache, v_cache, lengths)
