"""The programs of a run, as the loop builds them, with abstract sharded arguments.

Each `Program` is one jitted function the loop calls (`sft.make_step`, `rl_step.make_update`,
the engine's prefill and decode chunk, `handover.reshard_fn`) and `jax.ShapeDtypeStruct`
arguments carrying the shardings the loop gives the real arrays (params and Adam moments by
`sharding.TRAIN_RULES`, batches split over the batch axes, the engine's own layouts).
Nothing is allocated: `program.compile()` lowers and compiles for the mesh's devices.

Letters: N = B*K sequences of T = max_prompt_len + max_new_tokens tokens, S slots.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from omegaconf import OmegaConf

from k15_jax.model.config import ModelConfig
from k15_jax.model.params import abstract_params
from k15_jax.rollout.engine import RolloutEngine, make_engine
from k15_jax.rollout.handover import reshard_fn
from k15_jax.rollout.layout import unstack_layers
from k15_jax.sharding import TRAIN_RULES, data_sharding, param_shardings
from k15_jax.train import rl_step, sft

PROGRAMS = ("SFT step", "RL update", "prefill", "decode", "hand-over")


@dataclasses.dataclass
class Program:
    name: str
    fn: Callable  # jitted
    args: tuple  # ShapeDtypeStruct pytrees with shardings

    def compile(self):
        return self.fn.lower(*self.args).compile()


def _sds(tree, shardings):
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


def _params(model: ModelConfig, mesh: Mesh, rules=TRAIN_RULES):
    return _sds(abstract_params(model), param_shardings(model, mesh, rules))


def _engine_params(eng: RolloutEngine):
    """The engine's params (one array per layer, `rollout/layout.py`) in its shardings."""
    return _sds(unstack_layers(abstract_params(eng.model_cfg)), eng.param_shardings)


def _opt_state(optimizer: optax.GradientTransformation, params):
    """Adam's moments in their params' shardings, step counts replicated (as the loop's
    `optimizer.init(params)` + `replicate_scalars` leave them)."""
    shapes = jax.eval_shape(optimizer.init, params)
    shardings = jax.tree.map(lambda p: p.sharding, params)
    replicated = NamedSharding(next(iter(jax.tree.leaves(shardings))).mesh, PartitionSpec())
    return optax.tree_utils.tree_map_params(
        optimizer,
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        shapes,
        shardings,
        transform_non_params=lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
    )


def _batch(mesh: Mesh, shape: tuple, dtype):
    """A [rows, ...] batch as `distributed.global_batch` places it: rows split over the
    batch axes when they divide them, else replicated."""
    sharding = data_sharding(mesh, TRAIN_RULES, len(shape))
    axes = sharding.spec[0]
    axes = (axes,) if isinstance(axes, str) else axes
    if shape[0] % int(np.prod([mesh.shape[a] for a in axes])):
        sharding = NamedSharding(mesh, PartitionSpec())
    return jax.ShapeDtypeStruct(shape, jnp.dtype(dtype), sharding=sharding)


def sft_step(cfg, model: ModelConfig, mesh: Mesh) -> Program:
    c = OmegaConf.to_object(cfg.sft)
    optimizer = sft.make_optimizer(c)
    params = _params(model, mesh)
    rows = (c.rows, c.row_len)
    batch = (
        _batch(mesh, rows, "int32"),
        _batch(mesh, rows, "int32"),
        _batch(mesh, rows, "float32"),
    )
    fn = sft.make_step(model, optimizer, c.microbatches)
    return Program("SFT step", fn, (params, _opt_state(optimizer, params), *batch))


def rl_update(cfg, model: ModelConfig, mesh: Mesh) -> Program:
    algo = OmegaConf.to_object(cfg.algo)
    update, optimizer = rl_step.make_update(model, algo)
    B, K = cfg.sampler.batch_prompts, cfg.sampler.samples_per_prompt
    T = cfg.rollout.max_prompt_len + cfg.rollout.max_new_tokens
    params = _params(model, mesh)
    rows = (B * K, T)
    args = (
        params,
        _opt_state(optimizer, params),
        _batch(mesh, rows, "int32"),  # tokens
        _batch(mesh, rows, "float32"),  # ref_logp
        _batch(mesh, (B, K), "float32"),  # rewards
        _batch(mesh, rows, "float32"),  # mask
    )
    return Program("RL update", update, args)


def engine(cfg, model: ModelConfig, mesh: Mesh) -> RolloutEngine:
    eos = () if model.eos_token_id is None else model.eos_token_id
    return make_engine(model, OmegaConf.to_object(cfg.rollout), eos_id=eos, mesh=mesh)


def prefill(eng: RolloutEngine) -> Program:
    """The prefill of a full slot batch of prompts (the evaluation pass fills every slot)."""
    S = eng.cfg.slots
    Tp = eng.prefill_bucket(eng.cfg.max_prompt_len)
    row = eng.prefix_shardings.lengths
    tok = NamedSharding(eng.mesh, PartitionSpec(*row.spec, None))
    args = (
        _engine_params(eng),
        jax.ShapeDtypeStruct((S, Tp), jnp.int32, sharding=tok),
        jax.ShapeDtypeStruct((S,), jnp.int32, sharding=row),
        jax.ShapeDtypeStruct((S,), jnp.int32, sharding=row),
    )
    return Program("prefill", eng.program("prefill"), args)


def decode(eng: RolloutEngine) -> Program:
    """One decode chunk (rollout.steps_per_sync steps of every slot) over the full cache."""
    state = _sds(jax.eval_shape(eng.program("init")), eng.state_shardings)
    stop = np.asarray(eng.stop_ids or (-1,), np.int32)
    replicated = NamedSharding(eng.mesh, PartitionSpec())
    args = (
        _engine_params(eng),
        state,
        jax.ShapeDtypeStruct(stop.shape, jnp.int32, sharding=replicated),
    )
    fn = eng.program("generate", eng.cfg.steps_per_sync, None)
    return Program("decode", fn, args)


def hand_over(eng: RolloutEngine) -> Program:
    """The trainer's params (TRAIN_RULES) copied into the engine's layout and shardings."""
    params = _params(eng.model_cfg, eng.mesh)
    return Program("hand-over", reshard_fn(eng.param_shardings), (params,))


def build(cfg, model: ModelConfig, mesh: Mesh, names=PROGRAMS) -> list[Program]:
    """The programs named (in PROGRAMS order); the SFT step only when the run has one."""
    out = []
    if "SFT step" in names and not cfg.trainer.skip_sft:
        out.append(sft_step(cfg, model, mesh))
    if "RL update" in names:
        out.append(rl_update(cfg, model, mesh))
    if {"prefill", "decode", "hand-over"} & set(names):
        eng = engine(cfg, model, mesh)
        builders = {"prefill": prefill, "decode": decode, "hand-over": hand_over}
        out += [builders[n](eng) for n in ("prefill", "decode", "hand-over") if n in names]
    return out
