"""The in-process RL rollout driver: continuous batching, K samples per prompt, partial rollouts.

`collect` samples K responses per request on a `RolloutEngine`. A slot that finishes (eos,
length limit, repeat) or exhausts its per-call token budget is refilled from the queue at
the next host sync (every `steps_per_sync` decode steps). With `cfg.share_prefix` the K
samples of a request share one prefill of the prompt (its KV is inserted into K slots), also
when continued (see refill.py).

Partial rollouts (report sec. 2.6.2, `cfg.partial`): each trajectory decodes at most
`cfg.budget_tokens` tokens per call. Only complete groups (all K samples finished) are
returned; a group with an unfinished sample goes, with its finished siblings, to the
buffer, and its unfinished samples continue in the next call (the prompt's prefix, then the
partial response, are prefilled under the current params; then decoding goes on). Each
token records the iteration that produced it.
Buffered groups are returned before new ones, oldest first.

Rollouts have fixed shapes so the trainer compiles once: T = max_prompt_len +
max_new_tokens, and N = K * (number of groups rounded up to a multiple of pad_groups_to),
padding groups having group -1 and an all-zero mask.
"""

import collections
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from k15_jax.rollout.buffer import RolloutBuffer, Trajectory
from k15_jax.rollout.refill import refill
from k15_jax.rollout.requests import check_buffer, check_collect_cfg, check_images, parse_requests
from k15_jax.rollout.sampling import trajectory_keys
from k15_jax.rollout.types import (
    FINISH_BUDGET,
    FINISH_EOS,
    FINISH_LENGTH,
    FINISH_NONE,
    FINISH_REPEAT,
    RolloutConfig,
    Rollouts,
)


def _copy(t: Trajectory) -> Trajectory:
    return dataclasses.replace(
        t, response=list(t.response), logp=list(t.logp), version=list(t.version)
    )


@dataclasses.dataclass
class _Counters:
    decode_steps: int = 0
    syncs: int = 0
    prefill_calls: int = 0
    prefill_seqs: int = 0
    prefill_tokens: int = 0
    tokens: int = 0
    continued: int = 0
    extend_calls: int = 0
    extend_tokens: int = 0
    budget_stops: int = 0


def _decode_all(engine, queue, slot_traj, budget, iteration, counters, share, images=None):
    """Runs the continuous-batching loop until the queue and all slots are empty."""
    state = engine.init_decode_state()
    prefixes: dict = {}
    n = engine.cfg.steps_per_sync
    while queue or any(t is not None for t in slot_traj):
        if queue and any(t is None for t in slot_traj):
            state = refill(
                engine, state, queue, slot_traj, budget, counters, prefixes, share, images
            )
        longest = max(len(t.prompt) + len(t.response) for t in slot_traj if t is not None)
        state, out = engine.generate(engine.params, state, n, max_context=longest + n)
        out = jax.device_get(out)
        if int(out.steps) == 0:
            raise RuntimeError("decode made no progress with occupied slots; this is a bug")
        counters.decode_steps += int(out.steps)
        counters.syncs += 1
        for s, t in enumerate(slot_traj):
            if t is None:
                continue
            v = out.valid[:, s]
            toks = out.tokens[v, s]
            t.response.extend(int(x) for x in toks)
            t.logp.extend(float(x) for x in out.logp[v, s])
            t.version.extend([iteration] * len(toks))
            counters.tokens += len(toks)
            fin = int(out.finish[s])
            if fin != FINISH_NONE:
                slot_traj[s] = None
                if fin == FINISH_BUDGET:
                    counters.budget_stops += 1
                else:
                    t.finish = fin


