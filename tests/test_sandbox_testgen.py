"""CYaRon test-case pipeline on the shipped example problems (issue acceptance 3).

Expected outputs, case validity and which submissions are wrong are re-derived here from the
generated inputs with independent reference solutions, never taken from the pipeline.
"""

import dataclasses
import json
import math

import pytest

from k15_jax.sandbox import start_sandbox
from k15_jax.sandbox.testgen import (
    PROBLEMS_DIR,
    CaseGenConfig,
    build_problem,
    example_problems,
    generate_inputs,
    load_problem,
    passes,
    run_pipeline,
    vote,
    write_dataset,
)

N_CASES = 6
FAST = CaseGenConfig(num_cases=N_CASES, min_valid_cases=math.ceil(0.8 * N_CASES))


def parse(stdin: str) -> list[int]:
    tokens = stdin.split()
    return [int(t) for t in tokens[1 : 1 + int(tokens[0])]]


def max_subarray(a: list[int]) -> int:
    return max(sum(a[lo:hi]) for lo in range(len(a)) for hi in range(lo + 1, len(a) + 1))


REFERENCE = {"sum_array": sum, "max_subarray": max_subarray, "array_minimum": min}


@pytest.fixture(scope="module")
def sandbox():
    with start_sandbox(workers=2) as client:
        yield client


@pytest.fixture(scope="module")
def report(sandbox):
    problems = example_problems()
    special = dataclasses.replace(problems[0], name="needs_checker", special_judge=True)
    return run_pipeline(sandbox, [*problems, special], FAST)


def by_name(report, name):
    return next(r for r in report["per_problem"] if r["name"] == name)


def test_vote_and_passes_match_brute_force():
    import random

    rng = random.Random(1)
    for _ in range(200):
        s, c = rng.randint(1, 10), rng.randint(1, 6)
        outs = [[rng.choice(["a", "b", None]) for _ in range(c)] for _ in range(s)]
        k = rng.randint(s // 2 + 1, s)  # a strict majority, as 7 of 10: at most one winner
        exp = vote(outs, k)
        for j in range(c):
            col = [o[j] for o in outs]
            winners = [v for v in ("a", "b") if col.count(v) >= k]
            assert exp[j] == (max(winners, key=col.count) if winners else None)
        for o, ok in zip(outs, passes(outs, exp), strict=True):
            assert ok == all(e is None or o[j] == e for j, e in enumerate(exp))


def test_generators_are_deterministic_and_cyaron_based():
    for p in example_problems():
        assert "cyaron" in p.generator.read_text()
        a = generate_inputs(p, [3, 4], 60)
        assert a == generate_inputs(p, [3, 4], 60) and a[0] != a[1]


def test_clean_problem_kept_with_reference_answers(report):
    r = by_name(report, "sum_array")
    assert r["kept"] and r["valid"] == N_CASES and r["submissions_passing"] == 10
    for case in r["cases"]:
        assert int(case["expected"]) == sum(parse(case["stdin"]))


def test_invalid_generator_cases_dropped(report):
    r = by_name(report, "array_minimum")
    # The statement needs n >= 1; the generator's n = 0 cases must be exactly the dropped ones.
    p = load_problem(PROBLEMS_DIR / "array_minimum")
    inputs = generate_inputs(p, list(range(N_CASES)), 60)
    valid_by_statement = [s for s, x in enumerate(inputs) if int(x.split()[0]) >= 1]
    assert r["valid_seeds"] == valid_by_statement
    assert 0 < len(valid_by_statement) < N_CASES
    for case in r["cases"]:
        assert int(case["expected"]) == min(parse(case["stdin"]))
    assert r["submissions_passing"] == 10  # all correct on the valid cases ...
    assert not r["generator_ok"] and not r["kept"]  # ... but too few valid cases


def test_wrong_ground_truth_submission_detected(report):
    r = by_name(report, "max_subarray")
    inputs = [c["stdin"] for c in r["cases"]]
    assert r["valid"] == N_CASES  # 9 of 10 agree on every case
    for case in r["cases"]:
        assert int(case["expected"]) == max_subarray(parse(case["stdin"]))
    all_negative = [max(parse(x)) < 0 for x in inputs]
    assert any(all_negative)
    failing = [name for name, ok in r["submissions"].items() if not ok]
    assert failing == ["gt_wrong_empty_allowed.py"]
    assert r["submissions_passing"] == 9 and r["kept"]


def test_two_wrong_submissions_reject_problem(sandbox):
    p = load_problem(PROBLEMS_DIR / "max_subarray")
    correct = [n for n in p.ground_truth if not n.startswith("gt_wrong")][:8]
    names = [*correct, "gt_wrong_empty_allowed.py", "wrong_sum_positive.py"]
    r = build_problem(sandbox, p, FAST, submissions=names)
    failing = sorted(n for n, ok in r["submissions"].items() if not ok)
    assert failing == ["gt_wrong_empty_allowed.py", "wrong_sum_positive.py"]
    assert r["submissions_passing"] == 8 and not r["kept"]


def test_report_counts_like_the_paper(report, tmp_path):
    assert report["problems"] == 4
    assert report["no_special_judge"] == 3
    assert report["generators_with_min_valid"] == 2
    assert report["kept"] == 2
    assert by_name(report, "needs_checker")["reason"] == "needs a special judge"
    out = tmp_path / "kept.jsonl"
    assert write_dataset(report, out) == 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["name"] for r in rows) == ["max_subarray", "sum_array"]
    for row in rows:
        for case in row["cases"]:
            assert int(case["expected"]) == REFERENCE[row["name"]](parse(case["stdin"]))


