"""Benchmark evaluation (k1.5 report, sec. 3.1): the report's table for any checkpoint.

    python -m experiments.evaluate checkpoint=PATH benchmarks=[math500,aime24,gsm8k] \\
        samples=K temperature=T max_new_tokens=N [limit=L] [key=value ...]

checkpoint: a local HF folder, or a training run folder (its final/hf, else its newest
orbax checkpoint); see `k15_jax.eval.checkpoint`. Benchmarks: math500, aime24, gsm8k,
synthetic (a run's own held-out prompts in its trained format) and code (sandbox problems
judged by /judge); see `k15_jax.eval.benchmarks`. Answers come from the RL rollout engine
(continuous batching) and are scored by the RL verifier, so numbers compare with training.

Each benchmark's rows are appended to <output_dir>/<benchmark>/results.jsonl as prompts are
scored; re-running the same command skips every prompt already there (and refuses to mix in
rows made with other weights, sampling, template or data). At the end eval.json (figures,
settings, checkpoint hash, package versions) and eval.md (the table) are written; the
table is printed and the last line printed is eval.json's path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import platform
import subprocess
import sys
import time
import zlib
from pathlib import Path

import hydra
import jax
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from k15_jax.config import model_config
from k15_jax.data.curation import pending
from k15_jax.eval.benchmarks import Context, load_benchmark
from k15_jax.eval.checkpoint import (
    CheckpointSource,
    chat_wrapper,
    eos_ids,
    fingerprint,
    load_hf_policy,
    load_run_policy,
    random_char_policy,
    resolve_checkpoint,
    run_config,
)
from k15_jax.eval.code import CodeScorer
from k15_jax.eval.config import EvaluateConfig
from k15_jax.eval.generation import EnginePolicy
from k15_jax.eval.harness import Benchmark, evaluate_benchmark, math_scorer
from k15_jax.eval.metrics import benchmark_summary
from k15_jax.eval.resume import check_settings, done_ids
from k15_jax.eval.table import markdown
from k15_jax.train.metrics import log, setup_logging

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (  # recorded in eval.json
    "jax jaxlib flax numpy orbax-checkpoint math-verify sympy tokenizers safetensors "
    "transformers hydra-core cyaron"
).split()


SPEED_ONLY = ("slots", "steps_per_sync")  # change no answer: a run may resume with others


def checkpoint_name(path: str | None) -> str:
    """A folder name for a checkpoint's results: the run or model folder's name."""
    if not path:
        return "random"
    p = Path(path).absolute()
    if p.name == "hf" and p.parent.name == "final":
        p = p.parents[1]
    return p.name


def register() -> None:
    ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)
    OmegaConf.register_new_resolver("eval_name", checkpoint_name, replace=True)


# ----------------------------------------------------------------------------- records


def sampling_settings(cfg: EvaluateConfig) -> dict:
    return {
        "samples": cfg.samples,
        "temperature": cfg.temperature,
        "greedy": cfg.temperature <= 0,
        "max_new_tokens": cfg.max_new_tokens,
        **dataclasses.asdict(cfg.generation),
    }


def template_record(bench: Benchmark) -> dict:
    t = bench.template
    return {"name": bench.template_name, "format": t.format, "response_prefix": t.response_prefix}


def describe_model(cfg: EvaluateConfig, src: CheckpointSource) -> dict:
    """The model config, read without loading weights."""
    from k15_jax.model.hf import read_hf_config

    if src.kind == "hf":
        model = read_hf_config(src.hf_dir)
    elif src.kind == "orbax":
        model = model_config(run_config(src.run_dir).model)
    else:
        model = model_config(cfg.model)
    return dataclasses.asdict(model)


def bench_settings(cfg: EvaluateConfig, bench: Benchmark, ckpt: dict, model: dict) -> dict:
    """What a benchmark's rows depend on: a run may only resume rows made with the same."""
    judge = (
        {"verifier_timeout_s": cfg.verifier_timeout_s}
        if bench.scorer == "math"
        else {"casegen": dataclasses.asdict(cfg.code.casegen)}
    )
    return {
        "benchmark": bench.name,
        "source": bench.source,
        "template": template_record(bench),
        "chat": cfg.chat,
        "checkpoint": {
            "sha256": ckpt.get("sha256"),
            "random_init_seed": ckpt.get("random_init_seed"),
            "model": model if ckpt.get("sha256") is None else None,
        },
        "tokenizer_path": cfg.tokenizer_path,
        "sampling": {k: v for k, v in sampling_settings(cfg).items() if k not in SPEED_ONLY},
        "seed": cfg.seed,
        "scoring": judge,
    }


def versions() -> dict:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    out["jax_backend"] = jax.default_backend()
    out["devices"] = [str(d) for d in jax.devices()]
    return out


def git_state() -> dict:
    """k15_jax's commit, and whether the tree differs from it (read-only git calls)."""

    def git(*args):
        r = subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return r.stdout.strip() if r.returncode == 0 else None

    try:
        commit = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": None if status is None else bool(status)}


# ----------------------------------------------------------------------------- the model


