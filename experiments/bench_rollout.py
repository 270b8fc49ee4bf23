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
- memory side (`rollout_cases.memory_limits`): bytes one decode step reads (weights and
  the whole KV cache), the machine's streaming read rate and the rate XLA's own dots stream
  weights at 32 rows -> memory_roofline_tokens_per_s, dot_bound_tokens_per_s, and the
  decode-only rate against each (`k15_decode_vs_memory_roofline`, `k15_decode_vs_dot_bound`).
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
import dataclasses
import json
import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.rollout_cases import PartialCase, bench_partial, breakdown, log, memory_limits
from k15_jax.model import load_hf
from k15_jax.rollout import RolloutConfig, collect, make_engine, timed_handover
from k15_jax.sharding import TRAIN_RULES, MeshConfig, make_mesh, param_shardings

# batch, prompt tokens, new tokens of the main case (flags can shrink them)
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
# configs/model/qwen2_5_0_5b.yaml as a transformers config (random weights, no download)
QWEN_0_5B = dict(
    vocab_size=151936,
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    tie_word_embeddings=True,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    max_position_embeddings=32768,
)
SHAPES = {"28m": HF_CONFIG, "qwen2_5_0_5b": QWEN_0_5B}


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


def build_models(tmp: str, shape: str = "28m", dtype: str = "float32"):
    import torch
    import transformers

    torch.manual_seed(0)
    hf = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**SHAPES[shape])).eval()
    hf.save_pretrained(tmp)
    cfg, params = load_hf(tmp, dtype=dtype, param_dtype=dtype)
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
        for _ in range(NEW // min(n, NEW)):  # --new below steps_per_sync: one short chunk
            state, out = engine.generate(engine.params, state, min(n, NEW))
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


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="28m", help="model shape")
    ap.add_argument("--dtype", default="float32", help="params and activations (bfloat16)")
    ap.add_argument("--batch", type=int, default=BATCH, help="main case: slots = prompts")
    ap.add_argument("--prompt", type=int, default=PROMPT, help="main case: prompt tokens")
    ap.add_argument("--new", type=int, default=NEW, help="main case: new tokens")
    ap.add_argument("--partial-new", type=int, default=256, help="partial cases: max new")
    ap.add_argument("--partial-budget", type=int, default=64)
    ap.add_argument("--k8-prompts", type=int, default=8, help="k8 case: prompts x K=8")
    ap.add_argument("--long-prompt", type=int, default=256)
    ap.add_argument("--long-new", type=int, default=1024)
    ap.add_argument("--long-prompts", type=int, default=4, help="long case: prompts x K=8")
    ap.add_argument("--long-budget", type=int, default=256)
    ap.add_argument(
        "--share-prefix",
        choices=("on", "off"),
        default="on",
        help="partial and long cases: rollout.share_prefix (K samples share a prompt prefill)",
    )
    ap.add_argument("--skip", default="", help="comma list of: hf, partial, long, breakdown")
    ap.add_argument("--json-out", help="also write the JSON object to this file")
    return ap.parse_args(argv)


