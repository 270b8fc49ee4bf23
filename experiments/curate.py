"""Prompt-set curation (k1.5 report, sec. 2.1) with a model: pass rates, drops, tags, balance.

    python -m experiments.curate [source=synthetic|math500|gsm8k|aime24|jsonl] [key=value ...]

For each prompt of the set: drop it if it is multiple-choice, true/false or proof-style;
else sample `curation.n_samples` long-CoT answers at `curation.sample_temperature` (the pass
rate gives the difficulty) and `curation.n_direct` direct answers (dropped if any is right).
Prompts go through the rollout engine `batch_prompts` at a time; each batch's rows are
appended to <output_dir>/results.jsonl as soon as they are scored, so a re-run of the same
command skips every prompt already there. At the end the kept rows go to curated.jsonl
(read it with `k15_jax.data.curation.load_curated`) and the balance report to balance.json.
The last line printed is the curated file's path.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import hydra
import jax
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from k15_jax.config import ModelSchema, model_config
from k15_jax.data.curation import (
    CurationConfig,
    append_records,
    balance_report,
    completed_ids,
    curation_record,
    format_balance,
    format_drop_reasons,
    pending,
    read_records,
    write_curated,
)
from k15_jax.data.loaders import (
    BenchmarkDataConfig,
    load_aime24,
    load_gsm8k,
    load_jsonl_tasks,
    load_math500,
)
from k15_jax.data.synthetic import SyntheticConfig, SyntheticSuite
from k15_jax.data.templates import render, response_text, template
from k15_jax.eval.checkpoint import load_hf_policy, random_char_policy
from k15_jax.eval.generation import complete, rollout_config
from k15_jax.eval.resume import check_settings
from k15_jax.rewards.math import score_math
from k15_jax.train.metrics import log, progress, setup_logging

TOO_LONG = "prompt_too_long"  # drop reason: the model input exceeds generation.max_prompt_len


@dataclasses.dataclass
class CurateDataConfig(BenchmarkDataConfig):
    """Where each source's prompts come from (the benchmark paths, a jsonl, the suite)."""

    jsonl_path: str | None = None  # source=jsonl: rows with id, prompt, reference[, band, domain]
    synthetic: SyntheticConfig = dataclasses.field(default_factory=SyntheticConfig)


@dataclasses.dataclass
class GenerationConfig:
    """Decoding of both probes (their temperatures are curation.*_temperature).

    Each probe is compiled into its own engine; slots and steps_per_sync change speed only.
    """

    max_prompt_len: int = 16  # longer model inputs are dropped as prompt_too_long
    max_new_tokens: int = 80  # long-CoT answers
    direct_max_new_tokens: int = 8  # direct answers
    top_p: float = 1.0
    slots: int = 64
    steps_per_sync: int = 16
    stop_on_repeat: bool = True
    repeat_ngram: int = 10
    repeat_min_repeats: int = 5
    repeat_window: int = 80


@dataclasses.dataclass
class CurateConfig:
    """The `experiments.curate` command (configs/curate.yaml)."""

    source: str = "synthetic"  # a key of SOURCES
    limit: int | None = None  # only the first `limit` prompts of the set
    output_dir: str = "runs/curate/${source}"
    model_path: str | None = None  # local HF checkpoint dir; None: random `model` + char tokenizer
    tokenizer_path: str | None = None  # dir or tokenizer.json; None: model_path
    model: ModelSchema = dataclasses.field(default_factory=ModelSchema)
    template: str | None = None  # long-CoT probe; None: by source (DEFAULT_TEMPLATES)
    direct_template: str | None = None  # direct probe; None: by source
    seed: int = 0
    batch_prompts: int = 32  # prompts per engine call, progress step and append
    save_responses: bool = False  # keep the sampled texts in results.jsonl
    verifier_timeout_s: float = 5.0
    data: CurateDataConfig = dataclasses.field(default_factory=CurateDataConfig)
    curation: CurationConfig = dataclasses.field(default_factory=CurationConfig)
    generation: GenerationConfig = dataclasses.field(default_factory=GenerationConfig)


