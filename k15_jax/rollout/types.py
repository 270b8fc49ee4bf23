"""Rollout data types: the batch of sampled trajectories and the rollout options.

Letters: N returned sequences (n_groups * K, plus padding groups), K samples per prompt,
T = max_prompt_len + max_new_tokens tokens per row.
"""

import dataclasses

import flax
import jax

# Finish reasons of returned sequences. A trajectory that only ran out of its per-iteration
# budget (partial rollouts) is not returned: it waits in the buffer, see `buffer.py`.
FINISH_EOS, FINISH_LENGTH, FINISH_REPEAT = 0, 1, 2
FINISH_NAMES = {FINISH_EOS: "eos", FINISH_LENGTH: "length", FINISH_REPEAT: "repeat"}
# Internal codes used on device: still running, and stopped by the iteration budget.
FINISH_NONE, FINISH_BUDGET = -1, 3


@flax.struct.dataclass
class Rollouts:
    """Sampled trajectories, K consecutive rows per group (prompt), right-padded.

    Rows of padding groups (see `driver.collect(pad_groups_to=...)`) have group -1, an
    all-zero response_mask, length 0 and finish -1.

    logp holds log pi(token | prefix) under the policy that sampled the token, from the raw
    logits at temperature 1 (log_softmax of the model's logits), whatever temperature /
    top-p / top-k the sampler used: the RL loss needs log pi_theta_i, not the log-prob of
    the filtered sampling distribution. Tokens continued from an earlier iteration keep
    the log-prob (and version) of the params that produced them.
    """

    tokens: jax.Array  # [N, T] int32, prompt + response, right-padded with pad_id
    prompt_len: jax.Array  # [N] int32
    response_mask: jax.Array  # [N, T] float32, 1 on response tokens (all of them, any version)
    logp: jax.Array  # [N, T] float32, sampling-policy log-prob of each response token, 0 elsewhere
    version: jax.Array  # [N, T] int32, iteration that produced each response token, -1 elsewhere
    group: jax.Array  # [N] int32, group index 0..n_groups-1 (-1 on padding groups)
    finish: jax.Array  # [N] int32, FINISH_* (-1 on padding groups)
    length: jax.Array  # [N] int32, response tokens


@dataclasses.dataclass
class RolloutConfig:
    """Options of the rollout engine and driver (the Hydra `rollout` group).

    T = max_prompt_len + max_new_tokens is both the KV-cache length of every slot and the
    (fixed) row length of `Rollouts`, so the trainer compiles once.

    temperature, top_p, top_k, greedy: the sampling distribution (greedy ignores the rest;
      top_k=0 and top_p=1 switch those filters off).
    slots: decode batch (concurrent sequences); must be a multiple of the mesh's batch axes.
    partial: partial rollouts (report sec. 2.6.2): each trajectory decodes at most
      budget_tokens per `collect` call; unfinished ones wait in the buffer.
    repeat_ngram, repeat_min_repeats, repeat_window: a sequence is stopped with finish
      `repeat` when the last repeat_ngram response tokens occur at least repeat_min_repeats
      times (overlaps counted, the last one included) in the last repeat_window response
      tokens. A loop of period p is caught once about repeat_ngram + (repeats - 1) * p tokens
      of it exist, for p up to (window - ngram) / (repeats - 1).
    stop_on_repeat: run the detector (False switches it off entirely).
    steps_per_sync: decode steps run on device between two host syncs (continuous batching
      refills freed slots at these points).
    share_prefix: the K samples of a prompt share one prefill of it (its KV is copied into
      their K slots), fresh and continued (partial rollouts) alike; false prefills the
      prompt once per sample. Samples are the same either way; only the cost differs.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    greedy: bool = False
    max_new_tokens: int = 256
    max_prompt_len: int = 128
    slots: int = 64
    partial: bool = False
    budget_tokens: int = 64
    repeat_ngram: int = 20
    repeat_min_repeats: int = 4
    repeat_window: int = 512
    stop_on_repeat: bool = True
    steps_per_sync: int = 8
    share_prefix: bool = True


def check_rollout_config(cfg: RolloutConfig) -> None:
    """Fails naming the option and the fix when a rollout config cannot work."""
    if not cfg.greedy and not cfg.temperature > 0:
        raise ValueError(
            f"rollout.temperature={cfg.temperature} must be > 0; set rollout.greedy=true "
            "for argmax decoding"
        )
    if not 0 < cfg.top_p <= 1:
        raise ValueError(f"rollout.top_p={cfg.top_p} must be in (0, 1]; 1 switches it off")
    if cfg.top_k < 0:
        raise ValueError(f"rollout.top_k={cfg.top_k} must be >= 0; 0 switches it off")
    for name in ("max_new_tokens", "max_prompt_len", "slots", "budget_tokens", "steps_per_sync"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"rollout.{name}={getattr(cfg, name)} must be >= 1")
    if cfg.stop_on_repeat:
        if cfg.repeat_ngram < 1 or cfg.repeat_min_repeats < 2:
            raise ValueError(
                f"rollout.repeat_ngram={cfg.repeat_ngram} must be >= 1 and "
                f"rollout.repeat_min_repeats={cfg.repeat_min_repeats} >= 2"
            )
        if cfg.repeat_window < cfg.repeat_ngram + cfg.repeat_min_repeats - 1:
            raise ValueError(
                f"rollout.repeat_window={cfg.repeat_window} cannot hold "
                f"{cfg.repeat_min_repeats} occurrences of a {cfg.repeat_ngram}-gram; set it "
                f">= repeat_ngram + repeat_min_repeats - 1 (or stop_on_repeat=false)"
            )
