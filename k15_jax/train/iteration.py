"""One RL iteration as the report's sec. 2.6.1 describes it, in five calls:

    batch    = draw(s, state)                        sample prompts (curriculum / prioritized)
    rollouts = collect(s, engine, batch, state, fns) K responses each; partial rollouts resume
    scores   = score(s, rollouts, fns, it)           verifier + length and repeat penalties
    params   = update(s, params, rollouts, scores)   M optimizer steps, fresh optimizer state
    engine   = handover(engine, params)              train -> rollout reshard, in memory

`rl_iteration` runs them and returns (params, engine, metrics); the sampler counts and the
partial-rollout buffer in `state` advance. Letters: B groups (incl. padding), K samples,
N = B*K rows, T tokens.
"""

import dataclasses
import math
import time
from collections.abc import Callable

import jax
import numpy as np
import optax
from omegaconf import OmegaConf

from k15_jax import distributed
from k15_jax.rewards.routing import route_by_kind
from k15_jax.rewards.score import make_verifier
from k15_jax.rewards.score import score as score_texts
from k15_jax.rl import samplers
from k15_jax.rollout import driver
from k15_jax.rollout.buffer import RolloutBuffer
from k15_jax.rollout.handover import handover
from k15_jax.rollout.texts import response_texts
from k15_jax.rollout.types import FINISH_REPEAT, RolloutConfig, Rollouts
from k15_jax.train import rl_fused, rl_step
from k15_jax.train.setup import Setup
from k15_jax.train.state import RunState


@dataclasses.dataclass(frozen=True)
class UpdateFns:
    """The compiled pieces an iteration calls, built once per run (`make_fns`)."""

    update: Callable  # rl_step.make_update: (params, opt_state, tokens, ref, r, mask, img)
    fused: Callable | None  # rl_fused.make_fused_update (None: algo.microbatches > 1)
    weights: Callable  # rl_step.make_weights: algo.off_policy on the loss mask
    optimizer: optax.GradientTransformation  # fresh state every iteration (sec. 2.3.2)
    reference_logprobs: Callable  # (params, tokens, img) -> log pi_theta_i [N, T]
    verifier: Callable  # reward.kind: rule verifier or a reward model
    rollout_cfg: RolloutConfig


def make_fns(s: Setup) -> UpdateFns:
    algo = OmegaConf.to_object(s.cfg.algo)
    update, optimizer = rl_step.make_update(s.model, algo)
    fused = rl_fused.make_fused_update(s.model, algo) if rl_fused.supported(algo) else None
    return UpdateFns(
        update=update,
        fused=fused,
        weights=rl_step.make_weights(algo),
        optimizer=optimizer,
        reference_logprobs=rl_step.make_reference_logprobs(s.model),
        verifier=make_verifier(s.cfg.reward, s.mesh),
        rollout_cfg=OmegaConf.to_object(s.cfg.rollout),
    )


@dataclasses.dataclass(frozen=True)
class Batch:
    """This iteration's prompts: pool rows and the driver's requests (id, prompt ids)."""

    rows: np.ndarray  # [B_new] pool row of each new request
    requests: list  # [(request id, prompt ids)]


@dataclasses.dataclass(frozen=True)
class Collected:
    """The groups finished this iteration (padded to a multiple of sampler.batch_prompts)."""

    rollouts: Rollouts  # [N, T] arrays, rows of group g at g*K..g*K+K-1
    tasks: list  # [n_groups] task of each finished group
    rows: np.ndarray  # [n_groups] pool row of each finished group
    buffer: RolloutBuffer  # unfinished groups, carried to the next iteration
    stats: dict  # the driver's rollout/* figures

    @property
    def n_groups(self) -> int:
        return len(self.tasks)


@dataclasses.dataclass(frozen=True)
class Scores:
    rewards: np.ndarray  # [n_groups, K] verifier + penalties
    correct: np.ndarray  # [n_groups, K] verifier says correct
    padded: np.ndarray  # [B, K] rewards with zero rows for the padding groups
    stats: dict  # reward/* figures


def request_id(row: int, iteration: int, position: int) -> str:
    """A request's id. The driver derives each trajectory's PRNG key from it, so this form
    is kept for reproducible samples; the loop never parses it (state.requests maps ids to
    pool rows)."""
    return f"{row}:{iteration}:{position}"


def draw(s: Setup, state: RunState) -> Batch:
    """sampler.batch_prompts (x sampler.oversample) pool rows by the configured sampler
    (deterministic in seed, it)."""
    cfg, it = s.cfg, state.iteration
    rng = np.random.default_rng([cfg.trainer.seed, 2, it])
    bands = np.array([t.band for t in s.pool])
    base = getattr(s.prompts, "weights", None)  # mixed sources' weights (file runs)
    n = math.ceil(cfg.sampler.batch_prompts * cfg.sampler.oversample)
    rows = samplers.draw(state.sampler, bands, n, rng, cfg.sampler, it, base)
    requests = [
        (request_id(int(i), it, j), s.prompts.prompt_ids(s.pool[i])) for j, i in enumerate(rows)
    ]
    return Batch(rows=np.asarray(rows, np.int64), requests=requests)