def register() -> None:
    ConfigStore.instance().store(name="curate_schema", node=CurateConfig)


def _jsonl(cfg: CurateConfig):
    if not cfg.data.jsonl_path:
        raise ValueError("source=jsonl reads data.jsonl_path; set data.jsonl_path=<file.jsonl>")
    return load_jsonl_tasks(cfg.data.jsonl_path, config_key="data.jsonl_path")


def _synthetic(cfg: CurateConfig):
    # the pool does not depend on the band mix weights; drop them so any bands list works
    syn = dataclasses.replace(cfg.data.synthetic, sft_band_weights=None, rl_band_weights=None)
    return SyntheticSuite(syn).train_pool()


SOURCES: dict[str, Callable] = {
    "synthetic": _synthetic,
    "math500": lambda cfg: load_math500(cfg.data.math500_path),
    "gsm8k": lambda cfg: load_gsm8k(cfg.data.gsm8k_path),
    "aime24": lambda cfg: load_aime24(cfg.data.aime24_path),
    "jsonl": _jsonl,
}
# (long-CoT, direct) templates; the suite's char-level models are trained on "compact"
DEFAULT_TEMPLATES = {"synthetic": ("compact", "compact_direct")}
BENCHMARK_TEMPLATES = ("long_cot", "direct")


def templates(cfg: CurateConfig) -> tuple[str, str]:
    sample, direct = DEFAULT_TEMPLATES.get(cfg.source, BENCHMARK_TEMPLATES)
    return cfg.template or sample, cfg.direct_template or direct


def load_tasks(cfg: CurateConfig) -> list:
    """The prompt set (first `limit`), with ids checked unique (resume keys on them)."""
    if cfg.source not in SOURCES:
        raise ValueError(f"source={cfg.source!r}; choose one of {sorted(SOURCES)}")
    tasks = SOURCES[cfg.source](cfg)[: cfg.limit]
    dup = [i for i, n in collections.Counter(t.id for t in tasks).items() if n > 1]
    if dup:
        raise ValueError(
            f"prompt ids {dup[:3]} occur more than once in source={cfg.source}; curation "
            "resumes by id, so give every row a unique 'id'"
        )
    return tasks


# ----------------------------------------------------------------------------- the model


@dataclasses.dataclass
class Generator:
    """A model behind the two probes.

    generate[probe](requests [(id, model input)], k) -> k completions per request, in order;
    probe is "sample" (long CoT) or "direct". n_tokens(text): length of the model input.
    """

    generate: dict[str, Callable[[list[tuple[str, str]], int], list[list[str]]]]
    n_tokens: Callable[[str], int]
    max_prompt_len: int
    stats: collections.Counter = dataclasses.field(default_factory=collections.Counter)


def _model_and_tokenizer(cfg: CurateConfig):
    """(ModelConfig, params, tokenizer): a local HF checkpoint, or the random tiny model."""
    if cfg.model_path is None:
        return random_char_policy(model_config(cfg.model), cfg.seed)
    return load_hf_policy(cfg.model_path, cfg.tokenizer_path)


_SHARED_ROLLOUT_FIELDS = (
    "top_p", "max_prompt_len", "slots", "steps_per_sync",
    "stop_on_repeat", "repeat_ngram", "repeat_min_repeats", "repeat_window",
)  # fmt: skip