def _to_rollouts(groups, k: int, cfg: RolloutConfig, pad_id: int, pad_groups_to: int):
    n_groups = len(groups)
    n_pad = -(-n_groups // pad_groups_to) * pad_groups_to if pad_groups_to > 1 else n_groups
    N, T = n_pad * k, cfg.max_prompt_len + cfg.max_new_tokens
    tokens = np.full((N, T), pad_id, np.int32)
    mask = np.zeros((N, T), np.float32)
    logp = np.zeros((N, T), np.float32)
    version = np.full((N, T), -1, np.int32)
    prompt_len = np.zeros((N,), np.int32)
    length = np.zeros((N,), np.int32)
    group = np.full((N,), -1, np.int32)
    finish = np.full((N,), -1, np.int32)
    for g, trajs in enumerate(groups):
        for j, t in enumerate(sorted(trajs, key=lambda t: t.sample)):
            i, p, r = g * k + j, len(t.prompt), len(t.response)
            tokens[i, :p] = t.prompt
            tokens[i, p : p + r] = t.response
            mask[i, p : p + r] = 1.0
            logp[i, p : p + r] = t.logp
            version[i, p : p + r] = t.version
            prompt_len[i], length[i], group[i], finish[i] = p, r, g, t.finish
    arrays = (tokens, prompt_len, mask, logp, version, group, finish, length)
    return Rollouts(*(jnp.asarray(a) for a in arrays))


def _stats(counters, complete, new_buffer, n_queued: int, elapsed: float, engine) -> dict:
    """collect's flat dict of float statistics."""
    returned = [t for g in complete for t in g]
    fin = np.array([t.finish for t in returned], np.int64)
    lengths = np.array([len(t.response) for t in returned], np.float64)
    slot_steps = max(counters.decode_steps * engine.cfg.slots, 1)
    return {
        "time_s": elapsed,
        "tokens_generated": float(counters.tokens),
        "tokens_per_s": counters.tokens / max(elapsed, 1e-9),
        "decode_steps": float(counters.decode_steps),
        "host_syncs": float(counters.syncs),
        "slot_utilisation": counters.tokens / slot_steps,
        "prefill_calls": float(counters.prefill_calls),
        "prefill_seqs": float(counters.prefill_seqs),
        "prefill_tokens": float(counters.prefill_tokens),
        "extend_calls": float(counters.extend_calls),
        "extend_tokens": float(counters.extend_tokens),
        "trajectories_decoded": float(n_queued),
        "trajectories_continued": float(counters.continued),
        "budget_stops": float(counters.budget_stops),
        "groups_returned": float(len(complete)),
        "sequences_returned": float(len(returned)),
        "finish_eos": float(np.sum(fin == FINISH_EOS)),
        "finish_length": float(np.sum(fin == FINISH_LENGTH)),
        "finish_repeat": float(np.sum(fin == FINISH_REPEAT)),
        "repeat_rate": float(np.mean(fin == FINISH_REPEAT)) if fin.size else 0.0,
        "mean_response_length": float(lengths.mean()) if lengths.size else 0.0,
        "max_response_length": float(lengths.max()) if lengths.size else 0.0,
        "buffer_groups": float(new_buffer.num_groups),
        "buffer_trajectories": float(new_buffer.num_trajectories),
        "buffer_unfinished": float(new_buffer.num_unfinished),
    }


def collect(
    engine,
    requests,
    *,
    k: int,
    cfg: RolloutConfig | None = None,
    iteration: int,
    key,
    buffer: RolloutBuffer | None = None,
    pad_groups_to: int = 1,
    images: dict | None = None,
):
    """Samples K responses per request (plus the buffered groups' remaining tokens).

    requests: list of (request_id: str, prompt_tokens: list[int]) or, with a per-request
      response limit <= cfg.max_new_tokens, (request_id, prompt_tokens, max_new_tokens).
      Ids must be unique, also against the ids waiting in `buffer`.
    k: samples per request (buffered groups keep the K they were created with; use one K
      per run so that Rollouts reshape to [B, K, T]).
    cfg: rollout options (default engine.cfg); only partial, budget_tokens,
      steps_per_sync and share_prefix may differ from the engine's.
    iteration: the policy version written into Rollouts.version for this call's tokens.
    key: PRNG key of this call; each new trajectory's key is derived from (key, request
      id, sample index), so samples do not depend on slots or batching.
    buffer: the partial-rollout buffer returned by the previous call (None = empty).
    pad_groups_to: round the number of returned groups up to a multiple of this with
      all-masked padding groups (bucket batch sizes so the trainer compiles once).
    images (model.vision): request id -> image patches [m, Np, C] of that prompt, which
      holds m * Np image placeholder tokens; requests not in it are text-only. Buffered
      requests need their entry again. The image prefix is computed once per prompt.

    Returns (rollouts, group_ids, new_buffer, stats): group_ids[g] is the request id of
    group g; stats is a flat dict of floats. Without cfg.partial every trajectory runs
    to its end and all groups are returned (new_buffer is empty).
    """
    t0 = time.perf_counter()
    cfg = engine.cfg if cfg is None else cfg
    check_collect_cfg(engine, cfg)
    if engine.params is None:
        raise ValueError("engine has no params; call handover(engine, params) first")
    if k < 1:
        raise ValueError(f"collect: k={k} samples per request must be >= 1")
    if pad_groups_to < 1:
        raise ValueError(f"collect: pad_groups_to={pad_groups_to} must be >= 1")
    buffer = RolloutBuffer() if buffer is None else buffer
    check_buffer(buffer, k, cfg)
    parsed = parse_requests(requests, cfg, engine.model_cfg.vocab_size, set(buffer.request_ids))
    if images is not None:
        check_images(parsed, buffer, images, engine.model_cfg)

    groups = [[_copy(t) for t in g] for g in buffer.groups]
    ids = [rid for rid, _, _ in parsed for _ in range(k)]
    samples = [j for _ in parsed for j in range(k)]
    keys = trajectory_keys(key, ids, samples)
    for i, (rid, prompt, max_new) in enumerate(parsed):
        groups.append([Trajectory(rid, j, prompt, keys[i * k + j], max_new) for j in range(k)])
    total = sum(len(g) for g in groups)

    queue = collections.deque(t for g in groups for t in g if not t.done)
    budget = cfg.budget_tokens if cfg.partial else cfg.max_new_tokens
    counters = _Counters()
    slot_traj = [None] * engine.cfg.slots
    n_queued = len(queue)
    _decode_all(engine, queue, slot_traj, budget, iteration, counters, cfg.share_prefix, images)

    complete = [g for g in groups if all(t.done for t in g)]
    waiting = tuple(tuple(g) for g in groups if not all(t.done for t in g))
    if sum(map(len, complete)) + sum(map(len, waiting)) != total:
        raise RuntimeError("collect lost a trajectory; this is a bug in k15_jax.rollout")
    rollouts = _to_rollouts(complete, k, cfg, engine.pad_id, pad_groups_to)
    new_buffer = RolloutBuffer(waiting)

    stats = _stats(counters, complete, new_buffer, n_queued, time.perf_counter() - t0, engine)
    return rollouts, [g[0].request_id for g in complete], new_buffer, stats
