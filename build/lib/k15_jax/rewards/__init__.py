"""Rewards: verifiable answers (math) for the RL loop."""

from k15_jax.rewards.math import (
    MathRewardConfig,
    check_answer,
    extract_answer,
    math_reward,
    normalize_answer,
    score_math,
)

__all__ = [
    "MathRewardConfig",
    "check_answer",
    "extract_answer",
    "math_reward",
    "normalize_answer",
    "score_math",
]
