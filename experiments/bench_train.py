"""Training-step benchmark on CPU: our jitted JAX step against a transformers step.

For two configs, the project default (`configs/config.yaml` model section, the SFT shape
16 x 128 tokens) and a ~54M-param Qwen2 shape (4 x 512 tokens), it times one full training
step: forward, backward and an AdamW update.

  ours:   NLL from `k15_jax.model.token_logprobs` (as `k15_jax.train.sft.sft_loss`),
          `jax.value_and_grad`, `optax.adamw`, `jax.jit` with params and optimizer state
          donated; a few `ModelConfig` variants (logits_chunk, remat, dtype) are timed and
          the fastest is reported next to the one the config asks for.
  peer:   transformers `Qwen2ForCausalLM` / `LlamaForCausalLM` built from the same config
          (`hf_config_dict`), float32, `model(ids, labels=ids).loss`, `backward()`,
          `torch.optim.AdamW`, torch threads = CPU count.
  roof:   a jitted float32 N x N matmul (2 N^3 FLOPs) in the same process, and the same
          matmul in torch; our FLOP/s over the JAX matmul's is the "CPU MFU".

FLOPs of one step (model FLOPs, the same count for every framework, as in PaLM's MFU):

    flops = 6 * P * B * T  +  12 * L * H * Dh * T * B * T

P = the params that enter a matmul: ModelConfig.num_params less an untied input
embedding (a lookup; a tied embedding counts once, as the LM head), norms and biases
included (negligible, as usual). B batch rows, T tokens per row, L layers, H query heads,
Dh head dim. The second term is attention's QK^T and PV (2 matmuls x 2 FLOPs x T^2 x H x Dh
per layer forward, x3 with the backward) over the full T x T scores: the XLA path computes
all of them (causal masking skips no work), so no causal halving.

Candidates run round-robin (one matmul, then one step of each candidate, per round) so a
load change on this shared machine hits all of them alike; each reports its mean and best
step. Compilation and one warm-up step come first and are not timed.

    python -m experiments.bench_train            # full sizes (minutes on 2 cores)
    python -m experiments.bench_train --tiny     # seconds; proves the paths run

"rl_update": the main job's RL update (16 x 8 rows of 16 + 176 tokens, M = 4), fused and plain,
with its breakdown and compilations per iteration (experiments/bench_rl_update.py).

Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from k15_jax.model import ModelConfig, init_params, token_logprobs
from k15_jax.model.hf import hf_config_dict

ROOT = Path(__file__).resolve().parents[1]

FLOP_FORMULA = (
    "6*P*B*T + 12*L*H*Dh*T*B*T; P = params less an untied input embedding (a tied one counts "
    "once, as the LM head); attention over the full T x T scores"
)

# ~54M params: the 56.6M Qwen2 measurement used 12 layers of width 512 at 4 x 512.
QWEN2_50M = dict(
    architecture="Qwen2ForCausalLM",
    qkv_bias=True,
    tie_embeddings=True,
    vocab_size=32000,
    hidden_size=512,
    intermediate_size=1536,
    num_layers=12,
    num_heads=8,
    num_kv_heads=4,
    head_dim=64,
    rope_theta=1e6,
    max_position_embeddings=512,
)
QWEN2_TINY = dict(
    QWEN2_50M,
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    max_position_embeddings=64,
    logits_chunk=16,
)

# ModelConfig overrides timed for our step, by name; "configured" is the config as given.
VARIANTS = {
    "configured": lambda cfg, T: {},
    "one_logits_chunk": lambda cfg, T: {"logits_chunk": T},
    "remat_full": lambda cfg, T: {"remat": "full"},
    "bfloat16": lambda cfg, T: {"dtype": "bfloat16"},
}


RL_TINY = ("sampler.batch_prompts=2", "sampler.samples_per_prompt=4", "rollout.max_new_tokens=16")


@dataclasses.dataclass
class BenchConfig:
    """Sizes of one run; `tiny()` for the smoke test."""

    default_shape: tuple[int, int] = (16, 128)  # the SFT rows x row_len of configs/config.yaml
    qwen2: dict = dataclasses.field(default_factory=lambda: dict(QWEN2_50M))
    qwen2_shape: tuple[int, int] = (4, 512)
    variants: tuple[str, ...] = tuple(VARIANTS)
    rounds: int = 4
    matmul_n: int = 4096
    torch_peer: bool = True
    threads: int = os.cpu_count() or 1
    # the RL update at the main job's shapes (experiments/bench_rl_update.py); None skips it
    rl_overrides: tuple[str, ...] | None = ()
    rl_iterations: int = 4

    @classmethod
    def tiny(cls) -> BenchConfig:
        return cls(
            default_shape=(2, 128),  # one logits chunk as configured: that variant is skipped
            qwen2=dict(QWEN2_TINY),
            qwen2_shape=(2, 32),
            variants=("configured", "one_logits_chunk"),
            rounds=2,
            matmul_n=128,
            rl_overrides=RL_TINY,
            rl_iterations=3,
        )


def default_model_config() -> ModelConfig:
    """The project's default model: ModelConfig with the model section of configs/config.yaml."""
    import yaml

    path = ROOT / "configs" / "config.yaml"
    section = yaml.safe_load(path.read_text()).get("model") or {}
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(section) - fields)
    if unknown:
        raise ValueError(f"{path}: model keys {unknown} are not ModelConfig fields")
    return ModelConfig(**section)


