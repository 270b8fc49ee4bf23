"""The TPU slice a mesh preset stands for, as compile-only devices (no TPU needed).

`jax.experimental.topologies.get_topology_desc` asks libtpu for the devices of a slice
("v5p:4x4x2" is a 32-chip v5p-64); programs lowered onto a mesh of them compile with the
TPU compiler on this machine's CPU. libtpu is loaded here, on request, never at start-up
(`k15_jax.libtpu_guard`).
"""

import dataclasses
import math

import numpy as np
from jax.sharding import Mesh

from k15_jax.sharding import MESH_AXES


@dataclasses.dataclass
class TopologyConfig:
    """The `topology` keys of a mesh preset (configs/mesh/tpu_*.yaml).

    name: libtpu's topology name, "<chip>:<chips per dimension>" (v5p:4x4x2, v5e:4x4), or
      None where the preset has none (GPU presets: JAX cannot compile for a GPU without one).
    chip_config: "megacore" (v4, v5p: one JAX device per chip, both TensorCores) or "default".
    chips_per_host: chips of one host along each dimension (2x2x1 on v4, v5p, v5e, v6e).
    slices: slices joined over the data-center network (multi-slice); the mesh's `data`
      axis spans them.
    """

    name: str | None = None
    chip_config: str = "default"
    chips_per_host: list[int] = dataclasses.field(default_factory=lambda: [2, 2, 1])
    slices: int = 1


@dataclasses.dataclass
class AotConfig:
    """The `aot` keys of `python -m experiments.aot`: the programs to compile (empty: all of
    `programs.PROGRAMS`) and the MFU its projected iteration time assumes."""

    programs: list[str] = dataclasses.field(default_factory=list)
    mfu: float = 0.4


def chips(cfg: TopologyConfig) -> int:
    """Chips of the whole topology (all slices)."""
    dims = cfg.name.split(":")[1].split("x")
    return math.prod(int(d) for d in dims) * cfg.slices


def devices(cfg: TopologyConfig) -> list:
    """The compile-only devices of the topology (loads libtpu)."""
    if not cfg.name:
        raise ValueError(
            "this mesh preset names no TPU topology (topology.name); ahead-of-time compiles "
            "need one: pick a tpu_* mesh preset or set topology.name=v5p:2x2x1"
        )
    import os

    from jax.experimental import topologies

    # libtpu takes /tmp/libtpu_lockfile to keep two processes off one chip; compiling
    # touches no chip, so parallel compiles (and a test beside a run) may share it
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

    try:
        import libtpu  # noqa: F401 - only to fail with the fix below
    except ImportError as e:
        raise RuntimeError(
            "compiling for a TPU topology needs libtpu (the TPU compiler): pip install -r "
            "requirements-test.txt -c requirements.lock (it pins the libtpu of jax[tpu])"
        ) from e
    bounds = tuple(cfg.chips_per_host) + (1,) * (3 - len(cfg.chips_per_host))
    desc = topologies.get_topology_desc(
        platform="tpu",
        topology_name=cfg.name,
        chip_config_name=cfg.chip_config,
        chips_per_host_bounds=bounds,
        num_slices=cfg.slices,
        wrap=(False, False, False),
    )
    return list(desc.devices)


def mesh(cfg: TopologyConfig, shape: dict) -> Mesh:
    """A (data, fsdp, tensor, sequence) mesh over the topology's devices.

    Devices keep libtpu's order (slice, then host, then chip), so with slices > 1 the
    leading `data` axis runs across slices and the others stay inside one slice.
    """
    devs = devices(cfg)
    n = math.prod(shape[a] for a in MESH_AXES)
    if n != len(devs):
        raise ValueError(
            f"mesh {shape} needs {n} chips but topology {cfg.name} x {cfg.slices} slice(s) "
            f"has {len(devs)}; set the mesh sizes so their product is {len(devs)}"
        )
    if cfg.slices > 1 and shape["data"] % cfg.slices:
        raise ValueError(
            f"mesh.data={shape['data']} must be a multiple of topology.slices={cfg.slices}: "
            "only the data axis may cross slices (its gradients all-reduce over the slower "
            "data-center network once per step)"
        )
    arr = np.array(devs).reshape([shape[a] for a in MESH_AXES])
    return Mesh(arr, MESH_AXES)
