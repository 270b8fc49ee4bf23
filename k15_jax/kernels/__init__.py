"""Attention kernels: flash attention (train/prefill), decode attention, ring attention,
their plain-jnp references (`reference.py`), and the model's "xla" attention
(`xla_attention.py`: the reference's forward with a recomputing backward).

On CPU the Pallas kernels run in the Pallas interpreter (tests); on GPU they lower through
Triton.
"""

from k15_jax.kernels.decode_attention import DecodeBlockSizes, decode_attention
from k15_jax.kernels.flash_attention import flash_attention, flash_attention_lse
from k15_jax.kernels.flash_plan import FlashBlockSizes
from k15_jax.kernels.reference import (
    NEG_LSE,
    attention_lse_reference,
    attention_reference,
    decode_attention_reference,
)
from k15_jax.kernels.ring_attention import ring_attention

__all__ = [
    "NEG_LSE",
    "DecodeBlockSizes",
    "FlashBlockSizes",
    "attention_lse_reference",
    "attention_reference",
    "decode_attention",
    "decode_attention_reference",
    "flash_attention",
    "flash_attention_lse",
    "ring_attention",
]