def partial_cases(args) -> dict:
    """The partial-rollout cases: name -> PartialCase (all through `collect`)."""
    lo = min(8, args.partial_new)
    share = args.share_prefix == "on"
    common = dict(
        prompt_len=args.prompt, max_new=args.partial_new, budget=args.partial_budget,
        share_prefix=share,
    )  # fmt: skip
    cases = {
        "k1": PartialCase(args.batch, 1, **common, slots=args.batch, median=24, lo=lo),
        "k4": PartialCase(max(args.batch // 4, 1), 4, **common, slots=args.batch, median=24, lo=lo),
        # slots = the iteration's trajectories, as in every case here and in the main job
        # (rollout.slots = batch_prompts x K); until 2026-12-06 k8 ran 64 trajectories in 32
        # slots, a queue that a budget cannot shorten (0.94x then)
        "k8": PartialCase(
            args.k8_prompts, 8, **common, slots=args.k8_prompts * 8, median=24, lo=lo
        ),
    }
    long_lo = min(32, args.long_new)
    cases["long"] = PartialCase(
        args.long_prompts, 8, args.long_prompt, args.long_new, args.long_budget,
        slots=args.long_prompts * 8, median=args.long_new / 6, lo=long_lo, share_prefix=share,
    )  # fmt: skip
    return cases


def ratio(a: float, b: float):
    """a / b, or None when b is 0 (a tiny run may complete no sequence in a mode)."""
    return a / b if b else None


def partial_figures(results: dict) -> dict:
    """JSON keys of the partial-rollout cases (time per iteration and completed sequences
    per second in both modes, so deferring long samples cannot flatter the speedup)."""
    out = {}
    for name, suffix in (("k1", ""), ("k4", "_k4"), ("k8", "_k8")):
        if name not in results:
            continue
        full, part = results[name][False], results[name][True]
        out[f"partial_rollout_speedup{suffix}"] = full["mean_iter_s"] / part["mean_iter_s"]
        out[f"partial_throughput_speedup{suffix}"] = ratio(part["seqs_per_s"], full["seqs_per_s"])
        out[f"partial_mean_iter_s{suffix}"] = part["mean_iter_s"]
        out[f"full_mean_iter_s{suffix}"] = full["mean_iter_s"]
        out[f"partial_seqs_per_s{suffix}"] = part["seqs_per_s"]
        out[f"full_seqs_per_s{suffix}"] = full["seqs_per_s"]
    if "long" in results:
        full, part = results["long"][False], results["long"][True]
        out["long_tokens_per_s"] = full["tokens_per_s"]
        out["long_partial_tokens_per_s"] = part["tokens_per_s"]
        out["long_partial_speedup"] = full["mean_iter_s"] / part["mean_iter_s"]
        out["long_partial_throughput_speedup"] = ratio(part["seqs_per_s"], full["seqs_per_s"])
        out["long_full_seqs_per_s"] = full["seqs_per_s"]
        out["long_partial_seqs_per_s"] = part["seqs_per_s"]
    return out


def main(argv=None):
    global BATCH, PROMPT, NEW  # the main case's sizes, read by the bench_* functions
    args = parse_args(argv)
    BATCH, PROMPT, NEW = args.batch, args.prompt, args.new
    skip = set(filter(None, args.skip.split(",")))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        hf, cfg, params = build_models(tmp, args.shape, args.dtype)
    prompts = rng.integers(3, cfg.vocab_size, (BATCH, PROMPT)).astype(np.int32)
    log(f"model: {cfg.num_params / 1e6:.1f}M params, {args.dtype}")
    flops_s = matmul_flops_per_s()
    per_token = decode_flops_per_token(cfg, PROMPT + NEW / 2)
    log(f"matmul {flops_s / 1e9:.1f} GFLOP/s, {per_token / 1e6:.1f} MFLOP/token")

    load_before = os.getloadavg()[0]
    result = {}
    hf_tokens = None
    if "hf" not in skip:
        hf_tps, hf_tokens, hf_threads = bench_hf(hf, prompts, args.repeats)
        log(f"transformers generate: {hf_tps:.0f} tokens/s")
        result.update(hf_tokens_per_s=hf_tps, hf_torch_threads=hf_threads)
    del hf
    k15_tps, k15_tokens, engine = bench_k15(cfg, params, prompts, args.repeats)
    log(f"k15_jax collect: {k15_tps:.0f} tokens/s")
    decode_tps = bench_decode_only(engine, prompts, args.repeats)
    handover_s = bench_handover(engine, params)
    flops_s_after = matmul_flops_per_s()  # the machine is shared: bracket the measurements
    roofline = max(flops_s, flops_s_after) / per_token  # the best the machine showed
    result.update(
        k15_tokens_per_s=k15_tps,
        roofline_tokens_per_s=roofline,
        handover_s=handover_s,
        k15_vs_roofline=k15_tps / roofline,
        k15_decode_tokens_per_s=decode_tps,
        k15_decode_vs_roofline=decode_tps / roofline,
        matmul_gflop_s=flops_s / 1e9,
        matmul_gflop_s_after=flops_s_after / 1e9,
        decode_mflop_per_token=per_token / 1e6,
    )
    mem = memory_limits(cfg, BATCH, engine.cache_len)
    result.update(
        mem, k15_decode_vs_memory_roofline=decode_tps / mem["memory_roofline_tokens_per_s"]
    )
    result["k15_decode_vs_dot_bound"] = decode_tps / mem["dot_bound_tokens_per_s"]
    if hf_tokens is not None:
        first_diff = [
            int(np.argmax(a != b)) if np.any(a != b) else NEW for a, b in zip(k15_tokens, hf_tokens)
        ]
        result["k15_vs_hf"] = k15_tps / result["hf_tokens_per_s"]
        result["greedy_rows_equal_to_hf"] = float(np.mean(np.all(k15_tokens == hf_tokens, 1)))
        result["greedy_mean_first_divergence"] = float(np.mean(first_diff))
    if "breakdown" not in skip:
        rc = dataclasses.replace(engine.cfg, greedy=False, temperature=1.0, top_p=0.95)
        bd = breakdown(cfg, params, rc, prompts)
        log("breakdown (s): " + ", ".join(f"{k} {v:.3f}" for k, v in bd.items()))
        result.update({f"breakdown_{k}": v for k, v in bd.items()})
    runs = {}
    for name, case in partial_cases(args).items():
        if ("long" if name == "long" else "partial") not in skip:
            log(f"partial rollouts, case {name}: {case}")
            runs[name] = bench_partial(cfg, params, case, args.iterations, args.warmup, name)
    result.update(partial_figures(runs))
    result.update(
        params_m=cfg.num_params / 1e6,
        shape=args.shape,
        dtype=args.dtype,
        batch=args.batch,  # the main case as run (flags can shrink it)
        prompt_tokens=args.prompt,
        new_tokens=args.new,
        share_prefix=args.share_prefix == "on",
        backend=jax.default_backend(),
        devices=len(jax.devices()),
        cpu_count=os.cpu_count(),
        load_average_start=load_before,
        load_average_end=os.getloadavg()[0],
        load_average=list(os.getloadavg()),  # 1, 5 and 15 minutes, at the end
    )
    line = json.dumps(result)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
