"""Rollouts: a slot-batched engine on the training mesh, the RL driver (continuous batching,
K samples per prompt, partial rollouts), repeat detection and in-memory params hand-over.

Importing this package does not import JetStream; the `jetstream.engine.engine_api.Engine`
adapter is `k15_jax.rollout.jetstream_engine`.
"""

from k15_jax.rollout.buffer import RolloutBuffer, Trajectory
from k15_jax.rollout.driver import collect
from k15_jax.rollout.engine import RolloutEngine, make_engine
from k15_jax.rollout.handover import handover, timed_handover
from k15_jax.rollout.types import (
    FINISH_EOS,
    FINISH_LENGTH,
    FINISH_NAMES,
    FINISH_REPEAT,
    RolloutConfig,
    Rollouts,
    check_rollout_config,
)

__all__ = [
    "FINISH_EOS",
    "FINISH_LENGTH",
    "FINISH_NAMES",
    "FINISH_REPEAT",
    "RolloutBuffer",
    "RolloutConfig",
    "RolloutEngine",
    "Rollouts",
    "Trajectory",
    "check_rollout_config",
    "collect",
    "handover",
    "make_engine",
    "timed_handover",
]
