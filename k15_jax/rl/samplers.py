"""Prompt samplers for RL iterations (report sec. 2.3.4): uniform, curriculum, prioritized.

Host-side numpy: a sampler draws indices into a fixed prompt pool from its state, the
per-prompt attempt and success counts (part of the run checkpoint). Each sampler is a
function `draw(state, bands, n, rng, cfg, iteration) -> indices [n]`, selected by name from
SAMPLERS; `update` records the outcome of a batch.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass
class SamplerConfig:
    """name: uniform | curriculum | prioritized.

    curriculum (`mode`, a key of CURRICULUM_MODES):
      `mode="warmup_then_hard"` samples the whole pool for `warmup_iterations`, then draws
      round(easy_fraction * n) prompts of each batch from the whole pool and the rest from
      `hard_bands`:
        easy_fraction=0.0  hard only after warm-up: the report's curriculum (sec. 2.3.4,
                           "... then train solely on hard problems"; Fig. 9);
        easy_fraction>0    mixed (not in the report): that share stays on the whole pool so
                           easier bands are not forgotten (0.25 by default; the exp presets
                           use 0.5).
      `mode="staged"` opens the bands easy to hard, one more every `stage_iterations`.
    prioritized: p_i proportional to max(1 - s_i, floor), s_i the success rate of prompt i.
    oversample: draw oversample x batch_prompts prompts and train on batch_prompts groups,
    mixed rewards first (DAPO's dynamic sampling, one round: k15_jax/rl/filters.py); 1 = off.
    """

    name: str = "curriculum"
    batch_prompts: int = 32
    samples_per_prompt: int = 8
    mode: str = "warmup_then_hard"
    warmup_iterations: int = 5
    hard_bands: list[str] = dataclasses.field(default_factory=list)  # [] = the last band
    easy_fraction: float = 0.25
    stage_iterations: int = 10
    floor: float = 0.05
    oversample: float = 1.0


def init_state(pool_size: int) -> dict:
    return {
        "attempts": np.zeros(pool_size, np.int64),
        "successes": np.zeros(pool_size, np.int64),
    }


def success_rate(state: dict) -> np.ndarray:
    return state["successes"] / np.maximum(state["attempts"], 1)


def update(state: dict, indices: np.ndarray, correct: np.ndarray) -> dict:
    """correct: [n, K] in {0, 1} for the prompts at `indices` -> new state."""
    attempts, successes = state["attempts"].copy(), state["successes"].copy()
    np.add.at(attempts, indices, correct.shape[1])
    np.add.at(successes, indices, correct.sum(axis=1).astype(np.int64))
    return {"attempts": attempts, "successes": successes}


def _choose(rng, candidates: np.ndarray, n: int, p=None, base=None) -> np.ndarray:
    """n of `candidates`, with probabilities p (or uniform), times the pool's base measure
    (mixed sources' weights) when it has one. Without `base` the draws are those of a
    plain uniform / p-weighted choice, so runs without source weights are unchanged."""
    if len(candidates) == 0:
        raise ValueError("the sampler has no prompts to draw from; check sampler.hard_bands")
    if base is not None:
        w = np.asarray(base, np.float64)[candidates] * (1.0 if p is None else p)
        p = w / w.sum()
    replace = n > len(candidates)
    return rng.choice(candidates, size=n, replace=replace, p=p)


def uniform(state, bands, n, rng, cfg, iteration, base=None):
    return _choose(rng, np.arange(len(bands)), n, base=base)


def _hard_set(bands: np.ndarray, cfg: SamplerConfig) -> list[str]:
    order = list(dict.fromkeys(bands.tolist()))
    hard = list(cfg.hard_bands) or order[-1:]
    unknown = sorted(set(hard) - set(order))
    if unknown:
        raise ValueError(f"sampler.hard_bands {unknown} are not bands of the pool {order}")
    return hard


def _warmup_then_hard(bands, n, rng, cfg, iteration, base):
    """Whole pool during warm-up; then round(easy_fraction * n) from the whole pool and the
    rest from the hard bands (easy_fraction=0: hard only, the report's sec. 2.3.4)."""
    everything = np.arange(len(bands))
    if iteration < cfg.warmup_iterations:
        return _choose(rng, everything, n, base=base)
    n_easy = int(round(cfg.easy_fraction * n))
    hard = np.flatnonzero(np.isin(bands, _hard_set(bands, cfg)))
    easy = _choose(rng, everything, n_easy, base=base)
    return np.concatenate([easy, _choose(rng, hard, n - n_easy, base=base)])


def _staged(bands, n, rng, cfg, iteration, base):
    """Bands open easy to hard (pool order), one more every stage_iterations."""
    order = list(dict.fromkeys(bands.tolist()))
    open_bands = order[: 1 + iteration // max(cfg.stage_iterations, 1)]
    return _choose(rng, np.flatnonzero(np.isin(bands, open_bands)), n, base=base)


# sampler.mode of the curriculum sampler -> fn(bands, n, rng, cfg, iteration, base).
CURRICULUM_MODES = {"warmup_then_hard": _warmup_then_hard, "staged": _staged}


def curriculum(state, bands, n, rng, cfg, iteration, base=None):
    if cfg.mode not in CURRICULUM_MODES:
        raise ValueError(f"sampler.mode={cfg.mode!r}; choose one of {sorted(CURRICULUM_MODES)}")
    return CURRICULUM_MODES[cfg.mode](np.asarray(bands), n, rng, cfg, iteration, base)


def prioritized(state, bands, n, rng, cfg, iteration, base=None):
    weight = np.maximum(1.0 - success_rate(state), cfg.floor)
    return _choose(rng, np.arange(len(bands)), n, p=weight / weight.sum(), base=base)


SAMPLERS = {"uniform": uniform, "curriculum": curriculum, "prioritized": prioritized}


def draw(state, bands, n, rng, cfg: SamplerConfig, iteration: int, base=None) -> np.ndarray:
    """Indices [n] into the pool (whose band labels are `bands`) for this iteration.
    base: per-prompt weights of mixed sources (weight / source size), or None."""
    if cfg.name not in SAMPLERS:
        raise ValueError(f"sampler.name={cfg.name!r}; choose one of {sorted(SAMPLERS)}")
    return np.asarray(SAMPLERS[cfg.name](state, bands, n, rng, cfg, iteration, base), np.int64)
