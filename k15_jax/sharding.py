"""Device mesh and the table from logical axis names to mesh axes.

Every parameter dimension has a logical name (declared in `model/params.py`); one rule table
per phase maps it to mesh axes. Training shards weights over `fsdp` and `tensor`; rollout
keeps weights whole across `data`/`fsdp` (gathered once at hand-over rather than at every
decode step) and shards the KV cache over the batch of slots.
"""

import dataclasses
import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from k15_jax.model.config import ModelConfig
from k15_jax.model.params import ParamSpec, param_specs

MESH_AXES = ("data", "fsdp", "tensor", "sequence")

Rules = dict[str, str | tuple[str, ...] | None]

TRAIN_RULES: Rules = {
    "batch": ("data", "fsdp"),
    "length": None,
    "vocab": "tensor",
    "embed": "fsdp",
    "q_heads": "tensor",
    "kv_heads": "tensor",
    "mlp": "tensor",
    "head_dim": None,
    "layers": None,
    # the image encoder (model/vit.py): sharded like the decoder
    "vit_embed": "fsdp",
    "vit_heads": "tensor",
    "vit_mlp": "tensor",
    "vit_patch": None,
    "vit_positions": None,
}

ROLLOUT_RULES: Rules = {**TRAIN_RULES, "embed": None, "vit_embed": None, "cache_length": None}


@dataclasses.dataclass
class MeshConfig:
    """Mesh shape. One axis may be -1: it takes all devices the others leave."""

    data: int = 1
    fsdp: int = -1
    tensor: int = 1
    sequence: int = 1


def make_mesh(cfg: MeshConfig, devices=None) -> Mesh:
    """A Mesh with axes (data, fsdp, tensor, sequence) over `devices` (default: all)."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = {a: int(getattr(cfg, a)) for a in MESH_AXES}
    free = [a for a, s in sizes.items() if s == -1]
    if len(free) > 1:
        raise ValueError(f"mesh axes {free} are all -1; at most one axis may take the rest")
    for a, s in sizes.items():
        if s == 0 or s < -1:
            raise ValueError(f"mesh.{a}={s}; mesh sizes must be positive (or -1 for the rest)")
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if free:
        if len(devices) % fixed:
            raise ValueError(
                f"mesh {sizes}: the fixed axes multiply to {fixed}, which does not divide the "
                f"{len(devices)} devices; change the mesh sizes so their product divides it"
            )
        sizes[free[0]] = len(devices) // fixed
    total = math.prod(sizes.values())
    if total != len(devices):
        raise ValueError(
            f"mesh {sizes} needs {total} devices but {len(devices)} are available; set the "
            f"mesh sizes so their product is {len(devices)} (or set one axis to -1)"
        )
    arr = np.array(devices).reshape([sizes[a] for a in MESH_AXES])
    return Mesh(arr, MESH_AXES)


def _mesh_axes_of(name: str | None, rules: Rules) -> tuple[str, ...]:
    if name is None:
        return ()
    if name not in rules:
        raise KeyError(f"logical axis {name!r} has no sharding rule; add it to the rule table")
    target = rules[name]
    if target is None:
        return ()
    return (target,) if isinstance(target, str) else tuple(target)


def logical_to_spec(axes: tuple[str | None, ...], rules: Rules) -> PartitionSpec:
    """Logical axis names -> PartitionSpec (a mesh axis is used at most once)."""
    used, out = set(), []
    for name in axes:
        mesh_axes = tuple(a for a in _mesh_axes_of(name, rules) if a not in used)
        used.update(mesh_axes)
        out.append(None if not mesh_axes else mesh_axes[0] if len(mesh_axes) == 1 else mesh_axes)
    return PartitionSpec(*out)


def named_sharding(mesh: Mesh, axes: tuple[str | None, ...], rules: Rules) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(axes, rules))


def check_divisible(
    shape: tuple[int, ...], axes: tuple[str | None, ...], mesh: Mesh, rules: Rules, what: str
) -> None:
    """Fails naming the dimension, the mesh axis and the fix if a shape does not split."""
    spec = logical_to_spec(axes, rules)
    for dim, (size, name, mesh_axes) in enumerate(zip(shape, axes, spec)):
        if mesh_axes is None:
            continue
        mesh_axes = (mesh_axes,) if isinstance(mesh_axes, str) else mesh_axes
        parts = math.prod(mesh.shape[a] for a in mesh_axes)
        if size % parts:
            desc = " x ".join(f"'{a}'={mesh.shape[a]}" for a in mesh_axes)
            raise ValueError(
                f"{what}: dimension {dim} ({name!r}) of size {size} is not divisible by mesh "
                f"axis {desc}; choose mesh sizes that divide {size} (e.g. set "
                f"mesh.{mesh_axes[-1]}=1) or change the model dimension"
            )


def param_shardings(cfg: ModelConfig, mesh: Mesh, rules: Rules = TRAIN_RULES) -> dict:
    """NamedSharding pytree for the params of `cfg`, after checking every dimension splits."""

    def one(path, spec: ParamSpec):
        check_divisible(spec.shape, spec.axes, mesh, rules, f"param {jax.tree_util.keystr(path)}")
        return named_sharding(mesh, spec.axes, rules)

    return jax.tree_util.tree_map_with_path(
        one, param_specs(cfg), is_leaf=lambda x: isinstance(x, ParamSpec)
    )


def data_sharding(mesh: Mesh, rules: Rules = TRAIN_RULES, ndim: int = 2) -> NamedSharding:
    """Sharding for a [batch, ...] array: batch over the rule's mesh axes, the rest whole."""
    return named_sharding(mesh, ("batch",) + (None,) * (ndim - 1), rules)
