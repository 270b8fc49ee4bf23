"""Attention kernel benchmark: our Pallas kernels against XLA, cuDNN and JAX's shipped Pallas ops.

Training attention: TFLOP/s of forward, backward and forward+backward (causal FLOPs counted
as half: fwd = 2 * 2 * B * H * T^2 * Dh / 2, bwd = 2.5 * fwd), at sequence lengths 2k..64k,
head dim 128, bf16, batch x heads filling the device. The backward time is
(forward+backward) - forward, both measured.
Decode attention: GB/s of K/V cache read (2 * B * L * G * Dh * bytes) against the device's
measured copy bandwidth (read + write of a large array).

On CPU (or with --tiny) it runs tiny sizes in the Pallas interpreter just to prove the paths
run; those numbers mean nothing. Prints one JSON object as its last line.

    python -m experiments.bench_attention            # from the repo root: full on GPU, tiny on CPU
    python -m experiments.bench_attention --tiny     # tiny sizes anywhere
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import statistics
import sys
import time

import jax
import jax.numpy as jnp

from k15_jax.kernels.decode_attention import DecodeBlockSizes, decode_attention
from k15_jax.kernels.flash_attention import flash_attention
from k15_jax.kernels.flash_plan import FlashBlockSizes
from k15_jax.kernels.reference import decode_attention_reference


@dataclasses.dataclass
class BenchConfig:
    """Sizes for one run; `full()` on GPU, `tiny()` on CPU."""

    lengths: tuple[int, ...] = (2048, 8192, 32768, 65536)
    tokens_per_batch: int = 32768  # B = max(1, tokens_per_batch // T)
    heads: int = 16
    kv_heads: int = 16
    head_dim: int = 128
    dtype: str = "bfloat16"
    causal: bool = True
    reps: int = 10
    decode_batch: int = 8
    decode_lengths: tuple[int, ...] = (8192, 32768, 131072)
    decode_heads: int = 32
    decode_kv_heads: int = 8
    copy_bytes: int = 1 << 30
    blocks: FlashBlockSizes = dataclasses.field(default_factory=FlashBlockSizes)
    decode_blocks: DecodeBlockSizes = dataclasses.field(default_factory=DecodeBlockSizes)

    @classmethod
    def tiny(cls) -> BenchConfig:
        return cls(
            lengths=(64, 128),
            tokens_per_batch=128,
            heads=2,
            kv_heads=1,
            head_dim=32,
            dtype="float32",
            reps=2,
            decode_batch=2,
            decode_lengths=(128, 256),
            decode_heads=4,
            decode_kv_heads=2,
            copy_bytes=1 << 24,
            blocks=FlashBlockSizes(32, 32, 32, 32, 32, 32),
            decode_blocks=DecodeBlockSizes(block_k=32, num_splits=4),
        )


def time_ms(fn, *args, reps: int) -> float:
    """Median wall time of fn(*args) in ms after one compile-and-warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def attention_impls(cfg: BenchConfig, backend: str, interpret: bool) -> dict:
    """name -> (fn(q, k, v) -> o, supports backward). GPU-only peers are skipped elsewhere."""
    scale = 1.0 / math.sqrt(cfg.head_dim)
    impls = {
        "ours_pallas": (
            functools.partial(
                flash_attention, causal=cfg.causal, block_sizes=cfg.blocks, interpret=interpret
            ),
            True,
        ),
        "jax_nn_xla": (
            functools.partial(
                jax.nn.dot_product_attention, is_causal=cfg.causal, implementation="xla"
            ),
            True,
        ),
    }
    if backend == "gpu":
        from jax.experimental.pallas.ops.gpu import attention as jax_triton

        impls["jax_nn_cudnn"] = (
            functools.partial(
                jax.nn.dot_product_attention, is_causal=cfg.causal, implementation="cudnn"
            ),
            True,
        )

        def triton_mha(q, k, v):  # JAX's shipped Triton kernel has no GQA: repeat K/V
            rep = q.shape[2] // k.shape[2]
            k, v = (jnp.repeat(x, rep, axis=2) for x in (k, v))
            return jax_triton.mha(q, k, v, None, sm_scale=scale, causal=cfg.causal)

        impls["jax_pallas_triton"] = (triton_mha, True)

        def mosaic_mha(q, k, v):  # Hopper only; its backward has no causal mask yet
            from jax.experimental.pallas.ops.gpu import attention_mgpu

            tc = attention_mgpu.TuningConfig(
                block_q=64, block_kv=128, max_concurrent_steps=2, causal=cfg.causal
            )
            return attention_mgpu.attention(q, k, v, tc)

        impls["jax_pallas_mosaic_gpu"] = (mosaic_mha, not cfg.causal)
    return impls


