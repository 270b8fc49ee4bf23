"""Tiling for the flash attention kernels: block sizes, the padded problem (`Plan`), the
per-Q-block K/V block ranges the mask leaves non-empty, and small padding helpers shared by
the flash, decode and ring kernels. Pure jnp: no Pallas here except the in-kernel loop."""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

LOG2E = math.log2(math.e)


@dataclasses.dataclass(frozen=True)
class FlashBlockSizes:
    """Tile sizes (powers of two >= 16, as Triton needs) and GPU launch parameters.

    block_q/block_k: forward tiles; *_dq: dQ kernel tiles; *_dkv: dK/dV kernel tiles.
    Blocks larger than the (power-of-two rounded) sequence are shrunk to fit it.
    """

    block_q: int = 128
    block_k: int = 64
    block_q_dq: int = 64
    block_k_dq: int = 64
    block_q_dkv: int = 64
    block_k_dkv: int = 64
    num_warps: int | None = None  # None: 4 for Dh <= 64, else 8
    num_stages: int = 2

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if f.name.startswith("block_"):
                b = getattr(self, f.name)
                if b < 16 or b & (b - 1):
                    raise ValueError(
                        f"FlashBlockSizes.{f.name}={b}: must be a power of two >= 16 "
                        "(Triton tile shapes); pick e.g. 16, 32, 64 or 128"
                    )

    def fit(self, q_len: int, kv_len: int) -> FlashBlockSizes:
        """The same sizes, each shrunk to at most the next power of two of its axis length."""
        fq = lambda b: min(b, max(16, pl.next_power_of_2(q_len)))
        fk = lambda b: min(b, max(16, pl.next_power_of_2(kv_len)))
        return dataclasses.replace(
            self,
            block_q=fq(self.block_q),
            block_k=fk(self.block_k),
            block_q_dq=fq(self.block_q_dq),
            block_k_dq=fk(self.block_k_dq),
            block_q_dkv=fq(self.block_q_dkv),
            block_k_dkv=fk(self.block_k_dkv),
        )


# ----------------------------------------------------------------------------- helpers


def resolve_interpret(interpret: bool | None) -> bool:
    """None means interpret mode exactly when the default backend is the CPU."""
    return jax.default_backend() == "cpu" if interpret is None else bool(interpret)


def compiler_params(interpret: bool, head_dim: int, num_warps: int | None, num_stages: int):
    """Triton launch parameters (they also select the Triton lowering over Mosaic GPU); None in
    interpret mode and on TPU."""
    if interpret or jax.default_backend() == "tpu":
        return None
    warps = num_warps if num_warps is not None else (4 if head_dim <= 64 else 8)
    return plgpu.CompilerParams(num_warps=warps, num_stages=num_stages)


def padded_head_dim(head_dim: int) -> int:
    return max(16, pl.next_power_of_2(head_dim))


def round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def pad_axis(x: jax.Array, axis: int, size: int, mode: str = "constant") -> jax.Array:
    """Pads axis `axis` of x at the end up to `size` (zeros, or edge values for segment ids)."""
    if x.shape[axis] == size:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, widths, mode=mode)


