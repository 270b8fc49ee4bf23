"""Options of the reward-model experiment (`trainer.job=reward_models`, +exp=reward_models)."""

import dataclasses

from k15_jax.rewards.rm_classic import ClassicRMConfig
from k15_jax.train.sft import SFTConfig


def _cot_sft() -> SFTConfig:
    # one check per 256-token row (input <= 92 + check <= 164), two for short bands
    return SFTConfig(
        steps=1000, rows=8, row_len=256, lr=2e-3, warmup_steps=30, checkpoint_every=1_000_000
    )


@dataclasses.dataclass
class RewardModelsConfig:
    """Data: responses to train_prompts_per_band training-pool prompts per band (and
    eval_prompts_per_band held-out ones), samples_per_prompt sampled at temperature from the
    policy plus the programmatic variants of k15_jax/rewards/rm_data.py, labelled by the rule
    verifier and balanced to at most train_pairs / eval_pairs pairs (half correct).

    policy_dir: a run directory of the main job (its newest orbax checkpoint is the policy);
    None trains one here with the SFT warm-up (the sft.* keys).
    Input limits are reward.rm_max_input and reward.rm_max_check, shared with RL scoring.
    """

    policy_dir: str | None = None
    train_prompts_per_band: int = 150
    eval_prompts_per_band: int = 40
    samples_per_prompt: int = 4
    temperature: float = 1.0
    train_pairs: int = 5000
    eval_pairs: int = 400
    classic: ClassicRMConfig = dataclasses.field(default_factory=ClassicRMConfig)
    cot: SFTConfig = dataclasses.field(default_factory=_cot_sft)
    # loss weight of the CoT check's final-answer step and verdict (the line checks, mostly
    # copies, weigh 1). Weight alone did not teach the one-token comparison (see
    # docs/reward_models.md); the place-by-place marks did. Not ablated with the marks.
    cot_decision_weight: float = 8.0


def check(cfg) -> None:
    """Fails naming the keys when the RM experiment's options cannot work."""
    r, c = cfg.reward, cfg.reward_models
    if r.rm_max_input + r.rm_max_check > c.cot.row_len:
        raise ValueError(
            f"reward.rm_max_input + reward.rm_max_check = {r.rm_max_input + r.rm_max_check} "
            f"exceeds reward_models.cot.row_len={c.cot.row_len}; raise the row length"
        )
    if r.rm_max_input + r.rm_max_check > cfg.model.max_position_embeddings:
        raise ValueError(
            "reward.rm_max_input + reward.rm_max_check exceeds model.max_position_embeddings"
        )
