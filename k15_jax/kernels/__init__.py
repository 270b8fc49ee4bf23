"""Pallas attention kernels: flash attention (train/prefill), decode attention, ring attention.

On CPU they run in the Pallas interpreter (tests); on GPU they lower through Triton.
"""

from k15_jax.kernels.decode_attention import (
    DecodeBlockSizes,
    decode_attention,
    decode_attention_reference,
)
from k15_jax.kernels.flash_attention import (
    NEG_LSE,
    FlashBlockSizes,
    flash_attention,
    flash_attention_lse,
    flash_attention_lse_reference,
    flash_attention_reference,
)
from k15_jax.kernels.ring_attention import ring_attention, ring_attention_reference

__all__ = [
    "NEG_LSE",
    "DecodeBlockSizes",
    "FlashBlockSizes",
    "decode_attention",
    "decode_attention_reference",
    "flash_attention",
    "flash_attention_lse",
    "flash_attention_lse_reference",
    "flash_attention_reference",
    "ring_attention",
    "ring_attention_reference",
]