def dot(a, b, contract=(1, 0)):
    """fp32-accumulated matmul; contract=(1, 1): a @ b.T, (0, 0): a.T @ b, (1, 0): a @ b."""
    dims = (((contract[0],), (contract[1],)), ((), ()))
    return lax.dot_general(a, b, dims, preferred_element_type=jnp.float32)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Static facts of one pallas_call: mask kind, true and padded lengths, tiles, scale."""

    causal: bool
    window: int | None
    q_len: int
    kv_len: int
    q_pad: int
    kv_pad: int
    bq: int
    bk: int
    scale: float
    has_seg: bool

    def tile_mask(self, q_pos, k_pos, q_seg, k_seg):
        """[bq, bk] visibility of keys k_pos to queries q_pos; None when nothing is masked."""
        conds = []
        if self.kv_pad > self.kv_len:
            conds.append(jnp.broadcast_to(k_pos[None, :] < self.kv_len, (q_pos.size, k_pos.size)))
        if self.causal:
            conds.append(q_pos[:, None] >= k_pos[None, :])
        if self.window is not None:
            conds.append(k_pos[None, :] > q_pos[:, None] - self.window)
        if self.has_seg:
            conds.append(q_seg[:, None] == k_seg[None, :])
        return functools.reduce(jnp.logical_and, conds) if conds else None


def make_plan(q_shape, kv_len, *, causal, window, bq, bk, has_seg, pad_q=None, pad_k=None):
    """Plan for q [B, Tq, H, Dh] and Tk keys; lengths padded to multiples of pad_q/pad_k."""
    q_len, head_dim = q_shape[1], q_shape[3]
    return Plan(
        causal=causal,
        window=window,
        q_len=q_len,
        kv_len=kv_len,
        q_pad=round_up(q_len, pad_q or bq),
        kv_pad=round_up(kv_len, pad_k or bk),
        bq=bq,
        bk=bk,
        scale=1.0 / math.sqrt(head_dim),
        has_seg=has_seg,
    )


def block_ranges(q_seg, k_seg, plan: Plan, batch: int):
    """Which K/V blocks each Q block visits, and which Q blocks each K/V block visits.

    Per Q block: [lo, hi) holds every K/V block with a visible pair (conservative: positions
    allow it and the blocks' segment id ranges [min, max] overlap; exact for sorted packed
    segments) and [flo, fhi) inside it a run of blocks visible in full (no mask needed), so
    the kernels run masked [lo, flo), unmasked [flo, fhi), masked [fhi, hi). Segment ids come
    padded to q_pad / kv_pad with edge values. Returns (lo, flo, fhi, hi) each [B, q_pad // bq]
    and the same four over Q blocks, each [B, kv_pad // bk]; empty ranges are all zeros.
    """
    p = plan
    nq, nk = p.q_pad // p.bq, p.kv_pad // p.bk
    q_first = jnp.arange(nq)[:, None] * p.bq
    q_last = jnp.minimum(q_first + p.bq, p.q_len) - 1  # padded query rows are never read back
    k_first = jnp.arange(nk)[None, :] * p.bk
    k_end = k_first + p.bk
    keep = (q_first < p.q_len) & (k_first < p.kv_len)
    full = keep & (k_end <= p.kv_len)
    if p.causal:
        keep &= k_first <= q_last
        full &= k_end - 1 <= q_first
    if p.window is not None:
        keep &= jnp.minimum(k_end, p.kv_len) - 1 > q_first - p.window
        full &= k_first > q_last - p.window
    keep, full = (jnp.broadcast_to(x, (batch, nq, nk)) for x in (keep, full))
    if p.has_seg:
        qs, ks = q_seg.reshape(batch, nq, p.bq), k_seg.reshape(batch, nk, p.bk)
        q_min, q_max = qs.min(-1)[:, :, None], qs.max(-1)[:, :, None]
        k_min, k_max = ks.min(-1)[:, None, :], ks.max(-1)[:, None, :]
        keep &= (q_min <= k_max) & (k_min <= q_max)
        full &= (q_min == q_max) & (k_min == k_max) & (q_min == k_min)

    def bounds(keep, full):  # [..., n] -> lo, flo, fhi, hi over the last axis
        n = keep.shape[-1]
        idx = jnp.arange(n)
        any_keep, any_full = keep.any(-1), full.any(-1)
        lo = jnp.where(any_keep, jnp.argmax(keep, -1), 0)
        hi = jnp.where(any_keep, n - jnp.argmax(keep[..., ::-1], -1), 0)
        flo = jnp.where(any_full, jnp.argmax(full, -1), hi)
        # the full run ends at the first non-full block after flo
        breaks = (idx >= flo[..., None]) & ~full
        fhi = jnp.where(any_full, jnp.min(jnp.where(breaks, idx, n), -1), hi)
        return tuple(x.astype(jnp.int32) for x in (lo, flo, fhi, hi))

    return bounds(keep, full), bounds(*(jnp.swapaxes(x, 1, 2) for x in (keep, full)))


def block_loop(bound_refs, body, carry):
    """body(i, carry, masked) over [lo, flo) masked, [flo, fhi) unmasked, [fhi, hi) masked."""
    lo, flo, fhi, hi = (r[()] for r in bound_refs)
    carry = lax.fori_loop(lo, flo, functools.partial(body, masked=True), carry)
    carry = lax.fori_loop(flo, fhi, functools.partial(body, masked=False), carry)
    return lax.fori_loop(fhi, hi, functools.partial(body, masked=True), carry)


def prepare_inputs(plan: Plan, q_like, kv_like, q_seg, k_seg, head_dim_pad):
    """Pads [B, T, heads, Dh] arrays to the plan's lengths and Dh to head_dim_pad; segment ids
    (zeros when absent, then unused) with edge values so block min/max stay unchanged."""
    q_like = [pad_axis(pad_axis(x, 1, plan.q_pad), 3, head_dim_pad) for x in q_like]
    kv_like = [pad_axis(pad_axis(x, 1, plan.kv_pad), 3, head_dim_pad) for x in kv_like]
    B = q_like[0].shape[0]
    if q_seg is None:
        q_seg = jnp.zeros((B, plan.q_len), jnp.int32)
        k_seg = jnp.zeros((B, plan.kv_len), jnp.int32)
    q_seg = pad_axis(q_seg.astype(jnp.int32), 1, plan.q_pad, mode="edge")
    k_seg = pad_axis(k_seg.astype(jnp.int32), 1, plan.kv_pad, mode="edge")
    return q_like, kv_like, q_seg, k_seg


# ----------------------------------------------------------------------------- kernels
