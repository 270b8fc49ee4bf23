"""Code benchmark: problems in the sandbox's format, programs judged by the sandbox's /judge.

Problems come from `code.problems` entries: a problem folder (problem.json, statement.md,
gen.py, solutions/ as in `k15_jax/sandbox/problems/`), a folder of such folders, or a jsonl
dataset written by `python -m k15_jax.sandbox testgen --out` (name, statement, limits,
checker, cases). A folder's test cases come from the CYaRon pipeline
(`k15_jax.sandbox.testgen.build_problem`: generator inputs, expected outputs by a
majority vote of ground-truth solutions); every valid case is used, and the cases are
cached beside the results so a resumed run judges against the same ones.

A response is right (pass@1 credit) when its last fenced code block passes every case.
Per-sample outcomes: no fenced block (or a language the sandbox does not run) counts as
no_answer; a TLE verdict as a timeout; a sandbox failure (SE, or the service erring) as
an error; anything else that is not all-AC is simply wrong.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path

from k15_jax.data.loaders import Task
from k15_jax.data.templates import FENCE, PromptTemplate
from k15_jax.sandbox.testgen import PROBLEMS_DIR, CaseGenConfig, build_problem, load_problem

CODE_FORMAT = (
    "Problem:\n{prompt}\n\n"
    "Write a complete Python 3 program that reads standard input and writes standard "
    "output. Reason step by step, then give the whole program in one ```python code block "
    "at the end.\n\nSolution:\n"
)
CODE_TEMPLATE = PromptTemplate(CODE_FORMAT)

LANGUAGES = {
    "": "python",
    "python": "python",
    "python3": "python",
    "py": "python",
    "cpp": "cpp",
    "c++": "cpp",
    "cc": "cpp",
    "cxx": "cpp",
}


@dataclasses.dataclass
class EvalCaseGenConfig(CaseGenConfig):
    """Test-case generation for evaluation: fewer cases and voters than the training set's
    pipeline (sec. 2.3.5 defaults), enough to tell right from wrong programs."""

    num_cases: int = 20
    num_submissions: int = 5
    case_agree_min: int = 3
    problem_pass_min: int = 4
    min_valid_cases: int = 10


def extract_program(response: str) -> tuple[str, str] | None:
    """(language, source) of the last fenced code block; None without a closed block or
    for a language the sandbox does not run."""
    blocks = FENCE.findall(response)
    if not blocks:
        return None
    tag, source = blocks[-1]
    lang = LANGUAGES.get(tag.lower())
    return None if lang is None or not source.strip() else (lang, source)


def _problem_dirs(entry: Path) -> list[Path]:
    if (entry / "problem.json").is_file():
        return [entry]
    return sorted(p for p in entry.iterdir() if (p / "problem.json").is_file())


def _dataset_rows(path: Path) -> list[dict]:
    from k15_jax.data.loaders import read_jsonl

    rows = []
    for lineno, row in read_jsonl(path, config_key="code.problems"):
        missing = {"name", "statement", "cases"} - row.keys()
        if missing:
            raise ValueError(
                f"code problem in {path} line {lineno} lacks {sorted(missing)}; the file must "
                "be a `python -m k15_jax.sandbox testgen --out` dataset"
            )
        rows.append({**row, "source": str(path)})
    return rows


def _built(client, folder: Path, casegen: CaseGenConfig) -> dict:
    report = build_problem(client, load_problem(folder), casegen)
    cases = [{"stdin": c["stdin"], "expected": c["expected"]} for c in report["cases"]]
    if not cases:
        raise ValueError(
            f"code problem {folder}: its generator gave no valid test case ({report['reason']});"
            " fix gen.py or the ground-truth solutions, or lower code.casegen.case_agree_min"
        )
    keys = ("name", "statement", "time_limit_s", "memory_limit_mb", "checker")
    return {
        **{k: report[k] for k in keys},
        "cases": cases,
        "source": str(folder),
        "kept": report["kept"],
        "casegen": dataclasses.asdict(casegen),
    }


def load_code_problems(
    entries: list[str], casegen: CaseGenConfig, cache: Path, client: Callable[[], object]
) -> list[dict]:
    """Problem rows (name, statement, limits, checker, cases) of every entry.

    client() returns a SandboxClient; it is only called when a folder's cases must be
    built (not yet in `cache`, a jsonl of built rows keyed by source folder and casegen).
    """
    cached = {}
    if cache.is_file():
        cached = {
            (r["source"], json.dumps(r["casegen"], sort_keys=True)): r
            for r in map(json.loads, cache.read_text().splitlines())
            if r
        }
    rows, new = [], []
    for entry in [Path(e) for e in entries] or [PROBLEMS_DIR]:
        if entry.is_file():
            rows += _dataset_rows(entry)
            continue
        if not entry.is_dir():
            raise FileNotFoundError(
                f"code.problems entry {entry} does not exist; list problem folders (with "
                "problem.json), folders of them, or testgen jsonl files"
            )
        for folder in _problem_dirs(entry):
            key = (str(folder), json.dumps(dataclasses.asdict(casegen), sort_keys=True))
            if key not in cached:
                cached[key] = _built(client(), folder, casegen)
                new.append(cached[key])
            rows.append(cached[key])
    if new:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with cache.open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in new)
    names = [r["name"] for r in rows]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"code problems {dup} occur more than once in code.problems")
    return rows


def code_tasks(rows: list[dict]) -> list[Task]:
    return [
        Task(
            id=f"code/{r['name']}",
            prompt=r["statement"],
            reference="",
            domain="code",
            meta={k: r[k] for k in ("cases", "time_limit_s", "memory_limit_mb", "checker")},
        )
        for r in rows
    ]


class CodeScorer:
    """score(items [(task, K responses)]) -> one result per item, in order, as they finish.

    Each result: correct [K], answers [K] (language or None), verdicts [K], pass_fraction
    [K], and the counts timeouts (TLE), errors (sandbox failures), no_answer.
    """

    def __init__(self, client, parallel: int = 8):
        self.client, self.parallel = client, parallel

    def _judge(self, task: Task, response: str) -> dict:
        program = extract_program(response)
        if program is None:
            return {"verdict": None, "pass_fraction": 0.0, "language": None}
        lang, source = program
        m = task.meta
        try:
            r = self.client.judge(
                lang,
                source,
                m["cases"],
                time_limit_s=m["time_limit_s"],
                memory_limit_mb=m["memory_limit_mb"],
                checker=m["checker"],
            )
        except Exception as e:  # the service failing must not stop the evaluation
            return {"verdict": "SE", "pass_fraction": 0.0, "language": lang, "error": repr(e)}
        return {"verdict": r["verdict"], "pass_fraction": r["pass_fraction"], "language": lang}

    def score(self, items: list[tuple[Task, list[str]]]) -> Iterator[dict]:
        flat = [(t, x) for t, xs in items for x in xs]
        with concurrent.futures.ThreadPoolExecutor(self.parallel) as pool:
            results = pool.map(lambda p: self._judge(*p), flat)
            for _, responses in items:
                js = [next(results) for _ in responses]
                verdicts = [j["verdict"] for j in js]
                yield {
                    "correct": [int(v == "AC") for v in verdicts],
                    "answers": [j["language"] for j in js],
                    "verdicts": verdicts,
                    "pass_fraction": [j["pass_fraction"] for j in js],
                    "timeouts": verdicts.count("TLE"),
                    "errors": verdicts.count("SE"),
                    "no_answer": verdicts.count(None),
                }
