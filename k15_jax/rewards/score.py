"""The reward step of an RL iteration: verifier + length penalty + repeat penalty.

    r[b, j] = correct[b, j]
            + w(it) * len_reward[b, j]            (sec. 2.3.3, with warm-up w)
            - repeat_penalty * [finish == repeat]  (sec. 2.6 repeat detection)

A verifier exception scores that response 0 and is counted; it never stops the run.
"""

import dataclasses

import numpy as np

from k15_jax.rewards.math import score_math
from k15_jax.rl.penalties import length_penalty, length_penalty_weight


@dataclasses.dataclass
class RewardConfig:
    kind: str = "rule"  # the rule-based math verifier
    length_penalty_weight: float = 0.0  # 0 disables it; the report adds it with weight 1
    length_penalty_warmup: int = 0  # iterations before the length penalty starts
    repeat_penalty: float = 0.5
    timeout_s: float = 5.0


def score(
    responses: list[str],
    references: list[str],
    lengths: np.ndarray,
    repeated: np.ndarray,
    cfg: RewardConfig,
    iteration: int,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Scores N = B*K responses (row-major groups of K).

    lengths, repeated: [B, K]. Returns (rewards [B, K] float32, correct [B, K], stats).
    """
    if cfg.kind != "rule":
        raise ValueError(f"reward.kind={cfg.kind!r}; only 'rule' is available")
    B, K = lengths.shape
    try:
        correct, stats = score_math(responses, references, timeout_s=cfg.timeout_s)
    except Exception as e:  # a broken verifier must not stop the run
        correct = np.zeros(len(responses), np.float32)
        stats = {"errors": len(responses), "exception": repr(e)}
    correct = correct.reshape(B, K)
    weight = float(
        length_penalty_weight(
            iteration, warmup_iterations=cfg.length_penalty_warmup, weight=cfg.length_penalty_weight
        )
    )
    len_reward = np.asarray(length_penalty(lengths, correct)) if weight else np.zeros((B, K))
    rewards = correct + weight * len_reward - cfg.repeat_penalty * repeated.astype(np.float32)
    out = {
        "reward/verifier_errors": float(stats.get("errors", 0) + stats.get("timeouts", 0)),
        "reward/no_answer": float(stats.get("no_answer", 0)),
        "reward/length_penalty_weight": weight,
        "reward/len_reward_mean": float(len_reward.mean()),
        "reward/repeat_frac": float(repeated.mean()),
    }
    return rewards.astype(np.float32), correct, out
