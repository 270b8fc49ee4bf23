"""The evaluation loop of one benchmark: generate, verify, append a row per prompt, resume.

A policy is any object with
    generate(requests [(id, model input)], k, *, key) -> [[Sample] * k] per request
    n_tokens(model input) -> int,  max_prompt_len: int
(`generation.EnginePolicy` is the rollout engine's; tests pass scripted ones). A scorer
maps [(task, K verifier inputs)] to one result per task, in order, as each is done:
{correct [K], answers [K], timeouts, errors, no_answer, ...extra fields}.

Rows go to <out_dir>/results.jsonl as soon as each prompt is scored, so a killed run loses
at most the batch being generated and a re-run scores only the prompts without a row.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from k15_jax.data.curation import append_records, pending
from k15_jax.data.loaders import Task
from k15_jax.data.templates import PromptTemplate, response_text
from k15_jax.eval.resume import RESULTS, done_ids, rows_for
from k15_jax.rewards.math import extract_answer, score_math
from k15_jax.train.metrics import log, progress

TOO_LONG = "prompt_too_long"


@dataclasses.dataclass
class Benchmark:
    """A prompt set with how to present it (template) and how to verify it (scorer).

    source: where the prompts come from (file and its sha256, suite config ...), recorded
    in eval.json and part of the settings a resumed run must match.
    """

    name: str
    tasks: list[Task]
    template: PromptTemplate
    template_name: str
    scorer: str  # "math" | "code"
    source: dict = dataclasses.field(default_factory=dict)


def math_scorer(timeout_s: float) -> Callable[[list], Iterator[dict]]:
    """The rule-based verifier of RL (`score_math`), one prompt's K answers at a time."""

    def score(items: list[tuple[Task, list[str]]]) -> Iterator[dict]:
        for task, responses in items:
            rewards, st = score_math(
                responses, [task.reference] * len(responses), timeout_s=timeout_s
            )
            yield {
                "correct": [int(r) for r in rewards],
                "answers": [extract_answer(x) for x in responses],
                "timeouts": st["timeouts"],
                "errors": st["errors"],
                "no_answer": st["no_answer"],
            }

    return score


def model_input(bench: Benchmark, task: Task, wrap: Callable[[str], str] | None = None) -> str:
    """The template's format with the problem, in the chat template if any, then the
    response prefix (it belongs to the assistant's answer)."""
    t = bench.template
    if "{prompt}" not in t.format:
        raise ValueError(f"template {bench.template_name!r} has no {{prompt}} placeholder")
    text = t.format.replace("{prompt}", task.prompt)
    return (wrap(text) if wrap else text) + t.response_prefix


def _base_row(task: Task, k: int, n_prompt: int) -> dict:
    return {
        "id": task.id,
        "band": task.band,
        "domain": task.domain,
        "reference": task.reference,
        "prompt_tokens": n_prompt,
        "skipped": None,
        "correct": [0] * k,
        "tokens": [],
        "finish": [],
        "answers": [],
        "timeouts": 0,
        "errors": 0,
        "no_answer": 0,
    }


def evaluate_benchmark(
    bench: Benchmark,
    policy,
    score,
    *,
    k: int,
    key,
    out_dir: Path,
    batch_prompts: int = 32,
    save_responses: bool = True,
    wrap: Callable[[str], str] | None = None,
) -> tuple[list[dict], dict]:
    """Scores every prompt of `bench` without a row in out_dir/results.jsonl.

    Returns (rows of all the benchmark's prompts in task order, this call's timing and
    counts). Prompts longer than policy.max_prompt_len get a row with skipped set and no
    correct answer.
    """
    if k < 1 or batch_prompts < 1:
        raise ValueError(f"samples={k} and batch_prompts={batch_prompts} must be >= 1")
    out_dir = Path(out_dir)
    todo = pending(bench.tasks, done_ids(out_dir))
    n_done = len(bench.tasks) - len(todo)
    log.info(
        "%s: %d of %d prompts already scored in %s; %d to score",
        bench.name,
        n_done,
        len(bench.tasks),
        out_dir / RESULTS,
        len(todo),
    )
    stats = collections.Counter()
    bar = progress(len(bench.tasks), f"{bench.name} (prompts)", initial=n_done)
    for start in range(0, len(todo), batch_prompts):
        batch = todo[start : start + batch_prompts]
        inputs = {t.id: model_input(bench, t, wrap) for t in batch}
        n_tok = {t.id: policy.n_tokens(inputs[t.id]) for t in batch}
        fits = [t for t in batch if n_tok[t.id] <= policy.max_prompt_len]
        t0 = time.perf_counter()
        samples = policy.generate([(t.id, inputs[t.id]) for t in fits], k, key=key) if fits else []
        stats["generate_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        verify = [[response_text(bench.template, s.text) for s in xs] for xs in samples]
        results = iter(score(list(zip(fits, verify, strict=True))))  # in the order of fits
        generated = dict(zip([t.id for t in fits], samples, strict=True))
        for t in batch:  # rows in task order, each appended once it is scored
            row = _base_row(t, k, n_tok[t.id])
            if t.id in generated:
                xs, res = generated[t.id], next(results)
                row.update(tokens=[s.tokens for s in xs], finish=[s.finish for s in xs], **res)
                if save_responses:
                    row["responses"] = [s.text for s in xs]
                stats["samples"] += k
                stats["tokens"] += sum(s.tokens for s in xs)
            else:
                row["skipped"] = TOO_LONG
            append_records(out_dir / RESULTS, [row])
            stats["prompts"] += 1
            stats["correct"] += sum(row["correct"])
            bar.update(1)
        stats["score_s"] += time.perf_counter() - t0
        bar.set_postfix(pass1=f"{stats['correct'] / max(stats['prompts'] * k, 1):.3f}")
    bar.close()
    return rows_for(out_dir, [t.id for t in bench.tasks]), dict(stats)
