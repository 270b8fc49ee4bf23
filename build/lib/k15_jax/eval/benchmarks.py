"""The benchmarks by name: prompt sets, their default templates and verifiers.

math500, aime24, gsm8k: the shipped files (data.*_path), `long_cot` template, math verifier.
synthetic: the embedded suite's held-out problems per band. For a training run folder they
  are exactly the ones the run evaluated, in its trained prompt format: eval/heldout.jsonl
  (already rendered, so the template is "raw"), or, for a run still going, rebuilt from its
  config.yaml like the trainer does. Otherwise data.synthetic with `compact`.
code: sandbox problems (see `k15_jax.eval.code`), judged by /judge.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from k15_jax.data.loaders import LOADERS, Task, read_jsonl
from k15_jax.data.synthetic import FAMILIES, SyntheticConfig, SyntheticSuite, parse_band
from k15_jax.data.templates import PromptTemplate, template
from k15_jax.eval.checkpoint import CheckpointSource, run_config
from k15_jax.eval.code import CODE_TEMPLATE, code_tasks, load_code_problems
from k15_jax.eval.harness import Benchmark

RAW_TEMPLATE = PromptTemplate("{prompt}")  # prompts stored already rendered
EXTRA_TEMPLATES = {"code": CODE_TEMPLATE, "raw": RAW_TEMPLATE}


def template_named(name: str) -> PromptTemplate:
    if name in EXTRA_TEMPLATES:
        return dataclasses.replace(EXTRA_TEMPLATES[name])
    return template(name)


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclasses.dataclass
class Context:
    """What loaders may use: the command's config, the checkpoint, the benchmark's output
    folder and a SandboxClient factory (started on first call)."""

    cfg: object
    source: CheckpointSource
    out_dir: Path
    sandbox: Callable[[], object] | None = None


def _chosen(ctx: Context, name: str) -> tuple[PromptTemplate, str]:
    chosen = getattr(ctx.cfg.templates, name)
    return template_named(chosen), chosen


def _math(name: str):
    def load(ctx: Context) -> Benchmark:
        path = getattr(ctx.cfg.data, f"{name}_path")
        tasks = LOADERS[name](path)
        source = {"path": str(path), "sha256": file_sha256(path), "rows": len(tasks)}
        return Benchmark(name, tasks, *_chosen(ctx, name), "math", source)

    return load


def _band_domain(band: str) -> str:
    try:
        return FAMILIES[parse_band(band)[0]].domain
    except ValueError:
        return ""


def heldout_tasks(path: Path) -> list[Task]:
    """A run's eval/heldout.jsonl (prompt as given to the model, reference, band) as tasks
    with ids "<band>/<problem>", the suite's own ids."""
    tasks = []
    for lineno, row in read_jsonl(path, config_key="checkpoint (its eval/heldout.jsonl)"):
        missing = {"prompt", "reference", "band"} - row.keys()
        if missing:
            raise ValueError(f"row in {path} line {lineno} lacks {sorted(missing)}")
        band = str(row["band"])
        tasks.append(
            Task(
                id=f"{band}/{row['prompt'].strip()}",
                prompt=row["prompt"],
                reference=str(row["reference"]),
                band=band,
                domain=_band_domain(band),
                meta={"line": lineno},
            )
        )
    return tasks


def suite_tasks(syn: SyntheticConfig, per_band: int) -> list[Task]:
    """The first per_band held-out problems of each band, as the trainer's eval takes them."""
    # the held-out lists do not depend on the band mix; drop it so any bands list works
    suite = SyntheticSuite(dataclasses.replace(syn, sft_band_weights=None, rl_band_weights=None))
    return [t for band in suite.bands for t in suite.eval_tasks(band)[:per_band]]


def _synthetic(ctx: Context) -> Benchmark:
    from omegaconf import OmegaConf

    run = ctx.source.run_dir
    if run is not None and (run / "eval" / "heldout.jsonl").is_file():
        path = run / "eval" / "heldout.jsonl"
        source = {"heldout": str(path), "sha256": file_sha256(path)}
        return Benchmark("synthetic", heldout_tasks(path), RAW_TEMPLATE, "raw", "math", source)
    if run is not None:
        rc = run_config(run)
        syn = SyntheticConfig(**OmegaConf.to_container(rc.data.synthetic, resolve=True))
        per_band = int(rc.trainer.eval_per_band)
        name = str(rc.data.template)
        source = {
            "run_config": str(run / "config.yaml"),
            "synthetic": dataclasses.asdict(syn),
            "per_band": per_band,
        }
        return Benchmark(
            "synthetic", suite_tasks(syn, per_band), template(name), name, "math", source
        )
    syn, per_band = ctx.cfg.data.synthetic, ctx.cfg.data.synthetic_per_band
    source = {"synthetic": dataclasses.asdict(syn), "per_band": per_band}
    return Benchmark(
        "synthetic",
        suite_tasks(syn, per_band),
        *_chosen(ctx, "synthetic"),
        "math",
        source,
    )


def _code(ctx: Context) -> Benchmark:
    c = ctx.cfg.code
    rows = load_code_problems(list(c.problems), c.casegen, ctx.out_dir / "cases.jsonl", ctx.sandbox)
    source = {
        "problems": list(c.problems) or ["<k15_jax/sandbox/problems>"],
        "casegen": dataclasses.asdict(c.casegen),
        "cases_sha256": hashlib.sha256(json.dumps([r["cases"] for r in rows]).encode()).hexdigest(),
    }
    return Benchmark("code", code_tasks(rows), *_chosen(ctx, "code"), "code", source)


BENCHMARKS: dict[str, Callable[[Context], Benchmark]] = {
    "math500": _math("math500"),
    "aime24": _math("aime24"),
    "gsm8k": _math("gsm8k"),
    "synthetic": _synthetic,
    "code": _code,
}


def load_benchmark(name: str, ctx: Context, limit: int | None = None) -> Benchmark:
    """The named benchmark, first `limit` prompts, ids checked unique (resume keys on them)."""
    if name not in BENCHMARKS:
        raise ValueError(f"benchmarks: unknown {name!r}; choose from {sorted(BENCHMARKS)}")
    bench = BENCHMARKS[name](ctx)
    bench.tasks = bench.tasks[:limit]
    seen, dup = set(), []
    for t in bench.tasks:
        if t.id in seen:
            dup.append(t.id)
        seen.add(t.id)
    if dup:
        raise ValueError(
            f"benchmark {name}: prompt ids {dup[:3]} occur more than once; evaluation resumes "
            "by id, so every prompt needs a unique one"
        )
    return bench
