"""Structured config: the schema of every option, registered in Hydra's ConfigStore.

Each group's dataclass lives beside the code it configures; this module assembles them.
The model schema is derived from the frozen `ModelConfig` so its fields are declared once.
`validate` rejects impossible combinations before any compute, naming the keys.
"""

import dataclasses
import typing

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from k15_jax.data.synthetic import SyntheticConfig
from k15_jax.distributed import DistributedConfig
from k15_jax.model.config import ModelConfig
from k15_jax.plan.device import DeviceConfig
from k15_jax.rewards.score import VERIFIERS, RewardConfig
from k15_jax.rl import off_policy
from k15_jax.rl.losses import loss_options
from k15_jax.rl.samplers import SAMPLERS, SamplerConfig
from k15_jax.rollout.types import RolloutConfig
from k15_jax.sharding import MeshConfig
from k15_jax.train import long2short_config
from k15_jax.train.long2short_config import Long2ShortRunConfig
from k15_jax.train.reward_models_config import RewardModelsConfig
from k15_jax.train.rl_step import AlgoConfig
from k15_jax.train.sft import SFTConfig
from k15_jax.train.vision_config import VisionRunConfig
from k15_jax.train.vision_config import check as check_vision


def _schema_field(f: dataclasses.Field):
    typ = f.type
    if f.name == "rope_scaling":  # OmegaConf has no tuples: a list in the config
        typ = typing.Optional[list[float]]  # noqa: UP007, UP045 - OmegaConf wants typing.Optional
    return (f.name, typ, dataclasses.field(default=f.default))


ModelSchema = dataclasses.make_dataclass(
    "ModelSchema",
    # model.vision is set from the `vision` group (k15_jax/train/vision_config.py)
    [_schema_field(f) for f in dataclasses.fields(ModelConfig) if f.name != "vision"],
)


def model_config(schema) -> ModelConfig:
    """Hydra model node (or ModelSchema) -> the frozen, hashable ModelConfig."""
    kw = OmegaConf.to_container(schema) if OmegaConf.is_config(schema) else vars(schema)
    kw = dict(kw)
    if kw.get("rope_scaling") is not None:
        kw["rope_scaling"] = tuple(kw["rope_scaling"])
    return ModelConfig(**kw)


@dataclasses.dataclass
class DataConfig:
    suite: str = "synthetic"
    synthetic: SyntheticConfig = dataclasses.field(default_factory=SyntheticConfig)
    template: str = "compact"


JOBS = ("rl", "reward_models")


@dataclasses.dataclass
class TrainerConfig:
    name: str = "default"
    seed: int = 0
    iterations: int = 60
    eval_every: int = 10
    eval_per_band: int = 100  # held-out prompts per band (greedy decoding)
    checkpoint_every: int = 5
    keep_checkpoints: int = 2
    run_dir: str = "runs/${trainer.name}-seed${trainer.seed}"
    init_from_hf: str | None = None  # a local HF checkpoint directory instead of random init
    skip_sft: bool = False
    stop_after_iterations: int | None = None  # testing aid: stop early, as if killed
    job: str = "rl"  # rl: the main job | reward_models: train and compare the math RMs


