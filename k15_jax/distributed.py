"""Multi-host runs: one process per host, joined by JAX's multi-controller runtime.

Every process runs the same program on the same global mesh and makes the same host-side
decisions (prompt sampling, rollout scheduling, rewards), so every jitted call is issued by
all processes in the same order. What crosses the host boundary:

  host -> devices  `global_batch`: every process builds the same global batch (the synthetic
                   suite is deterministic and cheap) and hands JAX only the rows of its own
                   devices; `make_array_from_callback` never touches another host's rows.
  devices -> host  `to_host`: arrays split over several processes are all-gathered
                   (`process_allgather`), so every process sees the same values.
  files            only process 0 writes metrics, plots, summaries and exports (`is_main`,
                   `metrics_writer`); orbax checkpoints are written by all processes together.

The run directory must be on a file system all hosts share (NFS, Filestore, gcsfuse).
"""

import dataclasses
import json
import logging
import os
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from k15_jax.rollout.engine import RolloutEngine
from k15_jax.sharding import TRAIN_RULES, data_sharding

# The environment variables read when the config leaves a field unset (JAX itself reads
# only JAX_COORDINATOR_ADDRESS; the other two are this project's, for launchers that set
# per-process variables, see docs/pods.md).
ENV = {
    "coordinator_address": "JAX_COORDINATOR_ADDRESS",
    "num_processes": "JAX_NUM_PROCESSES",
    "process_id": "JAX_PROCESS_ID",
}
MODES = ("auto", "on", "off")


@dataclasses.dataclass
class DistributedConfig:
    """How this process joins a multi-host run (the `distributed` config group).

    mode: "auto" joins when a coordinator address or more than one process is given here or
      in the environment (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID);
      "on" always calls jax.distributed.initialize, whose unset arguments JAX detects on
      Cloud TPU pod slices, SLURM and Open MPI; "off" never joins.
    cpu_collectives: cross-process collectives of the CPU backend ("gloo", or "mpi").
    initialization_timeout: seconds to wait for all processes to connect.
    """

    mode: str = "auto"
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    cpu_collectives: str = "gloo"
    initialization_timeout: int = 300


def join_args(cfg: DistributedConfig, environ=None) -> dict | None:
    """The keyword arguments of `jax.distributed.initialize` for cfg, or None to stay alone.

    Config fields win over the environment. Pure: environ defaults to os.environ.
    """
    environ = os.environ if environ is None else environ
    if cfg.mode not in MODES:
        raise ValueError(f"distributed.mode={cfg.mode!r}; choose one of {MODES}")
    kw = {}
    for field, var in ENV.items():
        value = getattr(cfg, field)
        if value is None and environ.get(var):
            value = environ[var]
        if value is not None:
            try:
                kw[field] = value if field == "coordinator_address" else int(value)
            except ValueError:
                raise ValueError(
                    f"distributed.{field} (or ${var}) = {value!r} is not an integer"
                ) from None
    if cfg.mode == "off":
        return None
    if cfg.mode == "auto" and "coordinator_address" not in kw and kw.get("num_processes", 1) <= 1:
        return None
    n, i = kw.get("num_processes"), kw.get("process_id")
    if n is not None and i is not None and not 0 <= i < n:
        raise ValueError(
            f"distributed.process_id={i} is not in [0, num_processes={n}); give every "
            "process a distinct id 0..num_processes-1"
        )
    if cfg.mode == "auto" and (n is None or i is None or "coordinator_address" not in kw):
        missing = [f for f in ENV if f not in kw]
        raise ValueError(
            f"a multi-host run needs distributed.{', distributed.'.join(missing)} (or "
            f"${', $'.join(ENV[f] for f in missing)}); set them, or set distributed.mode=on "
            "to let JAX detect them (Cloud TPU, SLURM, Open MPI)"
        )
    kw["initialization_timeout"] = cfg.initialization_timeout
    return kw


def initialize(cfg: DistributedConfig) -> bool:
    """Joins the run described by cfg (before any other JAX call). True if multi-process.

    Idempotent: a second call in the same process (e.g. a later stage) does nothing.
    """
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    kw = join_args(cfg)
    if kw is None:
        return False
    if kw.get("process_id", 0) != 0:
        _quiet()
    # CPU processes need a collectives backend to run cross-process computations at all
    jax.config.update("jax_cpu_collectives_implementation", cfg.cpu_collectives)
    jax.distributed.initialize(**kw)
    if not is_main():
        _quiet()
    return jax.process_count() > 1


def _quiet() -> None:
    """One log for the run: processes other than 0 only report problems, to stderr."""
    logging.getLogger("k15_jax").setLevel(logging.WARNING)
    for h in list(logging.getLogger().handlers):  # Hydra's run-directory log file
        if isinstance(h, logging.FileHandler):
            logging.getLogger().removeHandler(h)


def is_main() -> bool:
    """True on the process that writes files (process 0; always true for one process)."""
    return jax.process_index() == 0