def step_flops(cfg: ModelConfig, B: int, T: int) -> float:
    """Model FLOPs of one training step, see the module docstring."""
    lookup = 0 if cfg.tie_embeddings else cfg.vocab_size * cfg.hidden_size
    attn = 12 * cfg.num_layers * cfg.num_heads * cfg.head_dim * T
    return float((6 * (cfg.num_params - lookup) + attn) * B * T)


def jax_matmul(n: int):
    """A callable timing one jitted float32 [n, n] @ [n, n]; returns seconds."""
    rng = np.random.default_rng(0)
    a, b = (jnp.asarray(rng.standard_normal((n, n), np.float32)) for _ in range(2))
    f = jax.jit(jnp.matmul)
    f(a, b).block_until_ready()

    def run():
        t = time.perf_counter()
        f(a, b).block_until_ready()
        return time.perf_counter() - t

    return run


def torch_matmul(n: int):
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b

    def run():
        t = time.perf_counter()
        a @ b
        return time.perf_counter() - t

    return run


def nll(params, cfg: ModelConfig, tokens):
    """Mean next-token NLL over tokens[:, 1:] (sft_loss with every token in the mask)."""
    return -jnp.mean(token_logprobs(params, cfg, tokens)[:, 1:])


def jax_step(cfg: ModelConfig, params: dict, tokens: np.ndarray):
    """Compiles our step on a copy of params and runs one warm-up step.

    Returns (run() -> seconds, compile seconds)."""
    optimizer = optax.adamw(1e-4, weight_decay=0.01)

    def step(params, opt_state, tokens):
        loss, grads = jax.value_and_grad(nll)(params, cfg, tokens)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params = jax.tree.map(jnp.copy, params)  # the step donates its own copy
    state = [params, optimizer.init(params)]
    tokens = jnp.asarray(tokens)
    t = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(*state, tokens).compile()
    compile_s = time.perf_counter() - t

    def run():
        t = time.perf_counter()
        params, opt_state, loss = compiled(*state, tokens)
        loss.block_until_ready()
        state[:] = [params, opt_state]
        if not np.isfinite(float(loss)):
            raise FloatingPointError(f"jax step loss is {float(loss)} for {cfg}")
        return time.perf_counter() - t

    run()
    return run, compile_s


def torch_step(cfg: ModelConfig, tokens: np.ndarray, threads: int):
    """The transformers peer; returns (run() -> seconds, setup seconds)."""
    import torch
    import transformers

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    hf = dict(hf_config_dict(cfg))
    model_type = hf.pop("model_type")
    for key in ("architectures", "torch_dtype"):
        hf.pop(key)
    hf_cfg = transformers.AutoConfig.for_model(model_type, **hf)
    t = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_config(hf_cfg, dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    ids = torch.as_tensor(tokens, dtype=torch.long)

    def run():
        t = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"transformers step loss is {loss.item()} for {cfg}")
        return time.perf_counter() - t

    run()
    return run, time.perf_counter() - t


