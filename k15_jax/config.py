"""Structured config: the schema of every option, registered in Hydra's ConfigStore.

Each group's dataclass lives beside the code it configures; this module assembles them.
The model schema is derived from the frozen `ModelConfig` so its fields are declared once.
`validate` rejects impossible combinations before any compute, naming the keys.
"""

import dataclasses
import math
import typing

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from k15_jax.aot.topology import AotConfig, TopologyConfig
from k15_jax.data.synthetic import SyntheticConfig
from k15_jax.distributed import DistributedConfig
from k15_jax.model.config import ModelConfig
from k15_jax.model.tokenizer import CharTokenizer
from k15_jax.plan.device import DeviceConfig
from k15_jax.rewards.score import VERIFIERS, RewardConfig
from k15_jax.rl import off_policy
from k15_jax.rl.config import AlgoConfig
from k15_jax.rl.losses import loss_options
from k15_jax.rl.samplers import SAMPLERS, SamplerConfig
from k15_jax.rollout.types import RolloutConfig
from k15_jax.sharding import MeshConfig
from k15_jax.train.long2short import config as long2short_config
from k15_jax.train.long2short.config import Long2ShortRunConfig
from k15_jax.train.reward_models import config as reward_models_config
from k15_jax.train.reward_models.config import RewardModelsConfig
from k15_jax.train.sft import SFTConfig
from k15_jax.train.vision import config as vision_config
from k15_jax.train.vision.config import VisionRunConfig


def _schema_field(f: dataclasses.Field):
    typ = f.type
    if f.name == "rope_scaling":  # OmegaConf has no tuples: a list in the config
        typ = typing.Optional[list[float]]  # noqa: UP007, UP045 - OmegaConf wants typing.Optional
    return (f.name, typ, dataclasses.field(default=f.default))


