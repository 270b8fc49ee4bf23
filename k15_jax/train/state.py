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

    def save(self, params, state: RunState) -> None:
        state.saves += 1
        meta = _to_json(dataclasses.asdict(state))
        self.manager.save(
            state.saves,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params), state=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self.manager.wait_until_finished()

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, abstract_params) -> tuple[dict, RunState]:
        """Restores the newest complete checkpoint onto the shardings of abstract_params."""
        step = self.manager.latest_step()
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), abstract_params
        )
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(target), state=ocp.args.JsonRestore()
            ),
        )
        return out["params"], RunState(**_from_json(dict(out["state"])))

    def close(self) -> None:
        self.manager.close()