def collect(s: Setup, engine, batch: Batch, state: RunState, fns: UpdateFns) -> Collected:
    """K responses per new prompt, plus the buffered groups' remaining tokens."""
    cfg, it = s.cfg, state.iteration
    state.requests.update({rid: int(r) for (rid, _), r in zip(batch.requests, batch.rows)})
    buffer = RolloutBuffer.from_state(state.buffer) if state.buffer else RolloutBuffer()
    waiting = [rid for rid, _ in batch.requests] + buffer.request_ids
    images = s.prompts.request_images({rid: s.pool[state.requests[rid]] for rid in waiting})
    rollouts, group_ids, buffer, stats = driver.collect(
        engine,
        batch.requests,
        k=cfg.sampler.samples_per_prompt,
        cfg=fns.rollout_cfg,
        iteration=it,
        key=jax.random.fold_in(jax.random.key(cfg.trainer.seed), it),
        buffer=buffer,
        pad_groups_to=cfg.sampler.batch_prompts,
        images=images,
    )
    rows = np.array([state.requests[g] for g in group_ids], np.int64)
    # only the buffered requests need their pool row in later iterations
    state.requests = {rid: state.requests[rid] for rid in buffer.request_ids}
    tasks = [s.pool[r] for r in rows]
    return Collected(rollouts, tasks, rows, buffer, stats)


