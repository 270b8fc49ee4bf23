"""Options of `python -m experiments.evaluate` (configs/evaluate.yaml holds the defaults used)."""

from __future__ import annotations

import dataclasses

from k15_jax.config import ModelSchema
from k15_jax.data.loaders import BenchmarkDataConfig
from k15_jax.data.synthetic import SyntheticConfig
from k15_jax.eval.code import EvalCaseGenConfig


@dataclasses.dataclass
class EvalDataConfig(BenchmarkDataConfig):
    """The math benchmark files, and the synthetic suite used when the checkpoint is not a
    training run (a run's own held-out prompts are used for a run folder)."""

    synthetic: SyntheticConfig = dataclasses.field(default_factory=SyntheticConfig)
    synthetic_per_band: int = 100  # held-out prompts per band, as trainer.eval_per_band


@dataclasses.dataclass
class EvalTemplatesConfig:
    """Prompt template per benchmark (k15_jax.data.templates names, plus "code" and "raw").
    synthetic applies when the checkpoint is not a run folder (a run's own format wins)."""

    math500: str = "long_cot"
    aime24: str = "long_cot"
    gsm8k: str = "long_cot"
    synthetic: str = "compact"
    code: str = "code"


@dataclasses.dataclass
class EvalGenerationConfig:
    """Decoding besides samples/temperature/max_new_tokens; slots/steps_per_sync change
    speed only. max_prompt_len None: as long as the model allows (max_position_embeddings
    - max_new_tokens); longer model inputs are skipped and count as failed."""

    top_p: float = 1.0
    top_k: int = 0
    max_prompt_len: int | None = None
    slots: int = 64
    steps_per_sync: int = 16
    stop_on_repeat: bool = True
    repeat_ngram: int = 10
    repeat_min_repeats: int = 5
    repeat_window: int = 80


@dataclasses.dataclass
class CodeConfig:
    """The code benchmark: problems and the sandbox that judges them."""

    problems: list[str] = dataclasses.field(default_factory=list)  # []: the shipped examples
    sandbox_url: str | None = None  # a running service; None: start one for this run
    workers: int = 0  # sandbox slots when started here (0: one per CPU)
    insecure: bool = False  # let the started service run WITHOUT isolation (no bubblewrap)
    parallel: int = 8  # /judge requests in flight
    casegen: EvalCaseGenConfig = dataclasses.field(default_factory=EvalCaseGenConfig)


@dataclasses.dataclass
class EvaluateConfig:
    """The `experiments.evaluate` command."""

    checkpoint: str | None = None  # HF folder or training run folder; None: random model
    tokenizer_path: str | None = None  # HF checkpoints: dir or tokenizer.json; None: checkpoint
    model: ModelSchema = dataclasses.field(default_factory=ModelSchema)  # random model only
    benchmarks: list[str] = dataclasses.field(
        default_factory=lambda: ["math500", "aime24", "gsm8k"]
    )
    samples: int = 4  # K answers per prompt
    temperature: float = 1.0  # <= 0: greedy
    max_new_tokens: int = 1024
    seed: int = 0
    limit: int | None = None  # only the first `limit` prompts of each benchmark
    templates: EvalTemplatesConfig = dataclasses.field(default_factory=EvalTemplatesConfig)
    chat: bool = False  # wrap prompts in the tokenizer's chat template (instruct models)
    batch_prompts: int = 32  # prompts per engine call
    save_responses: bool = True  # keep the sampled texts in the results
    verifier_timeout_s: float = 5.0
    output_dir: str = "runs/eval/default"
    data: EvalDataConfig = dataclasses.field(default_factory=EvalDataConfig)
    generation: EvalGenerationConfig = dataclasses.field(default_factory=EvalGenerationConfig)
    code: CodeConfig = dataclasses.field(default_factory=CodeConfig)