ModelSchema = dataclasses.make_dataclass(
    "ModelSchema",
    # model.vision is set from the `vision` group (k15_jax/train/vision/config.py)
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
    """Prompt sources. train / eval: lists of sources, each "synthetic" (the embedded suite)
    or a file (jsonl / parquet; a path string or {path, name, weight, kind, limit}, see
    k15_jax/data/sources.py). sft: jsonl files of prompt/response rows for the SFT warm-up
    of a file run. template: the prompt template (synthetic) or chat prompt (files)."""

    train: list[typing.Any] = dataclasses.field(default_factory=lambda: ["synthetic"])
    eval: list[typing.Any] = dataclasses.field(default_factory=lambda: ["synthetic"])
    sft: list[str] = dataclasses.field(default_factory=list)
    synthetic: SyntheticConfig = dataclasses.field(default_factory=SyntheticConfig)
    template: str = "compact"


# trainer.job -> what experiments/run.py runs (its JOBS table holds the entry points)
JOBS = ("rl", "long2short", "reward_models")


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
    # rl: the main job | long2short: shorten a long-CoT policy (trains one first without
    # long2short.policy) | reward_models: train and compare the math reward models
    job: str = "rl"


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
    topology: TopologyConfig = dataclasses.field(default_factory=TopologyConfig)  # TPU presets
    aot: AotConfig = dataclasses.field(default_factory=AotConfig)  # python -m experiments.aot
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    long2short: Long2ShortRunConfig = dataclasses.field(default_factory=Long2ShortRunConfig)
    vision: VisionRunConfig = dataclasses.field(default_factory=VisionRunConfig)
    reward_models: RewardModelsConfig = dataclasses.field(default_factory=RewardModelsConfig)


def register() -> None:
    ConfigStore.instance().store(name="schema", node=Config)


def validate(cfg, tokenizer_vocab: int = CharTokenizer().vocab_size, model=None) -> None:
    """The one validation entry: every numeric option's range, then each group's own check
    once, then the combinations; fails naming the keys and the fix, before any compute.
    model: the run's ModelConfig when it does not come from cfg.model (a HF checkpoint)."""
    check_ranges(cfg)
    if cfg.trainer.job not in JOBS:
        raise ValueError(f"trainer.job={cfg.trainer.job!r}; choose one of {JOBS}")
    if cfg.sampler.name not in SAMPLERS:
        raise ValueError(f"sampler.name={cfg.sampler.name!r}; choose one of {sorted(SAMPLERS)}")
    loss_options(cfg.algo.loss)
    off_policy.check(cfg.algo.off_policy, cfg.algo.importance)
    if not cfg.sampler.oversample >= 1:
        raise ValueError(f"sampler.oversample={cfg.sampler.oversample} must be >= 1 (1 = off)")
    _check_reward(cfg)
    if model is None and not file_sources(cfg.data):  # a file run's shape comes from its
        model = model_config(cfg.model)  # checkpoint: build() passes it as `model`
    total = cfg.rollout.max_prompt_len + cfg.rollout.max_new_tokens
    if model is not None and total > model.max_position_embeddings:
        raise ValueError(
            f"rollout.max_prompt_len + rollout.max_new_tokens = {total} exceeds "
            f"model.max_position_embeddings={model.max_position_embeddings}; lower one of them"
        )
    if cfg.algo.loss.name == "mirror_descent" and cfg.sampler.samples_per_prompt < 2:
        raise ValueError(
            "algo.loss.name=mirror_descent needs sampler.samples_per_prompt >= 2 (the mean "
            "reward over K samples is its baseline)"
        )
    bands = list(cfg.data.synthetic.bands)
    if cfg.vision.enabled:
        bands += list(cfg.vision.visual.bands)
    unknown = sorted(set(cfg.sampler.hard_bands) - set(bands))
    if unknown and list(cfg.data.train) == ["synthetic"]:
        raise ValueError(
            f"sampler.hard_bands {unknown} are not in data.synthetic.bands {bands}; list bands "
            "of data.synthetic.bands, or sampler.hard_bands=[] for the last band"
        )
    sequences = cfg.sampler.batch_prompts * cfg.sampler.samples_per_prompt
    for key, m, rows, what in (
        ("sft.microbatches", cfg.sft.microbatches, cfg.sft.rows, "sft.rows"),
        ("algo.microbatches", cfg.algo.microbatches, sequences, "batch_prompts x K"),
    ):
        if rows % m:
            raise ValueError(f"{key}={m} must divide {what} = {rows}")
    vision_config.check(cfg, tokenizer_vocab)
    if cfg.trainer.job == "long2short":
        long2short_config.check(cfg.long2short, cfg.rollout.max_new_tokens)
    if cfg.trainer.job == "reward_models":
        reward_models_config.check(cfg)


def file_sources(data_cfg) -> bool:
    """True when data.train or data.eval name files (a real model's run), False for the
    embedded synthetic suite."""
    entries = list(data_cfg.train) + list(data_cfg.eval)
    return any(str(e if isinstance(e, str) else e["path"]) != "synthetic" for e in entries)


def _check_reward(cfg) -> None:
    r = cfg.reward
    if (
        r.overlong_cache > 0
        and not r.overlong_cache <= r.overlong_max_len <= cfg.rollout.max_new_tokens
    ):
        raise ValueError(
            f"reward.overlong_cache={r.overlong_cache} needs overlong_cache <= "
            f"reward.overlong_max_len={r.overlong_max_len} <= "
            f"rollout.max_new_tokens={cfg.rollout.max_new_tokens}"
        )
    if cfg.reward.kind not in VERIFIERS:
        raise ValueError(f"reward.kind={cfg.reward.kind!r}; choose one of {sorted(VERIFIERS)}")
    if cfg.reward.kind != "rule" and not cfg.reward.rm_dir and cfg.trainer.job != "reward_models":
        raise ValueError(
            f"reward.kind={cfg.reward.kind} needs reward.rm_dir, the reward-model checkpoint "
            "directory written by `python -m experiments.run +exp=reward_models` (<run_dir>/rm)"
        )


# Ranges of the numeric options, by the option's last name (the same rule wherever it
# appears: sft.lr, algo.lr, long2short.dpo.lr, ...). Every other number must be >= 0.
POSITIVE = frozenset(
    "lr tau beta temperature length_ratio max_grad_norm rope_theta rms_norm_eps layer_norm_eps "
    "timeout_s initialization_timeout vocab_size hidden_size intermediate_size num_layers "
    "num_heads num_kv_heads head_dim max_position_embeddings logits_chunk image_size "
    "patch_size num_channels rows row_len batch microbatches batch_prompts samples_per_prompt "
    "updates_per_iteration slots max_prompt_len max_new_tokens budget_tokens steps_per_sync "
    "repeat_ngram repeat_min_repeats repeat_window eval_every checkpoint_every "
    "keep_checkpoints stage_iterations pool_per_band rm_batch rm_max_input rm_max_check "
    "samples prompts".split()
)
UNIT = frozenset(
    "top_p easy_fraction floor eval_fraction correct_threshold alpha sft_image_fraction "
    "end_lr_ratio headroom".split()
)


def _numbers(node, prefix: str = ""):
    for key, value in node.items():
        path = f"{prefix}{key}"
        if OmegaConf.is_dict(value):
            yield from _numbers(value, path + ".")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield path, value


def check_ranges(cfg) -> None:
    """Every numeric option in its range: finite; > 0 for sizes, rates and counts that
    cannot be zero (POSITIVE); in [0, 1] for fractions (UNIT); mesh axes -1 (the remaining
    devices) or >= 1; >= 0 otherwise."""
    for key, value in _numbers(cfg):
        name = key.rsplit(".", 1)[-1]
        if key.startswith("mesh."):
            ok, want = value == -1 or value >= 1, "-1 (the remaining devices) or >= 1"
        elif not math.isfinite(value):
            ok, want = False, "a finite number"
        elif name in UNIT:
            ok, want = 0 <= value <= 1, "in [0, 1]"
        elif name in POSITIVE:
            ok, want = value > 0, "> 0"
        else:
            ok, want = value >= 0, ">= 0"
        if not ok:
            raise ValueError(f"{key}={value} must be {want}; set {key} to such a value")
