"""Filling free decode slots (rollout/driver.py): prompt prefills, extensions, inserts.

Prefix sharing (`RolloutConfig.share_prefix`): the K samples of a request share one prefill
of its prompt, whose KV rows are copied into their K slots by `insert`. A continued
trajectory (partial rollouts) starts from the same shared prompt prefix and prefills only
its own partial response (`engine.extend`), so a group of K continued samples runs its
prompt through the model once instead of K times (docs/performance.md weighs this against
re-prefilling prompt + response per trajectory).

With share_prefix off every trajectory prefills its own copy of the prompt, through the
same two calls; only the row a slot reads from differs, so sampled tokens are the same
with and without sharing (tested).
"""

import collections

from k15_jax.rollout import repeat
from k15_jax.rollout.steps import prefill_chunks


def _prefill_prompts(engine, prompts: dict, counters, images) -> dict:
    """prompts: share key -> (request id, prompt). Returns share key -> (Prefix, row).

    One call per length bucket (a short prompt batched with a long one would be padded to
    it), split into power-of-four row counts (no padded rows)."""
    keys = list(prompts)
    by_len = collections.defaultdict(list)
    for key in keys:
        by_len[engine.prefill_bucket(len(prompts[key][1]))].append(key)
    where = {}
    for group in by_len.values():
        for size in prefill_chunks(len(group), engine.batch_shards):
            part, group = group[:size], group[size:]
            seqs = [prompts[key][1] for key in part]
            if images:  # the image prompts of this call (None: the text-only path)
                imgs = [images.get(prompts[key][0]) for key in part]
                prefix = engine.prefill(engine.params, seqs, images=imgs)
            else:
                prefix = engine.prefill(engine.params, seqs)
            where.update({key: (prefix, row) for row, key in enumerate(part)})
            counters.prefill_calls += 1
    counters.prefill_seqs += len(keys)
    counters.prefill_tokens += sum(len(p) for _, p in prompts.values())
    return where


def _extend(engine, continued: list, src: dict, counters) -> None:
    """Prefills the partial responses of continued trajectories on top of their prompt
    rows; src[id(t)] becomes the extended (Prefix, row). One call per (prompt Prefix,
    extension length bucket), in power-of-four row counts."""
    groups = collections.defaultdict(list)
    for t in continued:
        pre, _ = src[id(t)]
        groups[(id(pre), engine.prefill_bucket(len(t.response) + 1))].append(t)
    for trajs in groups.values():
        pre = src[id(trajs[0])][0]
        for size in prefill_chunks(len(trajs), engine.batch_shards):
            part, trajs = trajs[:size], trajs[size:]
            ext = engine.extend(
                engine.params,
                pre,
                [src[id(t)][1] for t in part],
                [int(t.prompt[-1]) for t in part],
                [t.response for t in part],
            )
            src.update({id(t): (ext, row) for row, t in enumerate(part)})
            counters.extend_calls += 1
    counters.continued += len(continued)
    counters.extend_tokens += sum(len(t.response) for t in continued)
    counters.prefill_tokens += sum(len(t.response) for t in continued)


def _slot_init(engine, slot: int, row: int, t, budget: int) -> dict:
    start = len(t.response)
    ins = {
        "slot": slot,
        "row": row,
        "key": t.key,
        "pos": start,
        "max_len": t.max_new,
        "stop_at": min(t.max_new, start + budget),
    }
    if engine.cfg.stop_on_repeat:
        ins["window"] = repeat.window_from_response(t.response, engine.window_len)
    return ins


def refill(engine, state, queue, slot_traj, budget, counters, prefixes, share, images=None):
    """Moves queued trajectories into free slots: prompt prefills, extensions, inserts.

    prefixes: request id -> (Prefix, row) of prompts whose trajectories are still queued, so
    a request's samples share one prompt prefill even across refills (share=True only).
    images: request id -> image patches of the prompt (see `collect`).
    """
    free = [s for s, t in enumerate(slot_traj) if t is None]
    take = [queue.popleft() for _ in range(min(len(free), len(queue)))]
    share_key = (lambda t: t.request_id) if share else id
    src, todo = {}, {}
    for t in take:
        key = share_key(t)
        if key in prefixes:
            src[id(t)] = prefixes[key]
        else:
            todo.setdefault(key, (t.request_id, t.prompt))
    where = _prefill_prompts(engine, todo, counters, images)
    if share:
        prefixes.update(where)
    for t in take:
        src.setdefault(id(t), where.get(share_key(t)))
    _extend(engine, [t for t in take if t.response], src, counters)

    by_prefix = collections.defaultdict(list)
    for slot, t in zip(free, take):
        slot_traj[slot] = t
        pre, row = src[id(t)]
        by_prefix[id(pre)].append((pre, _slot_init(engine, slot, row, t, budget)))
    for items in by_prefix.values():
        state = engine.insert(items[0][0], state, [ins for _, ins in items])
    waiting = {t.request_id for t in queue}
    for rid in [r for r in prefixes if r not in waiting]:
        del prefixes[rid]
    return state
