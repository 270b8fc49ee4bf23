"""Group filters applied between scoring and the update.

DAPO's dynamic sampling (Yu et al. 2025, arXiv 2503.14476, sec. 3.2): groups whose K rewards
are all equal give GRPO-style advantages of 0 and only shrink the effective batch, so DAPO
over-samples prompts and keeps groups with mixed rewards until the batch is full. Here the
loop draws `sampler.oversample` x batch_prompts prompts in one round and keeps `batch_prompts`
groups, mixed ones first (one round, not DAPO's repeat-until-full).
"""

import numpy as np


def mixed_groups_first(rewards: np.ndarray, n: int) -> np.ndarray:
    """Indices of n groups of `rewards` [G, K]: groups with mixed rewards first (in order),
    then all-equal ones (in order) when fewer than n are mixed. -> [min(n, G)] int64."""
    mixed = np.ptp(rewards, axis=1) > 0
    order = np.concatenate([np.flatnonzero(mixed), np.flatnonzero(~mixed)])
    return order[:n].astype(np.int64)
