"""The memory and FLOPs planner: does a run fit its devices, and what to change if not.

    python -m experiments.plan +exp=curriculum mesh=h100_8

`memory` (per-device bytes of the training step and the rollout engine), `flops` (FLOPs and
rough times), `fit` (phases, verdict, remedies, report, the startup check of experiments.run),
`device` (the `device` config group).
"""

from k15_jax.plan.device import DeviceConfig, memory_bytes
from k15_jax.plan.fit import (
    DoesNotFit,
    Workload,
    mesh_shape,
    plan,
    plan_config,
    problems,
    refuse_unfit,
    report,
)

__all__ = [
    "DeviceConfig",
    "DoesNotFit",
    "Workload",
    "memory_bytes",
    "mesh_shape",
    "plan",
    "plan_config",
    "problems",
    "refuse_unfit",
    "report",
]
