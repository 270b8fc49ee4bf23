"""Cases of `bench_rollout`: partial rollouts on long-tailed lengths, and a timing breakdown.

Both drive `k15_jax.rollout.collect` exactly as the trainer does; the breakdown wraps the
engine's host calls with `block_until_ready`, so it serialises host and device (use its
shares, not its total, as the figure).
"""

import dataclasses
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from k15_jax.rollout import RolloutConfig, collect, make_engine
from k15_jax.rollout.sampling import SamplingParams, policy_logp, sample_tokens

_COMPILE_S = [0.0]


def _count_compiles(event: str, duration: float, **kwargs) -> None:
    if event.startswith("/jax/core/compile"):
        _COMPILE_S[0] += duration


jax.monitoring.register_event_duration_secs_listener(_count_compiles)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def timed(fn, *args, **kwargs):
    """(result, wall seconds, of which XLA tracing/compiling seconds)."""
    c0, t0 = _COMPILE_S[0], time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0, _COMPILE_S[0] - c0


def long_tail_lengths(rng, n: int, median: float, lo: int, hi: int) -> np.ndarray:
    """Log-normal (sigma 1) response lengths, clipped to [lo, hi]."""
    return np.clip(np.round(np.exp(rng.normal(np.log(median), 1.0, n))), lo, hi).astype(int)


@dataclasses.dataclass
class PartialCase:
    """One partial-rollout comparison: `prompts` x `k` trajectories per iteration, lengths
    per prompt (all k samples of a prompt share one, so a group returns when its longest
    sample does) drawn long-tailed between lo and hi around median."""

    prompts: int
    k: int
    prompt_len: int
    max_new: int
    budget: int
    slots: int
    median: float
    lo: int
    share_prefix: bool = True  # rollout.share_prefix


def bench_partial(cfg, params, case: PartialCase, iterations: int, warmup: int, label: str):
    """RL iterations without / with a budget; the first `warmup` iterations (compiles of new
    buckets, buffer filling to its steady state) are not timed, and compile time inside timed
    iterations is subtracted. Returns {partial: {mean_iter_s, seqs_per_s, tokens_per_s}}."""
    out = {}
    for partial in (False, True):
        rc = RolloutConfig(
            greedy=True,
            max_new_tokens=case.max_new,
            max_prompt_len=case.prompt_len,
            slots=case.slots,
            steps_per_sync=16,
            stop_on_repeat=False,
            partial=partial,
            budget_tokens=case.budget,
            share_prefix=case.share_prefix,
        )
        engine = make_engine(cfg, rc, eos_id=(), params=params)
        rng = np.random.default_rng(0)  # same prompts and lengths in both modes
        buffer, times, seqs, tokens = None, [], 0, 0
        for it in range(warmup + iterations):
            lens = long_tail_lengths(rng, case.prompts, case.median, case.lo, case.max_new)
            reqs = [
                (f"{it}-{i}", rng.integers(3, cfg.vocab_size, case.prompt_len).tolist(), int(n))
                for i, n in enumerate(lens)
            ]
            (ro, ids, buffer, stats), dt, compile_s = timed(
                collect, engine, reqs, k=case.k, iteration=it, key=jax.random.key(it), buffer=buffer
            )
            if it >= warmup:
                times.append(dt - compile_s)
                seqs += len(ids) * case.k
                tokens += int(stats["tokens_generated"])
            log(
                f"  {label} partial={partial} it={it}: {dt:.2f}s ({compile_s:.2f}s compiling), "
                f"{len(ids)} groups back, buffer {buffer.num_groups}, steps "
                f"{stats['decode_steps']:.0f}, prefill tokens {stats['prefill_tokens']:.0f}"
            )
        total = max(sum(times), 1e-9)
        out[partial] = dict(
            mean_iter_s=float(np.mean(times)), seqs_per_s=seqs / total, tokens_per_s=tokens / total
        )
    return out


def _wrap(engine, name: str, acc: dict, sync: bool = False):
    fn = getattr(engine, name)

    def run(*args, **kwargs):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args, **kwargs))
        t1 = time.perf_counter()
        acc[name] = acc.get(name, 0.0) + t1 - t0
        if sync:  # the driver's device_get then finds the host copy cached
            jax.device_get(out[1])
            acc["host_sync"] = acc.get("host_sync", 0.0) + time.perf_counter() - t1
        return out

    setattr(engine, name, run)


