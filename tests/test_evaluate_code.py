"""experiments.evaluate on code problems: answer extraction, verdict counts, and (slow) the
sandbox judging the project's own problems."""

import json

import pytest

from experiments import evaluate as cmd
from k15_jax.data.loaders import Task
from k15_jax.eval.code import CodeScorer, extract_program
from tests.test_evaluate import PROBLEMS, Stub, _cfg, _jsonl


def _solution(problem: str, wrong: bool) -> str:
    meta = json.loads((PROBLEMS / problem / "problem.json").read_text())
    names = meta["wrong"] if wrong else meta["ground_truth"]
    name = next(n for n in names if n.endswith(".py"))
    return (PROBLEMS / problem / "solutions" / name).read_text()


def test_code_answers_are_extracted_and_verdicts_counted():
    fence = "```"
    two = f"plan\n{fence}python\nprint(1)\n{fence}\nthen\n{fence}cpp\nint main(){{}}\n{fence}"
    assert extract_program(two) == ("cpp", "int main(){}\n")  # the last block
    assert extract_program(f"{fence}\nprint(2)\n{fence}") == ("python", "print(2)\n")
    assert extract_program(f"{fence}rust\nfn main() {{}}\n{fence}") is None
    assert extract_program(f"{fence}python\nprint(1)\n") is None  # cut off before the fence
    assert extract_program("no code at all") is None

    class Client:  # judges a program by its text: "AC", "WA", "TLE", "SE"; "down" raises
        calls = []

        def judge(self, language, source, cases, **limits):
            self.calls.append((language, cases, limits))
            if source.strip() == "down":
                raise ConnectionError("service down")
            return {"verdict": source.strip(), "pass_fraction": float(source.strip() == "AC")}

    meta = {
        "cases": [{"stdin": "1\n", "expected": "1\n"}],
        "time_limit_s": 1.5,
        "memory_limit_mb": 64,
        "checker": "tokens",
    }
    a, b = Task("code/a", "A", "", meta=meta), Task("code/b", "B", "", meta=meta)
    prog = lambda v: f"{fence}python\n{v}\n{fence}"
    items = [
        (a, [prog(v) for v in ("AC", "WA", "TLE", "SE", "down")] + ["none"]),
        (b, [prog("AC"), prog("AC")]),
    ]
    client = Client()
    res_a, res_b = CodeScorer(client, parallel=3).score(items)
    assert res_a["correct"] == [1, 0, 0, 0, 0, 0] and res_b["correct"] == [1, 1]
    assert (res_a["timeouts"], res_a["errors"], res_a["no_answer"]) == (1, 2, 1)
    assert res_a["verdicts"] == ["AC", "WA", "TLE", "SE", "SE", None]
    assert res_a["answers"] == ["python"] * 5 + [None]
    assert len(client.calls) == 7
    limits = {k: meta[k] for k in ("time_limit_s", "memory_limit_mb", "checker")}
    assert all(c == meta["cases"] and kw == limits for _, c, kw in client.calls)


@pytest.mark.slow
def test_code_problems_are_judged_in_the_sandbox(tmp_path):
    from k15_jax.sandbox import start_sandbox

    statements = {
        (p / "statement.md").read_text(): p.name for p in PROBLEMS.iterdir() if p.is_dir()
    }
    with start_sandbox(workers=2) as sb:
        base = [
            "benchmarks=[code]",
            f"code.sandbox_url={sb.url}",
            "code.casegen.num_cases=8",
            "samples=2",
        ]
        reports = {}
        for kind, fmt in (
            ("right", lambda name: f"Here:\n```python\n{_solution(name, False)}```\n"),
            ("wrong", lambda name: f"```py\n{_solution(name, True)}```"),
            ("none", lambda name: "I cannot solve this."),
        ):
            out = tmp_path / kind
            if kind != "right":  # the cases built by the first run, reused
                (out / "code").mkdir(parents=True)
                (out / "code" / "cases.jsonl").write_text(
                    (tmp_path / "right" / "code" / "cases.jsonl").read_text()
                )
            stub = Stub(statements, fmt=fmt)
            report = cmd.run(_cfg(*base, f"output_dir={out}"), policy=stub)
            reports[kind] = json.loads(report.read_text())["benchmarks"]["code"]
        # a random model: no program, nothing judged, the pipeline still runs
        out = tmp_path / "random"
        (out / "code").mkdir(parents=True)
        (out / "code" / "cases.jsonl").write_text((tmp_path / "right/code/cases.jsonl").read_text())
        cfg = _cfg(*base, "limit=1", "samples=1", "max_new_tokens=16", f"output_dir={out}")
        reports["random"] = json.loads(cmd.run(cfg).read_text())["benchmarks"]["code"]
    assert reports["right"]["prompts"] == 3 and reports["right"]["pass@1"] == 1.0
    assert reports["wrong"]["pass@1"] == 0.0 and reports["wrong"]["no_answer"] == 0
    assert reports["none"]["pass@1"] == 0.0 and reports["none"]["no_answer"] == 6
    assert reports["random"]["prompts"] == 1 and reports["random"]["pass@1"] == 0.0
    rows = _jsonl(tmp_path / "wrong" / "code" / "results.jsonl")
    assert all(v not in ("AC", None) for r in rows for v in r["verdicts"])
    cases = _jsonl(tmp_path / "right" / "code" / "cases.jsonl")
    assert {c["name"] for c in cases} == set(statements.values())
    assert all(len(c["cases"]) >= 1 for c in cases)
