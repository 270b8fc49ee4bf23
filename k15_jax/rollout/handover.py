"""Hybrid colocation (report sec. 2.6.3): params move from training to rollout in device memory.

Training shards weights over `fsdp` and `tensor` (`TRAIN_RULES`) and stacks layers; the
engine keeps them whole across the batch axes (`ROLLOUT_RULES`) so decode steps do not
all-gather weights, one array per layer (`layout.py`). `handover` is one jitted copy into
that layout whose out_shardings are the engine's: XLA turns it into the device-to-device
all-gathers / copies; nothing goes through the host or disk.

Training-only state (optimizer moments) is not kept across the hand-over: the k1.5 recipe
resets the optimizer every iteration, so it is dropped rather than moved to the host.
"""

import time

import jax
import jax.numpy as jnp

from k15_jax.rollout.layout import unstack_layers

_RESHARD_CACHE: dict = {}


def reshard_fn(shardings):
    """The jitted copy that `handover` runs (one per layout): stacked params (any sharding)
    -> the engine's layout (`layout.unstack_layers`) in `shardings`."""
    leaves, treedef = jax.tree.flatten(shardings)
    key = (treedef, tuple(leaves))
    if key not in _RESHARD_CACHE:
        to_engine = lambda p: jax.tree.map(jnp.copy, unstack_layers(p))
        _RESHARD_CACHE[key] = jax.jit(to_engine, out_shardings=shardings)
    return _RESHARD_CACHE[key]


def handover(engine, params):
    """Gives the engine `params` (any sharding, e.g. the trainer's) in its own layout.

    Sets `engine.params` and returns the engine, so both `handover(engine, params)` and
    `engine = handover(engine, params)` work. The result never aliases `params` (a jitted
    copy), so the trainer may donate its params afterwards.
    """
    if params is None:
        raise ValueError("handover got params=None; pass the trainer's params pytree")
    want = jax.tree.structure(engine.stacked_shardings)
    have = jax.tree.structure(params)
    if want != have:
        raise ValueError(
            f"handover: params structure {have} does not match the engine's model config "
            f"({want}); build the engine with the trainer's ModelConfig"
        )
    engine.params = None  # drop the old copy before making the new one (peak memory)
    if _devices(params) == _devices(engine.param_shardings):
        engine.params = reshard_fn(engine.param_shardings)(params)
    else:  # another device set (e.g. a separate rollout slice): transfer, still no host hop
        moved = jax.device_put(params, engine.stacked_shardings, may_alias=False)
        engine.params = reshard_fn(engine.param_shardings)(moved)
    return engine


def _devices(tree) -> frozenset:
    out = set()
    for x in jax.tree.leaves(tree):
        sharding = getattr(x, "sharding", x)
        out |= set(getattr(sharding, "device_set", ()))
    return frozenset(out)


def timed_handover(engine, params) -> tuple[object, float]:
    """`handover` and its wall time in seconds (waits for the copy to finish)."""
    t0 = time.perf_counter()
    engine = handover(engine, params)
    jax.block_until_ready(engine.params)
    return engine, time.perf_counter() - t0
