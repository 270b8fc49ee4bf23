"""Rewards by task kind (report sec. 2.1, 2.3.5): math rows through the configured verifier
(rule-based math-verify, or a reward model), code rows through the code sandbox.

A group is one task, so its K rows share a kind. `route_by_kind` wraps the verifier for one
batch: the same (questions, responses, references) -> (v, stats) signature that
`rewards.score.score` calls, with code rows judged by `eval.code.CodeScorer` (pass/fail: every
test case accepted). A program that hangs or crashes, or a sandbox failure, scores 0 and is
counted (`code_timeouts`, `errors`); it never stops the iteration.
"""

import dataclasses
from pathlib import Path

import numpy as np

from k15_jax.rewards.score import Verifier


def task_kind(task) -> str:
    """ "code" for a task with test cases (meta["cases"]), "math" otherwise."""
    return task.meta.get("kind", "code" if "cases" in task.meta else "math")


def route_by_kind(base: Verifier, code_scorer, tasks: list) -> Verifier:
    """A verifier for one batch whose N rows belong to `tasks` (N entries)."""

    def verify(questions, responses, references):
        kinds = [task_kind(t) for t in tasks]
        v = np.zeros(len(responses), np.float32)
        stats: dict = {}
        math = [i for i, k in enumerate(kinds) if k != "code"]
        code = [i for i, k in enumerate(kinds) if k == "code"]
        if math:
            pick = lambda xs: None if xs is None else [xs[i] for i in math]
            vm, stats = base(pick(questions), pick(responses), pick(references))
            v[math] = np.asarray(vm, np.float32)
            stats = dict(stats)
        if code:
            if code_scorer is None:
                raise ValueError("code tasks need the sandbox: set reward.sandbox=start (or a URL)")
            results = list(code_scorer.score([(tasks[i], [responses[i]]) for i in code]))
            v[code] = [r["correct"][0] for r in results]
            stats["code_timeouts"] = sum(r["timeouts"] for r in results)
            stats["errors"] = stats.get("errors", 0) + sum(r["errors"] for r in results)
            stats["no_answer"] = stats.get("no_answer", 0) + sum(r["no_answer"] for r in results)
            stats["code_rows"] = len(code)
        return v, stats

    return verify


def code_scorer(reward_cfg):
    """The sandbox judge of code tasks: a service started for this run (stopped when the
    process exits) or reached at reward.sandbox (a URL)."""
    import atexit
    import contextlib

    from k15_jax.eval.code import CodeScorer
    from k15_jax.sandbox.client import SandboxClient, start_sandbox

    if reward_cfg.sandbox != "start":
        return CodeScorer(SandboxClient(reward_cfg.sandbox), reward_cfg.sandbox_workers)
    stack = contextlib.ExitStack()
    client = stack.enter_context(start_sandbox(workers=reward_cfg.sandbox_workers))
    atexit.register(stack.close)
    return CodeScorer(client, reward_cfg.sandbox_workers)


def code_cases(tasks: list, client, cache: Path) -> list:
    """Code tasks in the judge's form (meta cases, limits, checker): inline `tests` as they
    are; a `problem_dir` without tests gets its cases from the CYaRon pipeline once (cached
    in `cache`, so a resumed run judges against the same cases)."""
    from k15_jax.eval.code import EvalCaseGenConfig, load_code_problems

    out = []
    for t in tasks:
        if task_kind(t) != "code" or "cases" in t.meta:
            out.append(t)
            continue
        m = dict(t.meta)
        if m.get("tests"):
            m.update(cases=m["tests"], time_limit_s=2.0, memory_limit_mb=256, checker="lines")
        else:
            row = load_code_problems(
                [m["problem_dir"]], EvalCaseGenConfig(), cache, lambda: client
            )[0]
            m.update({k: row[k] for k in ("cases", "time_limit_s", "memory_limit_mb", "checker")})
        out.append(dataclasses.replace(t, meta=m))
    return out
