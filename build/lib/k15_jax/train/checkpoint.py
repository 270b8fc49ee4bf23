"""Orbax checkpoints of params (and, with the RL loop, of the whole run state).

Restoring takes the target shardings, so a checkpoint written on one mesh shape restores
onto another: orbax reads each device's slice from the tensorstore files directly.
"""

from pathlib import Path

import jax
import orbax.checkpoint as ocp


def save_params(path, params) -> None:
    """Writes params to `path` (a new directory; orbax writes to a temporary name first
    and renames when complete, so a crash never leaves a half-written checkpoint)."""
    path = Path(path).absolute()
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(path, params)


def restore_params(path, target):
    """Reads params saved by `save_params`.

    target: a pytree of jax.ShapeDtypeStruct with `.sharding` set (the layout to restore
    onto), or of arrays whose shape, dtype and sharding are used.
    """
    path = Path(path).absolute()
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target
    )
    with ocp.StandardCheckpointer() as ckpt:
        return ckpt.restore(path, abstract)
