"""Test-case generation with CYaRon and ground-truth voting (report section 2.3.5).

For each problem: the generator makes `num_cases` inputs; `num_submissions` ground-truth
submissions run on every input in the sandbox; a case is kept when at least
`case_agree_min` of them print the same answer (which becomes the expected output); the
problem is kept when no special judge is needed, the generator gave at least
`min_valid_cases` valid cases, and at least `problem_pass_min` submissions pass every kept
case. The paper's counts (1000 problems -> 614 without special judge -> 463 generators with
>= 40 valid cases -> 323 kept) are reported the same way.

A problem is a directory: statement.md, gen.py (prints one case for `python gen.py SEED`),
problem.json (time_limit_s, memory_limit_mb, special_judge, checker, ground_truth: file
names under solutions/), solutions/. Generators are project data, trusted code: they run
in a plain subprocess of this interpreter (which has cyaron), not in the sandbox.
"""

import collections
import concurrent.futures
import dataclasses
import json
import random
import subprocess
import sys
from pathlib import Path

from k15_jax.sandbox.client import SandboxClient
from k15_jax.sandbox.verdict import normalize

PROBLEMS_DIR = Path(__file__).with_name("problems")
EXT_LANGUAGE = {".py": "python", ".cpp": "cpp", ".cc": "cpp"}

# Runs a generator script once per seed in one interpreter (cyaron is imported once).
GEN_DRIVER = """
import contextlib, io, json, random, runpy, sys, traceback
path, seeds = sys.argv[1], sys.argv[2:]
out = []
for s in seeds:
    buf = io.StringIO()
    sys.argv = [path, s]
    random.seed(int(s))
    try:
        with contextlib.redirect_stdout(buf):
            runpy.run_path(path, run_name="__main__")
        out.append(buf.getvalue())
    except BaseException:
        traceback.print_exc()
        out.append(None)
sys.stdout.write(json.dumps(out))
"""


@dataclasses.dataclass
class CaseGenConfig:
    """Counts of section 2.3.5; smaller values make quick runs."""

    num_cases: int = 50
    num_submissions: int = 10  # ground-truth submissions sampled per problem
    case_agree_min: int = 7  # a case is valid when this many submissions agree
    problem_pass_min: int = 9  # a problem is kept when this many pass all valid cases
    min_valid_cases: int = 40  # a generator must give at least this many valid cases
    first_seed: int = 0  # case i uses generator seed first_seed + i
    sample_seed: int = 0  # picks the submissions when a problem has more than needed
    generator_timeout_s: float = 120.0
    parallel: int = 10  # judge requests in flight at once


@dataclasses.dataclass
class Problem:
    name: str
    path: Path
    statement: str
    generator: Path
    ground_truth: list[str]
    time_limit_s: float = 2.0
    memory_limit_mb: int = 256
    special_judge: bool = False
    checker: str = "lines"


def load_problem(path: Path) -> Problem:
    path = Path(path)
    meta_file = path / "problem.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{meta_file} missing; a problem directory needs problem.json")
    meta = json.loads(meta_file.read_text())
    for name in meta["ground_truth"]:
        if not (path / "solutions" / name).is_file():
            raise FileNotFoundError(f"{meta_file}: ground_truth lists {name}, not in solutions/")
    return Problem(
        name=path.name,
        path=path,
        statement=(path / "statement.md").read_text(),
        generator=path / "gen.py",
        ground_truth=list(meta["ground_truth"]),
        time_limit_s=meta.get("time_limit_s", 2.0),
        memory_limit_mb=meta.get("memory_limit_mb", 256),
        special_judge=meta.get("special_judge", False),
        checker=meta.get("checker", "lines"),
    )


def example_problems() -> list[Problem]:
    return [load_problem(p) for p in sorted(PROBLEMS_DIR.iterdir()) if p.is_dir()]


