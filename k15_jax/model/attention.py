"""Attention with a pluggable implementation.

Two entry points, each a dict of implementations selected by name:
  attention(q, k, v, ...)          full sequences (training, prefill)
  decode_attention(q, k, v, lens)  one query token per sequence against a KV cache

"xla" is the plain-jnp reference's forward (`k15_jax.kernels.reference`, also the kernels'
test oracle) with a recomputing backward (`k15_jax.kernels.xla_attention`); "pallas" uses
the kernels in `k15_jax/kernels/`; "cudnn" is jax.nn's cuDNN path (GPU only); "auto" picks
pallas on GPU/TPU and xla on CPU (interpret mode is for tests).
"""

import jax

from k15_jax.kernels import decode_attention as decode_attention_kernel
from k15_jax.kernels import flash_attention
from k15_jax.kernels.reference import decode_attention_reference
from k15_jax.kernels.xla_attention import xla_attention


def _pallas_attention(q, k, v, *, causal=True, segment_ids=None, window=None):
    return flash_attention(q, k, v, causal=causal, segment_ids=segment_ids, window=window)


def _pallas_decode_attention(q, k_cache, v_cache, lengths):
    return decode_attention_kernel(q, k_cache, v_cache, lengths)


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
    "xla": decode_attention_reference,
    "pallas": _pallas_decode_attention,
    "cudnn": decode_attention_reference,
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
    """Full-sequence attention, see `attention_reference` for shapes."""
    fn = ATTENTION[resolve(implementation)]
    return fn(q, k, v, causal=causal, segment_ids=segment_ids, window=window)


def decode_attention(q, k_cache, v_cache, lengths, *, implementation="xla"):
    """One-token attention against a KV cache, see `decode_attention_reference` for shapes."""
    return DECODE_ATTENTION[resolve(implementation)](q, k_cache, v_cache, lengths)
