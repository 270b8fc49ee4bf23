"""Options of the long2short experiment (report sec. 2.4), the Hydra `long2short` group.

Starting from the long-CoT policy (the main job's final params), each method yields a
policy, named as in `METHODS`:

  long      the long-CoT policy itself
  short     long, fine-tuned on short demonstrations (`short.format`): the short-CoT model
  merge     alpha * long + (1 - alpha) * short, no training
  merge_rs  shortest rejection sampling: n samples per prompt from `shortest.init`, the
            shortest correct one kept, SFT on those
  dpo       DPO on long2short pairs against the frozen `dpo.init` policy
  rl        a second RL phase from `rl.init` with the length penalty on from iteration 0
            and a much smaller `rl.max_new_tokens`

`init` of a stage names an earlier method (its policy is the starting point). Kept free of
heavy imports: k15_jax/config.py assembles it into the schema.
"""

import dataclasses

from k15_jax.rl.long2short import Long2ShortConfig
from k15_jax.train.sft import SFTConfig

METHODS = ("long", "short", "merge", "merge_rs", "dpo", "rl")  # in the order they run


@dataclasses.dataclass
class ShortConfig:
    """The short-CoT model: `format` names a SHORT_FORMATS entry (long2short/short_cot.py)."""

    format: str = "nocarry"
    sft: SFTConfig = dataclasses.field(
        default_factory=lambda: SFTConfig(steps=300, lr=2e-3, warmup_steps=20)
    )


@dataclasses.dataclass
class ShortestConfig:
    """Shortest rejection sampling: `samples` per prompt on `prompts` training prompts."""

    init: str = "merge"
    prompts: int = 256
    samples: int = 8
    sft: SFTConfig = dataclasses.field(
        default_factory=lambda: SFTConfig(steps=100, lr=5e-4, warmup_steps=10)
    )


@dataclasses.dataclass
class DPOConfig:
    """DPO long2short: pairs from `samples` responses to each of `prompts` training prompts,
    then `steps` Adam steps on minibatches of `batch_prompts` prompts with a pair."""

    init: str = "long"  # the report samples the pairs from the long-CoT model
    loss: Long2ShortConfig = dataclasses.field(default_factory=Long2ShortConfig)
    prompts: int = 256
    samples: int = 8
    batch_prompts: int = 16
    steps: int = 60
    lr: float = 2e-5  # 1e-4 collapsed held-out accuracy (91% -> 28%) on the embedded default
    max_grad_norm: float = 1.0


@dataclasses.dataclass
class RLConfig:
    """long2short RL: the main job's RL settings with these overrides."""

    init: str = "long"  # the report: a checkpoint of the standard (long-CoT) RL run
    iterations: int = 20
    max_new_tokens: int = 32  # the main job's rollout.max_new_tokens is 64
    length_penalty_weight: float = 1.0  # warm-up 0: on from the first iteration
    sampler: str = "uniform"  # every band, not the main job's hard-band curriculum


@dataclasses.dataclass
class Long2ShortRunConfig:
    """Run with trainer.job=long2short (the +exp=long2short preset).
    policy: a HF checkpoint of the long-CoT policy (a main job's `<run_dir>/final/hf`);
      None: experiments/run.py runs the RL job first and uses its final/hf.
    methods: the policies to evaluate (the ones they start from are built too).
    eval_per_band: held-out problems per band (None: trainer.eval_per_band)."""

    policy: str | None = None
    methods: list[str] = dataclasses.field(default_factory=lambda: list(METHODS))
    alpha: float = 0.5
    eval_per_band: int | None = None
    short: ShortConfig = dataclasses.field(default_factory=ShortConfig)
    shortest: ShortestConfig = dataclasses.field(default_factory=ShortestConfig)
    dpo: DPOConfig = dataclasses.field(default_factory=DPOConfig)
    rl: RLConfig = dataclasses.field(default_factory=RLConfig)


# what each method starts from (besides `long`), read from the config
def dependencies(c) -> dict[str, tuple[str, ...]]:
    return {
        "long": (),
        "short": ("long",),
        "merge": ("long", "short"),
        "merge_rs": (c.shortest.init,),
        "dpo": (c.dpo.init,),
        "rl": (c.rl.init,),
    }


def plan(c) -> list[str]:
    """Every method to build, in run order: the requested ones and what they start from."""
    deps, need = dependencies(c), set()

    def add(m):
        if m not in need:
            need.add(m)
            for d in deps[m]:
                add(d)

    for m in c.methods:
        add(m)
    return [m for m in METHODS if m in need]


def check(c, main_max_new_tokens: int) -> None:
    """Fails naming the key when the long2short options cannot work."""
    unknown = sorted(set(c.methods) - set(METHODS))
    if unknown:
        raise ValueError(f"long2short.methods has unknown {unknown}; choose from {list(METHODS)}")
    for stage in ("shortest", "dpo", "rl"):
        init = getattr(c, stage).init
        stage_method = {"shortest": "merge_rs"}.get(stage, stage)
        earlier = METHODS[: METHODS.index(stage_method)]
        if init not in earlier:
            raise ValueError(
                f"long2short.{stage}.init={init!r} must name a method that runs before "
                f"{stage_method}: one of {list(earlier)}"
            )
    from k15_jax.rl.samplers import SAMPLERS
    from k15_jax.train.long2short.short_cot import short_format

    short_format(c.short.format)
    if c.rl.sampler not in SAMPLERS:
        raise ValueError(
            f"long2short.rl.sampler={c.rl.sampler!r}; choose one of {sorted(SAMPLERS)}"
        )
    if not 0.0 <= c.alpha <= 1.0:
        raise ValueError(f"long2short.alpha={c.alpha} must lie in [0, 1]")
    if not c.rl.length_penalty_weight > 0:
        raise ValueError(
            f"long2short.rl.length_penalty_weight={c.rl.length_penalty_weight} must be > 0: "
            "long2short RL is RL with the length penalty"
        )
    if not 1 <= c.rl.max_new_tokens < main_max_new_tokens:
        raise ValueError(
            f"long2short.rl.max_new_tokens={c.rl.max_new_tokens} must be in "
            f"[1, rollout.max_new_tokens={main_max_new_tokens}): long2short RL uses a smaller "
            "maximum rollout length"
        )
    if c.shortest.samples < 1 or c.dpo.samples < 2:
        raise ValueError(
            "long2short.shortest.samples must be >= 1 and long2short.dpo.samples >= 2 "
            "(a DPO pair needs two responses to one prompt)"
        )
