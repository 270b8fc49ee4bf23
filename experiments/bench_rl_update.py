"""The RL update as the main job runs it, timed by part (`bench_train` reports it).

Shapes of configs/config.yaml (+exp=curriculum): sampler.batch_prompts x samples_per_prompt
rows (16 x 8) of rollout.max_prompt_len + max_new_tokens tokens (16 + 176), the 0.4M model,
algo.updates_per_iteration M = 4. The rollouts are synthetic (random tokens, mixed rewards,
every response token counted): the update's cost depends on the shapes only.

    iteration_s     `train.iteration.update`, host side included: the fused program
                    (train/rl_fused.py) and, as "plain", the two-program form before it
    breakdown       the plain form's parts, each its own jitted program: the reference pass,
                    the off-policy weights, and per step the forward, the backward (forward +
                    backward less the forward) and the optimizer
    compiles        XLA compilations of each iteration (the first compiles, later ones must not)
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import OmegaConf

from k15_jax.model.logprobs import token_logprobs
from k15_jax.rollout.buffer import RolloutBuffer
from k15_jax.rollout.types import Rollouts
from k15_jax.train import iteration, rl_step
from k15_jax.train.compiles import count_compiles
from k15_jax.train.setup import initial_params

ROOT = Path(__file__).resolve().parents[1]
MAIN_JOB = ["+exp=curriculum"]


def main_job_setup(run_dir, *overrides):
    """The main job's Setup (configs/config.yaml + overrides) in run_dir."""
    from hydra import compose, initialize_config_dir

    from k15_jax.config import register
    from k15_jax.train.setup import build

    register()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        cfg = compose("config", overrides=[*MAIN_JOB, f"trainer.run_dir={run_dir}", *overrides])
    return build(cfg)


def fake_collected(s, it: int, seed: int = 0):
    """(Collected, Scores) of a full batch at iteration `it`: B groups of K rows [N, T],
    random responses of random length sampled at `it`, rewards 0/1 mixed in every group."""
    c = s.cfg
    B, K = c.sampler.batch_prompts, c.sampler.samples_per_prompt
    P, T = c.rollout.max_prompt_len, c.rollout.max_prompt_len + c.rollout.max_new_tokens
    rng = np.random.default_rng([seed, it])
    N = B * K
    length = rng.integers(1, T - P + 1, N).astype(np.int32)
    resp = (np.arange(T) >= P) & (np.arange(T) < P + length[:, None])
    rollouts = Rollouts(
        tokens=rng.integers(0, s.model.vocab_size, (N, T)).astype(np.int32),
        prompt_len=np.full(N, P, np.int32),
        response_mask=resp.astype(np.float32),
        logp=np.where(resp, -rng.uniform(0.1, 4.0, (N, T)), 0).astype(np.float32),
        version=np.where(resp, it, -1).astype(np.int32),
        group=np.repeat(np.arange(B, dtype=np.int32), K),
        finish=np.zeros(N, np.int32),
        length=length,
    )
    rewards = np.tile(np.arange(K) % 2, (B, 1)).astype(np.float32)
    tasks = [s.pool[i % len(s.pool)] for i in range(B)]
    collected = iteration.Collected(rollouts, tasks, np.arange(B), RolloutBuffer(), {})
    return collected, iteration.Scores(rewards, rewards > 0, rewards, {})


def _timed(fn, *args):
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t


def _iteration_times(s, params, fns, iterations: int) -> tuple[list, list]:
    """Seconds and compilations of `iteration.update` for iterations 0..iterations-1."""
    secs, compiles = [], []
    for it in range(iterations):
        c, sc = fake_collected(s, it)
        with count_compiles() as n:
            (_, metrics, _), dt = _timed(iteration.update, s, params, c, sc, fns, it)
        if "train/loss" not in metrics:
            raise RuntimeError(f"the update took no step at iteration {it}: {metrics}")
        secs.append(dt)
        compiles.append(n[0])
    return secs, compiles


def _pieces(s):
    """Jitted parts of one plain step: forward (loss), forward+backward, optimizer."""
    algo = OmegaConf.to_object(s.cfg.algo)
    loss_of_logp = rl_step.make_loss_of_logp(algo)
    vg = rl_step.make_value_and_grad(s.model, algo)
    optimizer = rl_step.make_optimizer(algo)

    forward = jax.jit(
        lambda p, tok, ref, r, m: loss_of_logp(token_logprobs(p, s.model, tok), ref, r, m)
    )
    both = jax.jit(lambda p, tok, ref, r, m: vg(p, tok, ref, r, m, None))
    opt = jax.jit(lambda p, o, loss, m, g: rl_step.apply_step(optimizer, p, o, loss, m, g))
    return forward, both, opt, optimizer


def breakdown(s, params0, fns, rounds: int) -> dict:
    """Best seconds of each part of the plain form over `rounds` repeats (see the module doc)."""
    c, sc = fake_collected(s, 0)
    ro, M = c.rollouts, s.cfg.algo.updates_per_iteration
    tok, logp, version = (jnp.asarray(x) for x in (ro.tokens, ro.logp, ro.version))
    rewards = jnp.asarray(sc.padded)
    mask = jnp.asarray(rl_step.loss_mask(ro.response_mask, sc.padded, s.cfg.algo))
    forward, both, opt, optimizer = _pieces(s)
    parts: dict[str, list] = {}
    for r in range(rounds + 1):  # round 0 compiles
        add = (lambda k, v: parts.setdefault(k, []).append(v)) if r else (lambda k, v: None)
        ref, dt = _timed(fns.reference_logprobs, params0, tok, None)
        add("reference_pass", dt)
        (w, _), dt = _timed(fns.weights, mask, ref, logp, version, 0)
        add("weights", dt)
        params, opt_state = params0, optimizer.init(params0)
        for k in range(M):
            _, t_fwd = _timed(forward, params, tok, ref, rewards, w)
            ((loss, m), g), t_both = _timed(both, params, tok, ref, rewards, w)
            (params, opt_state, _), t_opt = _timed(opt, params, opt_state, loss, m, g)
            add(f"update{k}/forward", t_fwd)
            add(f"update{k}/backward", max(t_both - t_fwd, 0.0))
            add(f"update{k}/optimizer", t_opt)
    best = {k: min(v) for k, v in parts.items()}
    total = sum(best.values())
    return {"best_s": best, "share": {k: v / total for k, v in best.items()}, "sum_s": total}


def bench_rl_update(rounds: int = 3, iterations: int = 4, overrides=()) -> dict:
    """The RL-update section of bench_train's JSON (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        s = main_job_setup(tmp, *overrides)
    params = initial_params(s)  # on the run's mesh, as the main job's
    fused_fns = iteration.make_fns(s)
    plain_fns = dataclasses.replace(fused_fns, fused=None)
    out = {
        "rows": s.cfg.sampler.batch_prompts * s.cfg.sampler.samples_per_prompt,
        "seq_len": s.cfg.rollout.max_prompt_len + s.cfg.rollout.max_new_tokens,
        "updates_per_iteration": s.cfg.algo.updates_per_iteration,
        "params": s.model.num_params,
    }
    for name, fns in (("fused", fused_fns), ("plain", plain_fns)):
        secs, compiles = _iteration_times(s, params, fns, iterations)
        out[name] = {
            "iteration_s_all": secs,
            "iteration_s_best_after_first": min(secs[1:]),
            "iteration_s_median_after_first": statistics.median(secs[1:]),
            "compiles_per_iteration": compiles,
            "recompiles_after_first": sum(compiles[1:]),
        }
    out["plain_breakdown"] = breakdown(s, params, plain_fns, rounds)
    return out