def build_policy(cfg: EvaluateConfig, src: CheckpointSource, bos: bool | None = None):
    """The checkpoint's weights behind the rollout engine. bos: see EnginePolicy."""
    if src.kind == "hf":
        model, params, tok = load_hf_policy(
            src.hf_dir, cfg.tokenizer_path, path_key="checkpoint", tokenizer_key="tokenizer_path"
        )
    elif src.kind == "orbax":
        model, params, tok = load_run_policy(src)
    else:
        model, params, tok = random_char_policy(model_config(cfg.model), cfg.seed)
    gen = dataclasses.asdict(cfg.generation)  # RolloutConfig fields
    rollout = {"max_new_tokens": cfg.max_new_tokens, **gen}
    del rollout["max_prompt_len"]  # EnginePolicy buckets it
    return EnginePolicy(
        model,
        params,
        tok,
        temperature=cfg.temperature,
        rollout=rollout,
        eos_ids=eos_ids(model, tok, src.hf_dir),
        max_prompt_len=gen["max_prompt_len"],
        bos=bos,
    )


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _check_sampling(cfg: EvaluateConfig) -> None:
    if cfg.samples < 1:
        raise ValueError(f"samples={cfg.samples} must be >= 1")
    if cfg.temperature <= 0 and cfg.samples > 1:
        log.warning(
            "greedy decoding (temperature<=0) gives %d identical samples per prompt; "
            "set samples=1 or temperature>0",
            cfg.samples,
        )


def checkpoint_record(cfg: EvaluateConfig, src: CheckpointSource) -> dict:
    """eval.json's "checkpoint": where it came from and its fingerprint (logged too)."""
    log.info(
        "checkpoint %s: %s%s",
        cfg.checkpoint,
        src.kind,
        f" (step {src.step_dir.name})" if src.step_dir else "",
    )
    return {
        "path": cfg.checkpoint,
        "kind": src.kind,
        "hf_dir": str(src.hf_dir) if src.hf_dir else None,
        "run_dir": str(src.run_dir) if src.run_dir else None,
        **fingerprint(src, cfg.seed),
    }


def build_report(cfg, ckpt: dict, model: dict, benches, summaries: dict, timing: dict, wall_s):
    """eval.json's contents: scores, settings, provenance and this run's timing."""
    gen_s = sum(t.get("generate_s", 0.0) for t in timing.values())
    tokens = sum(t.get("tokens", 0) for t in timing.values())
    return {
        "checkpoint": ckpt,
        "model": model,
        "benchmarks": summaries,
        "sampling": sampling_settings(cfg),
        "seed": cfg.seed,
        "templates": {b.name: template_record(b) for b in benches},
        "chat": cfg.chat,
        "data": {b.name: b.source for b in benches},
        "verifier": {"math_timeout_s": cfg.verifier_timeout_s, "code": "sandbox /judge"},
        "limit": cfg.limit,
        "versions": versions(),
        "git": git_state(),
        "command": " ".join(sys.argv),
        "this_run": {
            "wall_s": wall_s,
            "generate_s": gen_s,
            "tokens": tokens,
            "tokens_per_s": tokens / gen_s if gen_s else None,
            "by_benchmark": timing,
        },
    }


def run(cfg, policy=None) -> Path:
    """The command. policy: a stand-in for the checkpoint's (tests); None builds the
    engine policy when some prompt still needs answers. Returns eval.json's path."""
    setup_logging()
    if OmegaConf.is_config(cfg):
        cfg = OmegaConf.to_object(cfg)
    _check_sampling(cfg)
    src = resolve_checkpoint(cfg.checkpoint)
    ckpt = checkpoint_record(cfg, src)
    model = describe_model(cfg, src)
    out = Path(cfg.output_dir)
    t_start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        clients = []

        def sandbox():  # started on first use: only when code cases or answers need it
            if not clients:
                from k15_jax.sandbox import SandboxClient, start_sandbox

                c = cfg.code
                clients.append(
                    SandboxClient(c.sandbox_url)
                    if c.sandbox_url
                    else stack.enter_context(
                        start_sandbox(port=0, workers=c.workers, insecure=c.insecure)
                    )
                )
            return clients[0]

        benches = []  # all loaded and checked before any generation: bad paths fail at once
        for name in cfg.benchmarks:
            bench = load_benchmark(name, Context(cfg, src, out / name, sandbox), cfg.limit)
            check_settings(out / name, bench_settings(cfg, bench, ckpt, model))
            benches.append(bench)
        wrap, bos = chat_wrapper(src.hf_dir, cfg.tokenizer_path) if cfg.chat else (None, None)
        if policy is None and any(pending(b.tasks, done_ids(out / b.name)) for b in benches):
            policy = build_policy(cfg, src, bos)
        key = jax.random.key(cfg.seed)
        summaries, timing = {}, {}
        for bench in benches:
            if bench.scorer == "math":
                score = math_scorer(cfg.verifier_timeout_s)
            else:
                score = lambda items: CodeScorer(sandbox(), cfg.code.parallel).score(items)  # noqa: B023
            rows, stats = evaluate_benchmark(
                bench,
                policy,
                score,
                k=cfg.samples,
                out_dir=out / bench.name,
                key=jax.random.fold_in(key, zlib.crc32(bench.name.encode())),
                batch_prompts=cfg.batch_prompts,
                save_responses=cfg.save_responses,
                wrap=wrap,
            )
            summaries[bench.name] = benchmark_summary(rows)
            timing[bench.name] = stats
    wall_s = time.perf_counter() - t_start
    report = build_report(cfg, ckpt, model, benches, summaries, timing, wall_s)
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "eval.json", json.dumps(report, indent=2))
    table = markdown(report)
    _write(out / "eval.md", table)
    print(table, flush=True)
    return out / "eval.json"


register()


@hydra.main(config_path="../configs", config_name="evaluate", version_base=None)
def main(cfg) -> None:
    print(run(cfg), flush=True)


if __name__ == "__main__":
    main()