def bench_training(cfg: BenchConfig, backend: str, interpret: bool, mem_limit: int | None):
    dtype = jnp.dtype(cfg.dtype)
    rows = []
    for T in cfg.lengths:
        B = max(1, cfg.tokens_per_batch // T)
        key = jax.random.split(jax.random.key(T), 4)
        q = jax.random.normal(key[0], (B, T, cfg.heads, cfg.head_dim), dtype)
        k = jax.random.normal(key[1], (B, T, cfg.kv_heads, cfg.head_dim), dtype)
        v = jax.random.normal(key[2], (B, T, cfg.kv_heads, cfg.head_dim), dtype)
        do = jax.random.normal(key[3], q.shape, dtype)
        flops_fwd = 4 * B * cfg.heads * T * T * cfg.head_dim * (0.5 if cfg.causal else 1.0)
        for name, (fn, has_bwd) in attention_impls(cfg, backend, interpret).items():
            row = dict(impl=name, T=T, B=B, H=cfg.heads, G=cfg.kv_heads, Dh=cfg.head_dim)
            score_bytes = B * cfg.heads * T * T * 4
            if name == "jax_nn_xla" and mem_limit and 3 * score_bytes > mem_limit:
                row["skipped"] = f"score matrix {score_bytes / 2**30:.0f} GiB does not fit"
                rows.append(row)
                continue
            try:
                fwd = jax.jit(fn)
                fwd_bwd = jax.jit(lambda q, k, v, do, fn=fn: jax.vjp(fn, q, k, v)[1](do))
                t_f = time_ms(fwd, q, k, v, reps=cfg.reps)
                row.update(fwd_ms=t_f, tflops_fwd=flops_fwd / t_f / 1e9)
                if has_bwd:
                    t_fb = time_ms(fwd_bwd, q, k, v, do, reps=cfg.reps)
                    t_b = t_fb - t_f  # noise can make it <= 0 at tiny sizes: report None
                    row.update(
                        fwd_bwd_ms=t_fb,
                        bwd_ms=t_b if t_b > 0 else None,
                        tflops_bwd=2.5 * flops_fwd / t_b / 1e9 if t_b > 0 else None,
                        tflops_fwd_bwd=3.5 * flops_fwd / t_fb / 1e9,
                    )
            except Exception as e:  # a peer that cannot run here is reported, not fatal
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            rows.append(row)
    return rows


def copy_bandwidth_gbs(cfg: BenchConfig) -> float:
    """Read + write bandwidth of an elementwise pass over a large array."""
    x = jnp.ones((cfg.copy_bytes // 4,), jnp.float32)
    t = time_ms(jax.jit(lambda x: x * 1.0001), x, reps=cfg.reps)
    return 2 * cfg.copy_bytes / t / 1e6


def bench_decode(cfg: BenchConfig, backend: str, interpret: bool, copy_gbs: float):
    dtype = jnp.dtype(cfg.dtype)
    B, H, G, D = cfg.decode_batch, cfg.decode_heads, cfg.decode_kv_heads, cfg.head_dim
    impls = {
        "ours_pallas": functools.partial(
            decode_attention, block_sizes=cfg.decode_blocks, interpret=interpret
        ),
        "model_xla": decode_attention_reference,  # the model's plain-XLA decode path
    }
    if backend == "gpu":
        from jax.experimental.pallas.ops.gpu import decode_attention as jax_decode

        impls["jax_pallas_triton"] = lambda q, k, v, lengths: jax_decode.gqa(
            q, k, v, kv_seq_len=lengths
        )
    rows = []
    for S in cfg.decode_lengths:
        key = jax.random.split(jax.random.key(S), 3)
        q = jax.random.normal(key[0], (B, H, D), dtype)
        k = jax.random.normal(key[1], (B, S, G, D), dtype)
        v = jax.random.normal(key[2], (B, S, G, D), dtype)
        lengths = jnp.full((B,), S, jnp.int32)  # full caches: every byte must be read
        nbytes = 2 * B * S * G * D * dtype.itemsize
        for name, fn in impls.items():
            row = dict(impl=name, S=S, B=B, H=H, G=G, Dh=D, cache_bytes=nbytes)
            try:
                t = time_ms(jax.jit(fn), q, k, v, lengths, reps=cfg.reps)
                gbs = nbytes / t / 1e6
                row.update(ms=t, gbs=gbs, fraction_of_copy=gbs / copy_gbs)
            except Exception as e:
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            rows.append(row)
    return rows


def max_error_vs_xla(cfg: BenchConfig, interpret: bool) -> float:
    """Sanity check at the smallest length: our forward against jax.nn's XLA attention."""
    T = cfg.lengths[0]
    key = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(key[0], (1, T, cfg.heads, cfg.head_dim), jnp.float32)
    k, v = (
        jax.random.normal(kk, (1, T, cfg.kv_heads, cfg.head_dim), jnp.float32) for kk in key[1:]
    )
    ours = flash_attention(q, k, v, causal=cfg.causal, block_sizes=cfg.blocks, interpret=interpret)
    ref = jax.nn.dot_product_attention(q, k, v, is_causal=cfg.causal, implementation="xla")
    return float(jnp.abs(ours - ref).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (default on CPU)")
    parser.add_argument("--lengths", type=int, nargs="*", help="override training lengths")
    parser.add_argument("--reps", type=int, help="timed repetitions per measurement")
    args = parser.parse_args()

    backend = jax.default_backend()
    tiny = args.tiny or backend == "cpu"
    cfg = BenchConfig.tiny() if tiny else BenchConfig()
    if args.lengths:
        cfg.lengths = tuple(args.lengths)
    if args.reps:
        cfg.reps = args.reps
    interpret = backend == "cpu"
    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    mem_limit = stats.get("bytes_limit")

    copy_gbs = copy_bandwidth_gbs(cfg)
    result = dict(
        bench="attention",
        backend=backend,
        device=device.device_kind,
        jax=jax.__version__,
        tiny=tiny,
        interpret=interpret,
        note="interpreter timings on CPU mean nothing" if interpret else "",
        config={
            k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v)
            for k, v in dataclasses.asdict(cfg).items()
        },
        max_abs_error_vs_xla=max_error_vs_xla(cfg, interpret),
        training=bench_training(cfg, backend, interpret, mem_limit),
        copy_bandwidth_gbs=copy_gbs,
        decode=bench_decode(cfg, backend, interpret, copy_gbs),
    )
    print(json.dumps(result))
    failed = [r for r in result["training"] + result["decode"] if r["impl"] == "ours_pallas"]
    if any("error" in r for r in failed):  # peers may fail on some devices; ours must not
        sys.exit(1)


if __name__ == "__main__":
    main()