def global_array(x, sharding: NamedSharding) -> jax.Array:
    """A global jax.Array from a host array that every process holds in full.

    Each process transfers only the slices of its own devices (no cross-host traffic).
    """
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def global_batch(x, mesh: Mesh, rules=TRAIN_RULES) -> jax.Array:
    """A [batch, ...] host array on the mesh: rows split over the batch axes when they
    divide the row count, else replicated (correct either way; splitting is what scales)."""
    x = np.asarray(x)
    if x.ndim == 0:
        return global_array(x, NamedSharding(mesh, PartitionSpec()))
    sharding = data_sharding(mesh, rules, x.ndim)
    parts = int(np.prod([mesh.shape[a] for a in _axes(sharding.spec[0])]))
    if x.shape[0] % parts:
        sharding = NamedSharding(mesh, PartitionSpec())
    return global_array(x, sharding)


def replicate_scalars(tree, mesh: Mesh):
    """0-d leaves (optimizer step counts) replicated on the mesh, as a jitted step returns
    them, so its second call does not retrace; other leaves as they are.

    Unlike a device_put, this also takes counts that sit on one local device of each
    process (as orbax restores a count saved from one device).
    """
    rep = NamedSharding(mesh, PartitionSpec())

    def one(x):
        if np.ndim(x) != 0:
            return x
        if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(rep, 0):
            return x
        return global_array(np.asarray(x), rep)

    return jax.tree.map(one, tree)


def shard_like_params(tree, params, mesh: Mesh):
    """ShapeDtypeStructs of `tree` (e.g. `jax.eval_shape(optimizer.init, params)`) with
    shardings: a leaf under a params-like subtree (Adam's moments) takes the sharding of the
    param whose key path ends its own; the rest (step counts) are replicated. The restore
    target of an optimizer state, so every process reads its own shards onto the mesh.
    """
    rep = NamedSharding(mesh, PartitionSpec())
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    by_path = {jax.tree_util.keystr(p): x for p, x in flat}

    def one(path, x):
        key = jax.tree_util.keystr(path)
        match = [k for k, p in by_path.items() if key.endswith(k) and p.shape == x.shape]
        sharding = by_path[max(match, key=len)].sharding if match else rep
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    return jax.tree_util.tree_map_with_path(one, tree)


def _axes(entry) -> tuple[str, ...]:
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def to_host(tree):
    """Pytree of (possibly multi-process) arrays -> numpy on every process.

    Arrays split over other processes' devices are all-gathered (a collective: every
    process must call this at the same point); the rest are read locally.
    """

    def one(x):
        if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(one, tree)


class SilentWriter:
    """The metrics writer of processes other than 0: it counts and remembers records (the
    loop reads them back, e.g. the last evaluation) and writes nothing.

    After a resume it reads the records written before the checkpoint from process 0's
    metrics.jsonl (on the shared run directory), lazily: lines before the checkpoint no
    longer change once every process has run a collective since.
    """

    def __init__(self, run_dir):
        self.path = Path(run_dir) / "metrics.jsonl"
        self._base, self._records = 0, []

    def lines(self) -> int:
        return self._base + len(self._records)

    def truncate(self, n: int) -> None:
        self._base, self._records = n, []

    def write(self, record: dict, step: int) -> None:
        del step
        self._records.append(dict(record))

    def records(self) -> list[dict]:
        old = []
        if self._base and self.path.exists():
            lines = self.path.read_text().splitlines()[: self._base]
            old = [json.loads(line) for line in lines if line.strip()]
        return old + list(self._records)

    def close(self) -> None:
        pass


def metrics_writer(run_dir):
    """MetricsWriter (metrics.jsonl + TensorBoard) on process 0, SilentWriter elsewhere."""
    if is_main():
        from k15_jax.train.metrics import MetricsWriter

        return MetricsWriter(run_dir)
    return SilentWriter(run_dir)


class MultiHostEngine(RolloutEngine):
    """A RolloutEngine whose mesh may span processes (see `multihost_engine`)."""

    def _jit(self, name: str, *extra):
        fn = super()._jit(name, *extra)
        if name == "prefill":
            tok, row = self._sharding(("batch", None)), self.prefix_shardings.lengths
            return lambda p, t, n, last: fn(
                p, global_array(t, tok), global_array(n, row), global_array(last, row)
            )
        if name == "generate":

            def generate(params, state, stop):
                state, out = fn(params, state, stop)
                return state, to_host(out)

            return generate
        return fn


def multihost_engine(engine: RolloutEngine) -> RolloutEngine:
    """The rollout engine, able to run on a mesh that spans processes (as is for one).

    The engine feeds host arrays straight into jitted functions with split shardings and
    the driver `device_get`s decode outputs: neither works when the mesh spans processes.
    This engine places prefill inputs with `global_array` and all-gathers decode outputs,
    so the unchanged host driver runs in every process on identical values.
    """
    if jax.process_count() == 1 or isinstance(engine, MultiHostEngine):
        return engine
    return MultiHostEngine(
        engine.model_cfg, engine.cfg, engine.mesh, engine.params, engine.stop_ids, engine.pad_id
    )