def make_generator(cfg: CurateConfig) -> Generator:
    """Two engines sharing one set of params: long-CoT sampling and the direct probe."""
    from k15_jax.rollout.engine import make_engine
    from k15_jax.rollout.types import RolloutConfig

    g, c = cfg.generation, cfg.curation
    model, params, tok = _model_and_tokenizer(cfg)
    longest = g.max_prompt_len + max(g.max_new_tokens, g.direct_max_new_tokens)
    if longest > model.max_position_embeddings:
        raise ValueError(
            f"generation.max_prompt_len + max_new_tokens = {longest} exceeds the model's "
            f"max_position_embeddings={model.max_position_embeddings}; lower generation.* "
            "(or raise model.max_position_embeddings for the random model)"
        )
    eos = tok.eos_id if tok.eos_id is not None else model.eos_token_id
    bos = tok.bos_id is not None

    shared = {f: getattr(g, f) for f in _SHARED_ROLLOUT_FIELDS}

    def rollout_cfg(temperature: float, max_new: int) -> RolloutConfig:
        return rollout_config(temperature, max_new_tokens=max_new, **shared)

    def engine_fn(engine, key) -> Callable:
        def generate(requests: list[tuple[str, str]], k: int) -> list[list[str]]:
            # keys derive from (key, request id, sample): a prompt's answers do not depend
            # on its batch, so a resumed run scores it as an uninterrupted one
            out = complete(engine, tok, requests, k, key, bos=bos, stats=stats)
            return [[s.text for s in xs] for xs in out]

        return generate

    stats, key = collections.Counter(), jax.random.key(cfg.seed)
    sample = make_engine(
        model, rollout_cfg(c.sample_temperature, g.max_new_tokens), eos_id=eos,
        pad_id=tok.pad_id, params=params,
    )  # fmt: skip
    fns = {"sample": engine_fn(sample, key)}
    if c.n_direct > 0:
        direct = make_engine(
            model, rollout_cfg(c.direct_temperature, g.direct_max_new_tokens), eos_id=eos,
            pad_id=tok.pad_id,
        )  # fmt: skip
        direct.params = sample.params  # same weights, other compiled sampling options
        fns["direct"] = engine_fn(direct, jax.random.fold_in(key, 1))
    return Generator(fns, lambda text: len(tok.encode(text, bos=bos)), g.max_prompt_len, stats)


# ----------------------------------------------------------------------------- scoring


def score_batch(tasks: list, gen: Generator, cfg: CurateConfig) -> tuple[list[dict], dict]:
    """Result rows of a batch, in order, and the verifier's counts.

    Format-dropped and too-long prompts get a row without sampling; the others get
    n_samples long-CoT and n_direct direct answers, all verified in one `score_math` call.
    """
    c = cfg.curation
    t_sample, t_direct = (template(name) for name in templates(cfg))
    reasons, todo = {}, []
    for t in tasks:
        reasons[t.id] = format_drop_reasons(t, c.format_filters)
        inputs = [render(t_sample, t.prompt)] + ([render(t_direct, t.prompt)] * (c.n_direct > 0))
        if not reasons[t.id] and max(map(gen.n_tokens, inputs)) > gen.max_prompt_len:
            reasons[t.id] = [TOO_LONG]
        if not reasons[t.id]:
            todo.append(t)
    out, texts, refs = {}, [], []
    for probe, tpl, k in (("sample", t_sample, c.n_samples), ("direct", t_direct, c.n_direct)):
        requests = [(t.id, render(tpl, t.prompt)) for t in todo]
        out[probe] = gen.generate[probe](requests, k) if todo and k else [[] for _ in todo]
        texts += [response_text(tpl, x) for xs in out[probe] for x in xs]
        refs += [t.reference for t in todo for _ in range(k)]
    correct, stats = score_math(texts, refs, timeout_s=cfg.verifier_timeout_s)
    n_s, n_d = len(todo) * c.n_samples, c.n_direct
    scored = {}
    for i, t in enumerate(todo):
        row = curation_record(
            t, c,
            sample_rewards=correct[i * c.n_samples : (i + 1) * c.n_samples],
            direct_rewards=correct[n_s + i * n_d : n_s + (i + 1) * n_d] if n_d > 0 else None,
            format_reasons=[],
        )  # fmt: skip
        if cfg.save_responses:
            row["responses"] = {"sample": out["sample"][i], "direct": out["direct"][i]}
        scored[t.id] = row
    rows = [scored.get(t.id) or curation_record(t, c, format_reasons=reasons[t.id]) for t in tasks]
    return rows, stats