def _best_s(fn, *args, repeats: int = 10) -> float:
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def sampling_s_per_step(slots: int, vocab: int, sp: SamplingParams, repeats: int = 20) -> float:
    """Seconds of one step's sampling + log-prob of [slots, vocab] logits, jitted alone."""
    f = jax.jit(lambda x, k: policy_logp(x, sample_tokens(x, jax.random.split(k, slots), sp)))
    x = jax.random.normal(jax.random.key(0), (slots, vocab), jnp.float32)
    return _best_s(f, x, jax.random.key(1), repeats=repeats)


def breakdown(cfg, params, rc: RolloutConfig, prompts: np.ndarray, k: int = 1) -> dict:
    """Where one collect call's wall time goes: prefill (+ extend, insert), decode steps,
    sampling (estimated: a jitted sampler alone x decode steps, part of the decode chunk),
    host syncs (device -> host of each chunk's tokens) and the rest (host bookkeeping)."""
    engine = make_engine(cfg, rc, eos_id=(), params=params)
    reqs = lambda tag: [(f"{tag}-{i}", p.tolist()) for i, p in enumerate(prompts)]
    collect(engine, reqs("warm"), k=k, iteration=0, key=jax.random.key(0))  # compiles
    acc: dict = {}
    for name in ("prefill", "extend", "insert"):
        _wrap(engine, name, acc)
    _wrap(engine, "generate", acc, sync=True)
    t0 = time.perf_counter()
    _, _, _, stats = collect(engine, reqs("run"), k=k, iteration=0, key=jax.random.key(0))
    total = time.perf_counter() - t0
    sp = SamplingParams.from_config(rc)
    sampling = sampling_s_per_step(rc.slots, cfg.vocab_size, sp) * stats["decode_steps"]
    prefill = sum(acc.get(n, 0.0) for n in ("prefill", "extend", "insert"))
    decode = acc.get("generate", 0.0)
    out = {
        "total_s": total,
        "prefill_s": prefill,
        "decode_s": max(decode - sampling, 0.0),
        "sampling_s": min(sampling, decode),
        "host_sync_s": acc.get("host_sync", 0.0),
        "decode_steps": stats["decode_steps"],
        "host_syncs": stats["host_syncs"],
    }
    out["host_other_s"] = max(total - prefill - decode - out["host_sync_s"], 0.0)
    return out


def memory_limits(cfg, slots: int, cache_len: int) -> dict:
    """The memory side of one decode step, measured on this machine.

    A decode step of `slots` rows reads every weight matrix and the LM head once (f32 here)
    and the KV cache of all `cache_len` positions: `decode_step_mb`. Two rates:
      read_gb_s      a jitted sum over 256 MB (streaming reads, the machine's limit)
      dot_gb_s       the weight bytes per second of XLA's own dots at the decode shape:
                     [slots, D] @ [D, F] chained over the model's MLP matrices (what the
                     compiler's kernels can stream at this row count)
    -> memory_roofline_tokens_per_s = slots x read_gb_s / decode_step_mb and
       dot_bound_tokens_per_s = slots x dot_gb_s / decode_step_mb.
    """
    f32 = 4
    weights = cfg.num_params - (0 if cfg.tie_embeddings else cfg.vocab_size * cfg.hidden_size)
    cache = 2 * cfg.num_layers * slots * cfg.num_kv_heads * cache_len * cfg.head_dim
    step_bytes = (weights + cache) * f32
    big = jnp.ones((64 << 20,), jnp.float32)
    read = big.nbytes / _best_s(jax.jit(jnp.sum), big)
    del big
    D, F, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
    keys = jax.random.split(jax.random.key(0), 2 * L + 1)
    ws = [jax.random.normal(k, (D, F) if i % 2 == 0 else (F, D)) for i, k in enumerate(keys[:-1])]
    h = jax.random.normal(keys[-1], (slots, D))

    def chain(h, ws):
        for w in ws:
            h = jnp.tanh(h @ w)  # keeps every dot live and the rows bounded
        return h

    dot = sum(w.nbytes for w in ws) / _best_s(jax.jit(chain), h, ws)
    return {
        "decode_step_mb": step_bytes / 1e6,
        "read_gb_s": read / 1e9,
        "dot_gb_s": dot / 1e9,
        "memory_roofline_tokens_per_s": slots * read / step_bytes,
        "dot_bound_tokens_per_s": slots * dot / step_bytes,
    }
