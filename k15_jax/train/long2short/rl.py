"""long2short RL (report sec. 2.4): a second RL phase from a chosen checkpoint, with the
length penalty on from the first iteration and a much smaller maximum rollout length.

It is the main job's RL iteration (`train.iteration.rl_iteration`) run under a derived
config; the policy is evaluated with the main job's evaluation settings afterwards.
"""

import dataclasses

from omegaconf import OmegaConf

from k15_jax.rl import samplers
from k15_jax.train.iteration import make_fns, rl_iteration
from k15_jax.train.metrics import progress
from k15_jax.train.state import RunState


def phase_config(cfg):
    """The main job's config with the long2short RL overrides (cfg.long2short.rl)."""
    c = cfg.long2short.rl
    out = OmegaConf.merge(
        cfg,
        {
            "reward": {
                "length_penalty_weight": c.length_penalty_weight,
                "length_penalty_warmup": 0,
            },
            "rollout": {"max_new_tokens": c.max_new_tokens, "partial": False},
            "sampler": {"name": c.sampler},
            "trainer": {"iterations": c.iterations},
        },
    )
    return out


def long2short_rl(setup, params, writer=None, phase: str = "l2s/rl"):
    """cfg.long2short.rl.iterations RL iterations from `params`. Returns (params, stats):
    stats hold the phase's config (`reward`, `max_new_tokens`) and the last metrics."""
    cfg = phase_config(setup.cfg)
    s = dataclasses.replace(setup, cfg=cfg)
    engine, fns = s.engine(params), make_fns(s)
    state = RunState(phase="rl", sampler=samplers.init_state(len(s.pool)))
    bar = progress(cfg.trainer.iterations, phase)
    m = {}
    while state.iteration < cfg.trainer.iterations:
        params, engine, m = rl_iteration(s, engine, params, state, fns)
        if writer is not None:
            writer.write(
                {
                    "phase": phase,
                    "iteration": state.iteration,
                    **{f"{phase}/{k}": v for k, v in m.items()},
                },
                state.iteration,
            )
        bar.update(1)
        bar.set_postfix(
            reward=f"{m['train/reward_mean']:.2f}", len=f"{m['train/response_len']:.1f}"
        )
        state.iteration += 1
    bar.close()
    stats = {
        "reward": OmegaConf.to_container(cfg.reward),
        "max_new_tokens": int(engine.cfg.max_new_tokens),
        "last": {k: v for k, v in m.items() if k.startswith(("train/", "reward/"))},
    }
    return params, stats