def run_settings(cfg: CurateConfig) -> dict:
    """What a prompt's row depends on: a run may only resume rows made with the same."""
    d = dataclasses.asdict(cfg)
    data = d["data"]["synthetic"] if cfg.source == "synthetic" else d["data"]
    return {
        "source": cfg.source,
        "data": data,
        "model_path": cfg.model_path,
        "model": None if cfg.model_path else d["model"],
        "templates": list(templates(cfg)),
        "seed": cfg.seed,
        "verifier_timeout_s": cfg.verifier_timeout_s,
        "curation": d["curation"],
        "generation": {
            k: v for k, v in d["generation"].items() if k not in ("slots", "steps_per_sync")
        },
    }


def curate(
    tasks: list, gen: Generator | None, cfg: CurateConfig, out_dir: Path
) -> tuple[list, dict]:
    """Scores every pending prompt (appending rows per batch), then writes curated.jsonl
    and balance.json from all rows of `tasks`. Returns (rows in task order, report)."""
    out_dir = Path(out_dir)
    if cfg.curation.n_samples < 1 or cfg.curation.n_direct < 0 or cfg.batch_prompts < 1:
        raise ValueError("set curation.n_samples >= 1, curation.n_direct >= 0, batch_prompts >= 1")
    check_settings(out_dir, run_settings(cfg))
    results = out_dir / "results.jsonl"
    todo = pending(tasks, completed_ids(results))
    log.info("%d of %d prompts already scored in %s; %d to score",
             len(tasks) - len(todo), len(tasks), results, len(todo))  # fmt: skip
    bar = progress(len(tasks), "curate (prompts)", initial=len(tasks) - len(todo))
    verifier = collections.Counter()
    t0 = time.perf_counter()
    for start in range(0, len(todo), cfg.batch_prompts):
        rows, stats = score_batch(todo[start : start + cfg.batch_prompts], gen, cfg)
        append_records(results, rows)
        verifier.update({k: stats[k] for k in ("correct", "timeouts", "errors") if k in stats})
        bar.update(len(rows))
        bar.set_postfix(correct=verifier["correct"])
    bar.close()
    if todo:
        dt = time.perf_counter() - t0
        log.info("scored %d prompts in %.1f s: %d sequences, %d tokens (%.0f tokens/s); "
                 "verifier timeouts %d, errors %d", len(todo), dt, gen.stats["sequences"],
                 gen.stats["tokens"], gen.stats["tokens"] / max(dt, 1e-9),
                 verifier["timeouts"], verifier["errors"])  # fmt: skip
    by_id = {r["id"]: r for r in read_records(results)}
    rows = [by_id[t.id] for t in tasks]
    kept = [{k: v for k, v in r.items() if k != "responses"} for r in rows]
    write_curated(out_dir / "curated.jsonl", kept)
    report = balance_report(rows)
    (out_dir / "balance.json").write_text(json.dumps(report, indent=2))
    return rows, report


def run(cfg) -> Path:
    """The command: load the prompt set, build the model, curate. Returns curated.jsonl."""
    setup_logging()
    if OmegaConf.is_config(cfg):
        cfg = OmegaConf.to_object(cfg)
    tasks = load_tasks(cfg)  # before the model: a bad path or line fails at once
    out_dir = Path(cfg.output_dir)
    check_settings(out_dir, run_settings(cfg))
    done = completed_ids(out_dir / "results.jsonl")
    gen = make_generator(cfg) if pending(tasks, done) else None  # all scored: no model needed
    _, report = curate(tasks, gen, cfg, out_dir)
    print(format_balance(report), flush=True)
    return out_dir / "curated.jsonl"


register()


@hydra.main(config_path="../configs", config_name="curate", version_base=None)
def main(cfg) -> None:
    print(run(cfg), flush=True)


if __name__ == "__main__":
    main()