def summarize(times: list[float], flops: float, tokens: int, roof: float) -> dict:
    mean, best = statistics.fmean(times), min(times)
    return {
        "step_s_mean": mean,
        "step_s_best": best,
        "step_s_median": statistics.median(times),
        "step_s_all": times,
        "tokens_per_s_mean": tokens / mean,
        "tokens_per_s_best": tokens / best,
        "gflops_mean": flops / mean / 1e9,
        "gflops_best": flops / best / 1e9,
        "mfu_vs_matmul_best": flops / best / roof,
    }


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.machine()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bench(bc: BenchConfig) -> dict:
    load_start = os.getloadavg()
    models = {
        "default": (default_model_config(), bc.default_shape),
        "qwen2_50m": (ModelConfig(**bc.qwen2), bc.qwen2_shape),
    }
    rng = np.random.default_rng(0)
    candidates, setup, info = {}, {}, {}
    candidates["matmul/jax"] = jax_matmul(bc.matmul_n)
    if bc.torch_peer:
        candidates["matmul/torch"] = torch_matmul(bc.matmul_n)
    for name, (cfg, (B, T)) in models.items():
        tokens = rng.integers(0, cfg.vocab_size, (B, T), dtype=np.int32)
        params = init_params(cfg, jax.random.key(0))  # variants change no param shape or dtype
        seen = {}
        for v in bc.variants:
            vcfg = cfg.replace(**VARIANTS[v](cfg, T))
            if vcfg in seen:  # e.g. one_logits_chunk when the configured chunk covers T
                continue
            seen[vcfg] = v
            key = f"{name}/jax/{v}"
            log(f"compiling {key}")
            candidates[key], setup[key] = jax_step(vcfg, params, tokens)
        info[name] = (cfg, B, T, list(seen.values()))
        if bc.torch_peer:
            key = f"{name}/transformers"
            log(f"building {key}")
            candidates[key], setup[key] = torch_step(cfg, tokens, bc.threads)
        del params

    times = {k: [] for k in candidates}
    for r in range(bc.rounds):
        for key, run in candidates.items():
            times[key].append(run())
        log(f"round {r + 1}/{bc.rounds} load {os.getloadavg()[0]:.2f}")

    roof = 2 * bc.matmul_n**3 / min(times["matmul/jax"])
    out = {
        "machine": {
            "cpus": os.cpu_count(),
            "processor": cpu_model(),
            "load_avg_1m_start": load_start[0],
            "load_avg_1m_end": os.getloadavg()[0],
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "torch_threads": bc.threads,
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
        },
        "flop_formula": FLOP_FORMULA,
        "rounds": bc.rounds,
        "matmul": {
            "n": bc.matmul_n,
            "jax_gflops_best": roof / 1e9,
            "jax_gflops_mean": 2 * bc.matmul_n**3 / statistics.fmean(times["matmul/jax"]) / 1e9,
        },
        "models": {},
    }
    if bc.torch_peer:
        out["matmul"]["torch_gflops_best"] = 2 * bc.matmul_n**3 / min(times["matmul/torch"]) / 1e9
    for name, (cfg, B, T, variants) in info.items():
        flops = step_flops(cfg, B, T)
        entry = {"params": cfg.num_params, "batch": B, "seq_len": T, "flops_per_step": flops}
        entry["config"] = {k: v for k, v in dataclasses.asdict(cfg).items() if v is not None}
        jx = {}
        for v in variants:
            key = f"{name}/jax/{v}"
            jx[v] = {"compile_s": setup[key], **summarize(times[key], flops, B * T, roof)}
        fastest = max(jx, key=lambda v: jx[v]["tokens_per_s_best"])
        entry["jax"] = jx
        entry["jax_fastest_variant"] = fastest
        entry["jax_mfu_vs_matmul"] = jx[fastest]["mfu_vs_matmul_best"]
        if bc.torch_peer:
            key = f"{name}/transformers"
            peer = {"setup_s": setup[key], **summarize(times[key], flops, B * T, roof)}
            entry["transformers"] = peer
            entry["speedup_vs_transformers"] = (
                jx[fastest]["tokens_per_s_best"] / peer["tokens_per_s_best"]
            )
        out["models"][name] = entry
    if bc.rl_overrides is not None:
        from experiments.bench_rl_update import bench_rl_update

        log("RL update at the main job's shapes")
        out["rl_update"] = bench_rl_update(bc.rounds, bc.rl_iterations, bc.rl_overrides)
    out["machine"]["load_avg"] = list(os.getloadavg())  # 1, 5, 15 min, at the end
    big = out["models"]["qwen2_50m"]
    out["targets"] = {"qwen2_50m_mfu_ge_0.5": big["jax_mfu_vs_matmul"] >= 0.5}
    if bc.torch_peer:
        out["targets"]["qwen2_50m_beats_transformers"] = big["speedup_vs_transformers"] > 1.0
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--rounds", type=int, help="timed steps per candidate")
    parser.add_argument("--variants", help=f"comma-separated subset of {','.join(VARIANTS)}")
    parser.add_argument("--no-torch", action="store_true", help="skip the transformers peer")
    parser.add_argument("--no-rl", action="store_true", help="skip the RL update")
    args = parser.parse_args(argv)
    bc = BenchConfig.tiny() if args.tiny else BenchConfig()
    if args.rounds:
        bc.rounds = args.rounds
    if args.variants:
        bad = sorted(set(args.variants.split(",")) - set(VARIANTS))
        if bad:
            raise SystemExit(f"--variants: unknown {bad}; choose from {sorted(VARIANTS)}")
        bc.variants = tuple(args.variants.split(","))
    bc.torch_peer = not args.no_torch
    if args.no_rl:
        bc.rl_overrides = None
    print(json.dumps(bench(bc)), flush=True)


if __name__ == "__main__":
    main()
