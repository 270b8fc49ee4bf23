"""Ragged decode attention over a KV cache as a split-K Pallas kernel (flash-decoding).

    o_bh = sum_{j < len_b} softmax_j(q_bh . k_bj / sqrt(Dh)) v_bj

One query token per sequence (the engine's generate step). The cache axis S is cut into
`num_splits` chunks so that long contexts still fill the device at small batch; each program
handles one (sequence, KV head, chunk) and all H/G query heads of that KV head at once, so
each K/V byte is read once. Chunks stream K/V blocks with an online softmax, stop at the
sequence's length (blocks past it are never read), and write an unnormalised partial output
plus its running max m and sum l; a final combine rescales the partials by exp(m - max m).

Shapes: B sequences, S cache slots, H query heads, G kv heads (G divides H), Dh head dim.
Sequences with length 0 return 0. Not differentiable (decoding needs no gradient).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from k15_jax.kernels.flash_plan import (
    compiler_params,
    pad_axis,
    padded_head_dim,
    resolve_interpret,
    round_up,
)
from k15_jax.kernels.reference import MASK_VALUE


@dataclasses.dataclass(frozen=True)
class DecodeBlockSizes:
    """block_k: cache slots per inner step (power of two >= 16); num_splits: chunks of S.

    The cache is read without a copy when S is a multiple of block_k (allocate it so);
    otherwise it is padded. The split count actually used is gcd(num_splits, S / block_k).
    """

    block_k: int = 128
    num_splits: int = 16
    num_warps: int | None = 4
    num_stages: int = 2

    def __post_init__(self):
        b = self.block_k
        if b < 16 or b & (b - 1):
            raise ValueError(
                f"DecodeBlockSizes.block_k={b}: must be a power of two >= 16 (Triton tiles)"
            )
        if self.num_splits < 1:
            raise ValueError(f"DecodeBlockSizes.num_splits={self.num_splits} must be >= 1")


def _decode_kernel(q_ref, k_ref, v_ref, len_ref, o_ref, m_ref, l_ref, *, bk, chunk, scale):
    split = pl.program_id(2)
    length = len_ref[()]
    start = split * chunk
    q = q_ref[...]  # [Hb, Dp]: this KV head's query heads, padded to a Triton tile
    n_blocks = jnp.clip(pl.cdiv(length - start, bk), 0, chunk // bk)

    def body(i, carry):
        o, m, l = carry
        off = pl.multiple_of(i * bk, bk)
        k = k_ref[pl.ds(off, bk), :]
        v = v_ref[pl.ds(off, bk), :]
        s = lax.dot_general(q, k, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
        visible = (start + off + jnp.arange(bk)) < length
        s = jnp.where(visible[None, :], s * scale, MASK_VALUE)
        m_new = jnp.maximum(m, s.max(-1))
        alpha = jnp.exp(m - m_new)
        p = jnp.where(visible[None, :], jnp.exp(s - m_new[:, None]), 0.0)
        l = alpha * l + p.sum(-1)
        pv = lax.dot_general(
            p.astype(v.dtype), v, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32
        )
        return alpha[:, None] * o + pv, m_new, l

    hb = q.shape[0]
    init = (
        jnp.zeros(q.shape, jnp.float32),
        jnp.full((hb,), MASK_VALUE, jnp.float32),
        jnp.zeros((hb,), jnp.float32),
    )
    o, m, l = lax.fori_loop(0, n_blocks, body, init)
    o_ref[...] = o
    m_ref[...] = m
    l_ref[...] = l


def combine_splits(o, m, l):
    """Merges split partials: o [..., n, Hb, Dh] unnormalised, m/l [..., n, Hb] -> [..., Hb, Dh].

    o = sum_n exp(m_n - M) o_n / sum_n exp(m_n - M) l_n with M = max_n m_n; empty -> 0.
    """
    m_max = m.max(-2, keepdims=True)
    w = jnp.exp(m - m_max)  # empty splits have l = 0 and o = 0, so any finite weight is fine
    l_tot = (w * l).sum(-2)
    o_tot = (w[..., None] * o).sum(-3)
    return o_tot / jnp.where(l_tot == 0.0, 1.0, l_tot)[..., None]


@functools.partial(jax.jit, static_argnames=("interpret", "block_sizes"))
def decode_attention(q, k_cache, v_cache, lengths, *, interpret=None, block_sizes=None):
    """One-token attention over a ragged KV cache.

    q [B, H, Dh]; k_cache, v_cache [B, S, G, Dh] with G dividing H; lengths [B] int32, the
    number of valid cache slots (slot j is visible when j < lengths[b]). Returns [B, H, Dh] in
    q's dtype (0 where lengths[b] == 0). interpret=None: Pallas interpreter on CPU only.
    """
    if q.ndim != 3 or k_cache.ndim != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(
            f"decode_attention: q must be [batch, heads, head_dim] and k/v caches "
            f"[batch, slots, kv_heads, head_dim] of one shape; got q{q.shape} "
            f"k{k_cache.shape} v{v_cache.shape}"
        )
    B, H, Dh = q.shape
    _, S, G, _ = k_cache.shape
    if k_cache.shape[0] != B or k_cache.shape[3] != Dh or H % G:
        raise ValueError(
            f"decode_attention: caches {k_cache.shape} must match q {q.shape} in batch and "
            "head_dim, with kv heads dividing query heads"
        )
    if lengths.shape != (B,):
        raise ValueError(f"decode_attention: lengths {lengths.shape} must be [batch] = ({B},)")
    interpret = resolve_interpret(interpret)
    bs = block_sizes or DecodeBlockSizes()
    rep = H // G
    bk = min(bs.block_k, max(16, pl.next_power_of_2(S)))
    S_p = round_up(S, bk)
    n_split = math.gcd(bs.num_splits, S_p // bk)
    chunk = S_p // n_split
    Dp = padded_head_dim(Dh)
    hb = max(16, pl.next_power_of_2(rep))  # Triton dots need >= 16 rows
    qg = pad_axis(pad_axis(q.reshape(B, G, rep, Dh), 2, hb), 3, Dp)
    kp = pad_axis(pad_axis(k_cache, 1, S_p), 3, Dp)
    vp = pad_axis(pad_axis(v_cache, 1, S_p), 3, Dp)
    kv_spec = pl.BlockSpec((None, chunk, None, Dp), lambda b, g, s: (b, s, g, 0))
    row_spec = pl.BlockSpec((None, None, None, hb), lambda b, g, s: (b, g, s, 0))
    o, m, l = pl.pallas_call(
        functools.partial(_decode_kernel, bk=bk, chunk=chunk, scale=1.0 / math.sqrt(Dh)),
        grid=(B, G, n_split),
        in_specs=[
            pl.BlockSpec((None, None, hb, Dp), lambda b, g, s: (b, g, 0, 0)),
            kv_spec,
            kv_spec,
            pl.BlockSpec((None,), lambda b, g, s: (b,)),
        ],
        out_specs=[
            pl.BlockSpec((None, None, None, hb, Dp), lambda b, g, s: (b, g, s, 0, 0)),
            row_spec,
            row_spec,
        ],
        out_shape=[
            jax.ShapeDtypeStruct((B, G, n_split, hb, Dp), jnp.float32),
            jax.ShapeDtypeStruct((B, G, n_split, hb), jnp.float32),
            jax.ShapeDtypeStruct((B, G, n_split, hb), jnp.float32),
        ],
        compiler_params=compiler_params(interpret, Dp, bs.num_warps, bs.num_stages),
        interpret=interpret,
        name="decode_attention",
    )(qg, kp, vp, jnp.clip(lengths.astype(jnp.int32), 0, S))  # padded slots stay hidden
    out = combine_splits(o, m, l)[:, :, :rep, :Dh]
    return out.reshape(B, H, Dh).astype(q.dtype)
