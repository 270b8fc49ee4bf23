"""Run state and its checkpoints: everything needed for an exact resume, saved together.

One orbax CheckpointManager per run directory. A checkpoint holds the params (tensorstore,
sharded) and a JSON item with the rest: phase, SFT step, RL iteration, sampler counts,
partial-rollout buffer, the metrics.jsonl line count. Orbax writes each checkpoint under a
temporary name and renames it when complete, so a run killed mid-save resumes from the
previous complete one.
"""

import dataclasses
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp


@dataclasses.dataclass
class RunState:
    phase: str = "sft"  # "sft" -> "rl" -> "done"
    sft_step: int = 0
    iteration: int = 0
    sampler: dict = dataclasses.field(default_factory=dict)  # name -> np.ndarray
    buffer: dict = dataclasses.field(default_factory=dict)  # partial-rollout buffer state
    requests: dict = dataclasses.field(default_factory=dict)  # buffered request id -> pool row
    metrics_lines: int = 0  # lines of metrics.jsonl written up to this state
    extra: dict = dataclasses.field(default_factory=dict)  # e.g. the eval at RL start
    saves: int = 0  # checkpoint number, monotone across phases


def _to_json(x):
    if isinstance(x, dict):
        return {k: _to_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_json(v) for v in x]
    if isinstance(x, np.ndarray):
        return {"__ndarray__": x.tolist(), "dtype": str(x.dtype)}
    if isinstance(x, np.generic):
        return x.item()
    return x


def _from_json(x):
    if isinstance(x, dict):
        if "__ndarray__" in x:
            return np.asarray(x["__ndarray__"], dtype=x["dtype"])
        return {k: _from_json(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_from_json(v) for v in x]
    return x


class Checkpoints:
    """Saves and restores (params, RunState) in `directory`, keeping the newest `keep`."""

    def __init__(self, directory, keep: int = 2):
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            item_names=("params", "state"),
        )

    def save(self, tree, state: RunState) -> None:
        """tree: params, or any pytree of arrays (e.g. params with optimizer state)."""
        state.saves += 1
        meta = _to_json(dataclasses.asdict(state))
        self.manager.save(
            state.saves,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(tree), state=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self.manager.wait_until_finished()

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, target_for) -> tuple[dict, RunState]:
        """Restores the newest complete checkpoint.

        target_for: RunState -> pytree of arrays or ShapeDtypeStructs (with shardings) like
        the saved tree, e.g. params alone, or params and optimizer state during SFT.
        """
        step = self.manager.latest_step()
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
        meta = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.JsonRestore()))
        state = RunState(**_from_json(dict(meta["state"])))
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
            target_for(state),
        )
        out = self.manager.restore(
            step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target))
        )
        return out["params"], state

    def close(self) -> None:
        self.manager.close()