def generate_inputs(problem: Problem, seeds: list[int], timeout_s: float) -> list[str | None]:
    """One input per seed (None where the generator raised)."""
    proc = subprocess.run(
        [sys.executable, "-c", GEN_DRIVER, str(problem.generator), *map(str, seeds)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=problem.path,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"generator {problem.generator} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def vote(outputs: list[list[str | None]], agree_min: int) -> list[str | None]:
    """outputs[s][c]: normalized output of submission s on case c (None: not a clean run).

    Returns per case the answer at least agree_min submissions gave, else None (invalid).
    """
    expected = []
    for c in range(len(outputs[0]) if outputs else 0):
        votes = collections.Counter(o[c] for o in outputs if o[c] is not None)
        top = votes.most_common(1)
        expected.append(top[0][0] if top and top[0][1] >= agree_min else None)
    return expected


def passes(outputs: list[list[str | None]], expected: list[str | None]) -> list[bool]:
    """Per submission: does it give the expected answer on every valid case?"""
    return [all(e is None or o[c] == e for c, e in enumerate(expected)) for o in outputs]


def pick_submissions(problem: Problem, cfg: CaseGenConfig, names: list[str] | None) -> list[str]:
    names = list(names or problem.ground_truth)
    if 2 * cfg.case_agree_min <= cfg.num_submissions:
        raise ValueError(
            f"case_agree_min={cfg.case_agree_min} is not a majority of num_submissions="
            f"{cfg.num_submissions}; two answers could both win a case"
        )
    if len(names) < cfg.num_submissions:
        raise ValueError(
            f"problem {problem.name} has {len(names)} ground-truth submissions, "
            f"num_submissions={cfg.num_submissions}; add solutions or lower num_submissions"
        )
    return sorted(random.Random(cfg.sample_seed).sample(names, cfg.num_submissions))


def run_submissions(client, problem, names, inputs, parallel) -> tuple[list, list]:
    """(normalized outputs [S][C], raw outputs [S][C]) of each submission on each input."""

    def one(name):
        path = problem.path / "solutions" / name
        lang = EXT_LANGUAGE[path.suffix]
        res = client.judge(
            lang,
            path.read_text(),
            [{"stdin": x, "expected": None} for x in inputs],
            time_limit_s=problem.time_limit_s,
            memory_limit_mb=problem.memory_limit_mb,
            return_output=True,
        )
        raw = [c.get("stdout") if c["verdict"] == "OK" else None for c in res["cases"]]
        return [None if r is None else normalize(r, problem.checker) for r in raw], raw

    if not inputs:
        return [[] for _ in names], [[] for _ in names]
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        results = list(pool.map(one, names))
    return [r[0] for r in results], [r[1] for r in results]


def build_problem(
    client: SandboxClient,
    problem: Problem,
    cfg: CaseGenConfig,
    submissions: list[str] | None = None,
) -> dict:
    """Runs the pipeline on one problem; returns its report, with the kept cases."""
    report = {
        "name": problem.name,
        "special_judge": problem.special_judge,
        "statement": problem.statement,
        "time_limit_s": problem.time_limit_s,
        "memory_limit_mb": problem.memory_limit_mb,
        "checker": problem.checker,
    }
    if problem.special_judge:
        return {**report, "kept": False, "reason": "needs a special judge"}
    names = pick_submissions(problem, cfg, submissions)
    seeds = list(range(cfg.first_seed, cfg.first_seed + cfg.num_cases))
    inputs = generate_inputs(problem, seeds, cfg.generator_timeout_s)
    runnable = [i for i, x in enumerate(inputs) if x is not None]
    norm, raw = run_submissions(client, problem, names, [inputs[i] for i in runnable], cfg.parallel)
    expected = vote(norm, cfg.case_agree_min)
    ok = passes(norm, expected)
    valid = [k for k, e in enumerate(expected) if e is not None]
    cases = []
    for k in valid:  # expected output: the raw stdout of the first agreeing submission
        s = next(s for s in range(len(names)) if norm[s][k] == expected[k])
        cases.append(
            {"seed": seeds[runnable[k]], "stdin": inputs[runnable[k]], "expected": raw[s][k]}
        )
    gen_ok = len(valid) >= cfg.min_valid_cases
    n_pass = sum(ok)
    kept = gen_ok and n_pass >= cfg.problem_pass_min
    reason = (
        "kept"
        if kept
        else f"only {len(valid)} valid cases (< {cfg.min_valid_cases})"
        if not gen_ok
        else f"only {n_pass} of {len(names)} submissions pass (< {cfg.problem_pass_min})"
    )
    return {
        **report,
        "generated": len(inputs),
        "generator_errors": len(inputs) - len(runnable),
        "valid": len(valid),
        "valid_seeds": [c["seed"] for c in cases],
        "generator_ok": gen_ok,
        "submissions": dict(zip(names, ok, strict=True)),
        "submissions_passing": n_pass,
        "kept": kept,
        "reason": reason,
        "cases": cases,
    }


def run_pipeline(client: SandboxClient, problems: list[Problem], cfg: CaseGenConfig) -> dict:
    """Report over all problems, counted the way the paper does."""
    per = [build_problem(client, p, cfg) for p in problems]
    no_sj = sum(not r["special_judge"] for r in per)
    gen_ok = sum(r.get("generator_ok", False) for r in per)
    kept = sum(r["kept"] for r in per)
    return {
        "problems": len(per),
        "no_special_judge": no_sj,
        "generators_with_min_valid": gen_ok,
        "kept": kept,
        "summary": (
            f"{len(per)} problems, {no_sj} need no special judge, {gen_ok} generators produced "
            f"at least {cfg.min_valid_cases} valid cases, {kept} problems kept"
        ),
        "per_problem": per,
    }


def write_dataset(report: dict, path: Path) -> int:
    """Kept problems as JSON lines (name, statement, limits, checker, cases); returns the count."""
    keys = ("name", "statement", "time_limit_s", "memory_limit_mb", "checker")
    n = 0
    with open(path, "w") as f:
        for r in report["per_problem"]:
            if r["kept"]:
                cases = [{"stdin": c["stdin"], "expected": c["expected"]} for c in r["cases"]]
                f.write(json.dumps({**{k: r[k] for k in keys}, "cases": cases}) + "\n")
                n += 1
    return n