def test_shipped_wrong_solutions_fail_the_kept_cases(sandbox, report):
    """The extra wrong solutions of each problem get WA on the pipeline's own kept cases."""
    wrong = {"sum_array": ["wrong_int32.cpp", "wrong_skip_first.py"]}
    wrong["max_subarray"] = ["wrong_sum_positive.py"]
    wrong["array_minimum"] = ["wrong_max.py"]
    for name, files in wrong.items():
        r = by_name(report, name)
        cases = [{"stdin": c["stdin"], "expected": c["expected"]} for c in r["cases"]]
        for f in files:
            path = PROBLEMS_DIR / name / "solutions" / f
            lang = "cpp" if f.endswith(".cpp") else "python"
            j = sandbox.judge(lang, path.read_text(), cases)
            truth = [
                REFERENCE[name](parse(c["stdin"])) == REFERENCE_WRONG[f](parse(c["stdin"]))
                for c in cases
            ]
            assert [c["verdict"] == "AC" for c in j["cases"]] == truth
            assert not all(truth)


def wrap32(x: int) -> int:
    return (x + 2**31) % 2**32 - 2**31


REFERENCE_WRONG = {
    "wrong_int32.cpp": lambda a: wrap32(sum(a)),
    "wrong_skip_first.py": lambda a: sum(a[1:]),
    "wrong_sum_positive.py": lambda a: sum(x for x in a if x > 0) if max(a) > 0 else max(a),
    "wrong_max.py": max,
}


@pytest.mark.slow
def test_full_size_pipeline(sandbox):
    """50 cases, 10 submissions, 7/10 agreement, 9/10 pass, >= 40 valid: the paper's numbers."""
    full = CaseGenConfig()
    rep = run_pipeline(sandbox, example_problems(), full)
    assert (rep["problems"], rep["no_special_judge"]) == (3, 3)
    minimum = by_name(rep, "array_minimum")
    inputs = generate_inputs(load_problem(PROBLEMS_DIR / "array_minimum"), list(range(50)), 60)
    assert minimum["valid_seeds"] == [s for s, x in enumerate(inputs) if int(x.split()[0]) >= 1]
    assert minimum["valid"] < 40 and not minimum["kept"]
    assert by_name(rep, "sum_array")["valid"] == 50 and by_name(rep, "sum_array")["kept"]
    assert by_name(rep, "max_subarray")["submissions_passing"] == 9
    assert rep["kept"] == 2
