"""Rollout benchmark: the k15_jax engine against Hugging Face `generate()`, in one run.

Same random Qwen2 config for both (hidden 512, intermediate 1536, 8 layers, 8 query / 2 KV
heads, vocab 8192, tied embeddings: about 28M params), identical weights (the HF model is
saved and loaded with `load_hf`), batch 32, prompt 64 tokens, 128 new tokens, greedy, no
early stop. Figures (all measured in this process):

- k15_tokens_per_s / hf_tokens_per_s: 32 * 128 new tokens / wall time of the whole call
  (prefill included, compile excluded), best of `--repeats` calls.
- k15_decode_tokens_per_s: decode steps alone (slots filled, prefill excluded).
- roofline_tokens_per_s: FLOP/s of a jitted 2048^3 float32 matmul (best of several, measured
  before and after the engine runs; the higher one) /
  FLOPs of one decode token = 2 * (params touched: every matrix + the LM head) + 4 * L * H *
  Dh * (mean context = prompt + new / 2).
- handover_s: one params hand-over (training shardings -> engine shardings, jitted, on
  device), median of 5.
- partial_rollout_speedup: mean wall time per RL iteration without / with partial rollouts
  (budget 64 tokens), 32 trajectories per iteration (32 prompts x K=1), response lengths
  drawn from a long-tailed distribution (log-normal, median 24, clipped to [8, 256]);
  `_k4`: the same with 8 prompts x K=4 sharing each prompt's length (a group returns only
  when all 4 finish, so long prompts hold 4 slots' worth of re-prefill); the first
  `--warmup` iterations of each mode (compiles, buffer filling) are not timed, and XLA
  compile time inside timed iterations (a new prefill bucket) is subtracted. Also
  reported: completed sequences per second in both modes (partial rollouts defer long
  samples, so per-iteration time alone could flatter them).

    python -m experiments.bench_rollout [--repeats 3] [--iterations 4] [--warmup 3]

Prints one JSON object as its last line.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from k15_jax.model import load_hf
from k15_jax.rollout import RolloutConfig, collect, make_engine, timed_handover
from k15_jax.sharding import TRAIN_RULES, MeshConfig, make_mesh, param_shardings

BATCH, PROMPT, NEW = 32, 64, 128
HF_CONFIG = dict(
    vocab_size=8192,
    hidden_size=512,
    intermediate_size=1536,
    num_hidden_layers=8,
    num_attention_heads=8,
    num_key_value_heads=2,
    tie_word_embeddings=True,
    max_position_embeddings=1024,
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


_COMPILE_S = [0.0]


def _count_compiles(event: str, duration: float, **kwargs) -> None:
    if event.startswith("/jax/core/compile"):
        _COMPILE_S[0] += duration


jax.monitoring.register_event_duration_secs_listener(_count_compiles)


def timed(fn, *args, **kwargs):
    """(result, wall seconds, of which XLA tracing/compiling seconds)."""
    c0, t0 = _COMPILE_S[0], time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0, _COMPILE_S[0] - c0


def matmul_flops_per_s(n: int = 2048, repeats: int = 10) -> float:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    mm(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        mm(a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def decode_flops_per_token(cfg, context: float) -> float:
    """2 x (weights a token touches: all matrices + the LM head; the embedding lookup is
    free) + attention scores and values over `context` cached positions."""
    matrices = cfg.num_params - cfg.vocab_size * cfg.hidden_size  # drop the lookup table
    head = cfg.vocab_size * cfg.hidden_size
    attn = 4 * cfg.num_layers * cfg.num_heads * cfg.head_dim * context
    return 2 * (matrices + head) + attn


def build_models(tmp: str):
    import torch
    import transformers

    torch.manual_seed(0)
    hf = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**HF_CONFIG)).eval()
    hf.save_pretrained(tmp)
    cfg, params = load_hf(tmp)
    return hf, cfg, params


def bench_hf(hf, prompts: np.ndarray, repeats: int):
    """Best of `repeats` generate() calls, with the faster of 1 thread or all cores (torch's
    OpenMP threads collapse on a shared, oversubscribed machine; give the peer its best)."""
    import torch

    ids = torch.as_tensor(prompts, dtype=torch.long)
    mask = torch.ones_like(ids)
    kw = dict(do_sample=False, max_new_tokens=NEW, min_new_tokens=NEW, pad_token_id=0)
    short = {**kw, "max_new_tokens": 8, "min_new_tokens": 8}
    with torch.no_grad():
        trial = {}
        for threads in sorted({1, os.cpu_count() or 1}):
            torch.set_num_threads(threads)
            hf.generate(ids[:2], **short)  # warm-up
            t0 = time.perf_counter()
            hf.generate(ids, attention_mask=mask, **short)
            trial[threads] = time.perf_counter() - t0
        threads = min(trial, key=trial.get)
        torch.set_num_threads(threads)
        log(f"transformers: {threads} thread(s) (trial times {trial})")
        best, out = float("inf"), None
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = hf.generate(ids, attention_mask=mask, **kw)
            best = min(best, time.perf_counter() - t0)
    return BATCH * NEW / best, out[:, PROMPT:].numpy(), threads


def bench_k15(cfg, params, prompts: np.ndarray, repeats: int):
    # repeat detection off: random greedy models loop and would stop early (HF does not)
    rc = RolloutConfig(
        greedy=True,
        max_new_tokens=NEW,
        max_prompt_len=PROMPT,
        slots=BATCH,
        steps_per_sync=16,
        stop_on_repeat=False,
    )
    engine = make_engine(cfg, rc, eos_id=(), params=params)
    best, ro = float("inf"), None
    for r in range(repeats + 1):  # the first call compiles
        reqs = [(f"{r}-{i}", p.tolist()) for i, p in enumerate(prompts)]
        t0 = time.perf_counter()
        ro, _, _, stats = collect(engine, reqs, k=1, iteration=0, key=jax.random.key(0))
        assert stats["tokens_generated"] == BATCH * NEW, stats
        if r:
            best = min(best, time.perf_counter() - t0)
    toks = np.asarray(ro.tokens)[:, PROMPT : PROMPT + NEW]
    return BATCH * NEW / best, toks, engine


def bench_decode_only(engine, prompts: np.ndarray, repeats: int) -> float:
    """Decode steps alone: slots filled by one prefill, then NEW steps in chunks."""
    n = engine.cfg.steps_per_sync
    best = float("inf")
    for _ in range(repeats):
        state = engine.init_decode_state()
        prefix = engine.prefill(engine.params, [p.tolist() for p in prompts])
        state = engine.insert(prefix, state, [{"slot": i, "row": i} for i in range(BATCH)])
        jax.block_until_ready(state)
        t0 = time.perf_counter()
        for _ in range(NEW // n):
            state, out = engine.generate(engine.params, state, n)
            jax.device_get(out)
        best = min(best, time.perf_counter() - t0)
    return BATCH * NEW / best


def bench_handover(engine, params) -> float:
    mesh = make_mesh(MeshConfig())
    train = jax.device_put(params, param_shardings(engine.model_cfg, mesh, TRAIN_RULES))
    times = []
    for _ in range(6):
        engine, dt = timed_handover(engine, train)
        times.append(dt)
    return statistics.median(times[1:])  # the first one compiles


def long_tail_lengths(rng, n: int) -> np.ndarray:
    return np.clip(np.round(np.exp(rng.normal(np.log(24), 1.0, n))), 8, 256).astype(int)


def bench_partial(cfg, params, iterations: int, warmup: int, k: int, budget: int = 64):
    """RL iterations without / with partial rollouts on long-tailed response lengths, BATCH
    trajectories (BATCH / k prompts x k samples) per iteration; the first `warmup`
    iterations (compiles of new prefill / attention-span buckets, buffer filling up to its
    steady state) are not timed. Lengths are per prompt (all k samples of a prompt share
    one), so k = 1 is the per-trajectory case and k = 4 adds the whole-group constraint."""
    prompts_per_iter = BATCH // k
    out = {}
    for partial in (False, True):
        rc = RolloutConfig(
            greedy=True,
            max_new_tokens=256,
            max_prompt_len=PROMPT,
            slots=BATCH,
            steps_per_sync=16,
            stop_on_repeat=False,
            partial=partial,
            budget_tokens=budget,
        )
        engine = make_engine(cfg, rc, eos_id=(), params=params)
        rng = np.random.default_rng(0)  # same prompts and lengths in both modes
        buffer, times, seqs, tokens = None, [], 0, 0
        for it in range(warmup + iterations):
            lens = long_tail_lengths(rng, prompts_per_iter)
            reqs = [
                (f"{it}-{i}", rng.integers(3, cfg.vocab_size, PROMPT).tolist(), int(n))
                for i, n in enumerate(lens)
            ]
            (ro, ids, buffer, stats), dt, compile_s = timed(
                collect, engine, reqs, k=k, iteration=it, key=jax.random.key(it), buffer=buffer
            )
            if it >= warmup:
                times.append(dt - compile_s)  # a new bucket can still compile: not counted
                seqs += len(ids) * k
                tokens += int(stats["tokens_generated"])
            log(
                f"  k={k} partial={partial} it={it}: {dt:.2f}s ({compile_s:.2f}s compiling), "
                f"{len(ids)} groups back, buffer {buffer.num_groups}, "
                f"steps {stats['decode_steps']:.0f}, prefill tokens {stats['prefill_tokens']:.0f}"
            )
        out[partial] = dict(
            mean_iter_s=float(np.mean(times)),
            seqs_per_s=seqs / sum(times),
            tokens_per_s=tokens / sum(times),
        )
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    prompts = rng.integers(3, HF_CONFIG["vocab_size"], (BATCH, PROMPT)).astype(np.int32)

    with tempfile.TemporaryDirectory() as tmp:
        hf, cfg, params = build_models(tmp)
    log(f"model: {cfg.num_params / 1e6:.1f}M params")
    flops_s = matmul_flops_per_s()
    per_token = decode_flops_per_token(cfg, PROMPT + NEW / 2)
    log(f"matmul {flops_s / 1e9:.1f} GFLOP/s, {per_token / 1e6:.1f} MFLOP/token")

    load_before = os.getloadavg()[0]
    hf_tps, hf_tokens, hf_threads = bench_hf(hf, prompts, args.repeats)
    log(f"transformers generate: {hf_tps:.0f} tokens/s")
    k15_tps, k15_tokens, engine = bench_k15(cfg, params, prompts, args.repeats)
    log(f"k15_jax collect: {k15_tps:.0f} tokens/s")
    decode_tps = bench_decode_only(engine, prompts, args.repeats)
    handover_s = bench_handover(engine, params)
    flops_s_after = matmul_flops_per_s()  # the machine is shared: bracket the measurements
    roofline = max(flops_s, flops_s_after) / per_token  # the best the machine showed
    log("partial rollouts:")
    part = bench_partial(cfg, params, args.iterations, args.warmup, k=1)
    part4 = bench_partial(cfg, params, args.iterations, args.warmup, k=4)

    same_rows = float(np.mean(np.all(k15_tokens == hf_tokens, axis=1)))
    first_diff = [
        int(np.argmax(a != b)) if np.any(a != b) else NEW for a, b in zip(k15_tokens, hf_tokens)
    ]
    result = {
        "k15_tokens_per_s": k15_tps,
        "hf_tokens_per_s": hf_tps,
        "roofline_tokens_per_s": roofline,
        "handover_s": handover_s,
        "partial_rollout_speedup": part[False]["mean_iter_s"] / part[True]["mean_iter_s"],
        "k15_vs_hf": k15_tps / hf_tps,
        "k15_vs_roofline": k15_tps / roofline,
        "k15_decode_tokens_per_s": decode_tps,
        "k15_decode_vs_roofline": decode_tps / roofline,
        "hf_torch_threads": hf_threads,
        "matmul_gflop_s": flops_s / 1e9,
        "matmul_gflop_s_after": flops_s_after / 1e9,
        "decode_mflop_per_token": per_token / 1e6,
        "partial_mean_iter_s": part[True]["mean_iter_s"],
        "full_mean_iter_s": part[False]["mean_iter_s"],
        "partial_seqs_per_s": part[True]["seqs_per_s"],
        "full_seqs_per_s": part[False]["seqs_per_s"],
        "partial_throughput_speedup": part[True]["seqs_per_s"] / part[False]["seqs_per_s"],
        "partial_rollout_speedup_k4": part4[False]["mean_iter_s"] / part4[True]["mean_iter_s"],
        "partial_throughput_speedup_k4": part4[True]["seqs_per_s"] / part4[False]["seqs_per_s"],
        "greedy_rows_equal_to_hf": same_rows,
        "greedy_mean_first_divergence": float(np.mean(first_diff)),
        "params_m": cfg.num_params / 1e6,
        "batch": BATCH,
        "prompt_tokens": PROMPT,
        "new_tokens": NEW,
        "backend": jax.default_backend(),
        "devices": len(jax.devices()),
        "cpu_count": os.cpu_count(),
        "load_average_start": load_before,
        "load_average_end": os.getloadavg()[0],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