@dataclasses.dataclass
class Config:
    model: ModelSchema = dataclasses.field(default_factory=ModelSchema)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    sft: SFTConfig = dataclasses.field(default_factory=SFTConfig)
    algo: AlgoConfig = dataclasses.field(default_factory=AlgoConfig)
    reward: RewardConfig = dataclasses.field(default_factory=RewardConfig)
    sampler: SamplerConfig = dataclasses.field(default_factory=SamplerConfig)
    rollout: RolloutConfig = dataclasses.field(default_factory=RolloutConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    device: DeviceConfig = dataclasses.field(default_factory=DeviceConfig)  # set by mesh presets
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    long2short: Long2ShortRunConfig = dataclasses.field(default_factory=Long2ShortRunConfig)
    vision: VisionRunConfig = dataclasses.field(default_factory=VisionRunConfig)
    reward_models: RewardModelsConfig = dataclasses.field(default_factory=RewardModelsConfig)


def register() -> None:
    ConfigStore.instance().store(name="schema", node=Config)


def validate(cfg) -> None:
    """Fails naming the keys when options cannot work together."""
    model = model_config(cfg.model)
    if cfg.sampler.name not in SAMPLERS:
        raise ValueError(f"sampler.name={cfg.sampler.name!r}; choose one of {sorted(SAMPLERS)}")
    loss_options(cfg.algo.loss)
    off_policy.check(cfg.algo.off_policy, cfg.algo.importance)
    if not cfg.sampler.oversample >= 1:
        raise ValueError(f"sampler.oversample={cfg.sampler.oversample} must be >= 1 (1 = off)")
    if cfg.reward.overlong_cache > 0 and not (
        cfg.reward.overlong_cache <= cfg.reward.overlong_max_len <= cfg.rollout.max_new_tokens
    ):
        raise ValueError(
            f"reward.overlong_cache={cfg.reward.overlong_cache} needs overlong_cache <= "
            f"reward.overlong_max_len={cfg.reward.overlong_max_len} <= "
            f"rollout.max_new_tokens={cfg.rollout.max_new_tokens}"
        )
    if cfg.reward.kind not in VERIFIERS:
        raise ValueError(f"reward.kind={cfg.reward.kind!r}; choose one of {sorted(VERIFIERS)}")
    if cfg.reward.kind != "rule" and not cfg.reward.rm_dir and cfg.trainer.job == "rl":
        raise ValueError(
            f"reward.kind={cfg.reward.kind} needs reward.rm_dir, the reward-model checkpoint "
            "directory written by `python -m experiments.run +exp=reward_models` (<run_dir>/rm)"
        )
    if cfg.trainer.job not in JOBS:
        raise ValueError(f"trainer.job={cfg.trainer.job!r}; choose one of {JOBS}")
    total = cfg.rollout.max_prompt_len + cfg.rollout.max_new_tokens
    if total > model.max_position_embeddings:
        raise ValueError(
            f"rollout.max_prompt_len + rollout.max_new_tokens = {total} exceeds "
            f"model.max_position_embeddings={model.max_position_embeddings}; lower one of them"
        )
    if cfg.sampler.samples_per_prompt < 1 or cfg.sampler.batch_prompts < 1:
        raise ValueError("sampler.batch_prompts and sampler.samples_per_prompt must be >= 1")
    if cfg.algo.loss.name == "mirror_descent" and cfg.sampler.samples_per_prompt < 2:
        raise ValueError(
            "algo.loss.name=mirror_descent needs sampler.samples_per_prompt >= 2 (the mean "
            "reward over K samples is its baseline)"
        )
    bands = list(cfg.data.synthetic.bands)
    if cfg.vision.enabled:
        bands += list(cfg.vision.visual.bands)
    unknown = sorted(set(cfg.sampler.hard_bands) - set(bands))
    if unknown:
        raise ValueError(f"sampler.hard_bands {unknown} are not in data.synthetic.bands {bands}")
    if cfg.long2short.enabled:
        long2short_config.check(cfg.long2short, cfg.rollout.max_new_tokens)
    sequences = cfg.sampler.batch_prompts * cfg.sampler.samples_per_prompt
    for key, m, rows, what in (
        ("sft.microbatches", cfg.sft.microbatches, cfg.sft.rows, "sft.rows"),
        ("algo.microbatches", cfg.algo.microbatches, sequences, "batch_prompts x K"),
    ):
        if m < 1 or rows % m:
            raise ValueError(f"{key}={m} must be >= 1 and divide {what} = {rows}")
    check_vision(cfg)
    if cfg.data.suite != "synthetic":
        raise ValueError(f"data.suite={cfg.data.suite!r}; only 'synthetic' is wired into run")