def score(s: Setup, c: Collected, fns: UpdateFns, iteration: int) -> Scores:
    """Rewards of the finished groups: verifier (reward.kind) + length and repeat penalties."""
    K, n = s.cfg.sampler.samples_per_prompt, c.n_groups
    texts = response_texts(c.rollouts, range(n * K), s.tokenizer, s.template)
    length = np.asarray(c.rollouts.length)[: n * K].reshape(n, K)
    finish = np.asarray(c.rollouts.finish)[: n * K].reshape(n, K)
    rows = [t for t in c.tasks for _ in range(K)]
    rewards, correct, stats = score_texts(
        texts,
        [t.reference for t in rows],
        length,
        finish == FINISH_REPEAT,
        s.cfg.reward,
        iteration,
        questions=[t.prompt for t in rows],
        verifier=route_by_kind(fns.verifier, getattr(s.prompts, "code_scorer", None), rows),
    )
    padded = np.zeros((c.rollouts.tokens.shape[0] // K, K), np.float32)
    padded[:n] = rewards
    return Scores(rewards, correct, padded, stats)


def keep_groups(s: Setup, c: Collected, sc: Scores) -> tuple[Collected, Scores]:
    """DAPO's dynamic sampling (sampler.oversample > 1): of the finished groups, the
    sampler.batch_prompts the update sees, mixed rewards first (rl/filters.py)."""
    n, K = s.cfg.sampler.batch_prompts, s.cfg.sampler.samples_per_prompt
    if s.cfg.sampler.oversample <= 1 or not c.n_groups:
        return c, sc
    rollouts, keep = rl_step.keep_groups(c.rollouts, sc.rewards, n, K)
    padded = np.zeros((n, K), np.float32)
    padded[: len(keep)] = sc.rewards[keep]
    kept = dataclasses.replace(c, rollouts=rollouts, tasks=[c.tasks[g] for g in keep])
    return kept, Scores(sc.rewards[keep], sc.correct[keep], padded, sc.stats)


def update(s: Setup, params, c: Collected, sc: Scores, fns: UpdateFns, iteration: int):
    """M optimizer steps from pi_theta_i with a fresh optimizer state (report sec. 2.3.2).

    Returns (params, metrics, trainer log-probs [N, T] under pi_theta_i, on the host)."""
    K, n = s.cfg.sampler.samples_per_prompt, c.n_groups
    ro = c.rollouts
    glob = lambda x: distributed.global_batch(x, s.mesh)  # each process feeds its rows
    images = s.prompts.loss_images([t for t in c.tasks for _ in range(K)], ro.tokens.shape[0])
    images = None if images is None else glob(images)
    mask = rl_step.loss_mask(ro.response_mask, sc.padded, s.cfg.algo)
    mask[n * K :] = 0.0
    args = (glob(ro.tokens), glob(ro.logp), glob(ro.version), glob(sc.padded), glob(mask))
    if fns.fused is not None:  # one program, the reference pass shared (train/rl_fused.py)
        out = fns.fused(params, *args, iteration, images)
        new_params, trainer_ref, weight_stats, m = out
    else:
        new_params, trainer_ref, weight_stats, m = plain_update(
            params, args, images, fns, s, iteration
        )
    # one device-to-host read for all figures (each float() of a device scalar is a sync)
    weight_stats, m = jax.device_get((weight_stats, m))
    metrics = {k: float(v) for k, v in weight_stats.items()}
    if metrics["offpolicy/weight_mean"] > 0:
        params = new_params
        metrics.update({k: float(v) for k, v in m.items()})
        if not all(math.isfinite(v) for v in metrics.values()):
            raise FloatingPointError(
                f"non-finite loss or gradient at RL iteration {iteration}: {metrics}; the "
                "last good checkpoint is kept. Lower algo.lr or check the rewards."
            )
    return params, metrics, distributed.to_host(trainer_ref)


def plain_update(params, args: tuple, images, fns: UpdateFns, s: Setup, iteration: int):
    """The two-program form (algo.microbatches > 1): a reference pass, then
    `rl_step.make_update`'s M steps. Returns what `rl_fused.make_fused_update` returns."""
    tokens, rollout_logp, version, rewards, mask = args
    trainer_ref = fns.reference_logprobs(params, tokens, images)
    ref = trainer_ref if s.cfg.algo.trainer_ref_logp else rollout_logp
    # algo.off_policy: old segments excluded (k1.5), or TIS / masking by pi_theta_i / pi_rollout
    mask, weight_stats = fns.weights(mask, trainer_ref, rollout_logp, version, iteration)
    if float(weight_stats["offpolicy/weight_mean"]) <= 0:
        return params, trainer_ref, weight_stats, {}
    opt_state = distributed.replicate_scalars(fns.optimizer.init(params), s.mesh)
    params, _, m = fns.update(params, opt_state, tokens, ref, rewards, mask, images)
    return params, trainer_ref, weight_stats, m


def rl_iteration(s: Setup, engine, params, state: RunState, fns: UpdateFns):
    """One RL iteration. Returns (new params, engine, metrics); advances state's sampler
    counts, buffer and request map (not state.iteration)."""
    it, t0 = state.iteration, time.time()
    batch = draw(s, state)
    collected = collect(s, engine, batch, state, fns)
    t_roll = time.time()
    scores = score(s, collected, fns, it)
    t_score = time.time()
    state.sampler = samplers.update(state.sampler, collected.rows, scores.correct)
    state.buffer = collected.buffer.to_state()
    collected, scores = keep_groups(s, collected, scores)  # sampler.oversample > 1 only
    params, metrics, trainer_ref = update(s, params, collected, scores, fns, it)
    t_update = time.time()
    engine = handover(engine, params)
    t_end = time.time()
    times = {
        "time/rollout_s": t_roll - t0,
        "time/reward_s": t_score - t_roll,
        "time/update_s": t_update - t_score,
        "time/handover_s": t_end - t_update,
    }
    metrics.update(iteration_metrics(s, collected, scores, trainer_ref, times, it))
    metrics["time/iteration_s"] = time.time() - t0
    return params, engine, metrics


def iteration_metrics(
    s: Setup, c: Collected, sc: Scores, trainer_ref, times: dict, iteration: int
) -> dict:
    """The per-iteration figures of metrics.jsonl (rollout, reward, accuracy per band)."""
    K, n = s.cfg.sampler.samples_per_prompt, c.n_groups
    ro = c.rollouts
    rows = slice(0, n * K)
    valid = np.asarray(ro.response_mask)[rows] > 0
    version = np.asarray(ro.version)[rows]
    out = rl_step.logprob_gap(ro.logp[rows], trainer_ref[rows], valid, version, iteration)
    out.update(rl_step.group_stats(sc.rewards, sc.correct) if n else {})
    out.update(sc.stats)
    out.update({f"rollout/{k}": float(v) for k, v in c.stats.items()})
    length = np.asarray(ro.length)[: n * K]
    out.update(
        {
            "train/groups": float(n),
            "train/reward_mean": float(sc.rewards.mean()) if n else 0.0,
            "train/accuracy": float(sc.correct.mean()) if n else 0.0,
            "train/response_len": float(length.mean()) if n else 0.0,
            "train/response_len_p50": float(np.percentile(length, 50)) if n else 0.0,
            "train/response_len_p90": float(np.percentile(length, 90)) if n else 0.0,
            **times,
        }
    )
    for band in sorted({t.band for t in c.tasks}):
        sel = np.array([t.band == band for t in c.tasks])
        out[f"train/acc/{band}"] = float(sc.correct[sel].mean())
    out.update(s.prompts.train_metrics(c.tasks, sc.correct))
    return out
