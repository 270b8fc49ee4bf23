"""Curation rules without a model: difficulty, drop rules, format detectors, tags, balance,
the results file and its resume bookkeeping."""

import json
import re

import numpy as np
import pytest

from k15_jax.data import SyntheticConfig, SyntheticSuite, Task, load_gsm8k, load_math500
from k15_jax.data.curation import (
    CurationConfig,
    append_records,
    balance_report,
    completed_ids,
    curation_record,
    difficulty_level,
    domain_tags,
    format_balance,
    format_drop_reasons,
    is_multiple_choice,
    is_proof,
    is_true_false,
    load_curated,
    pass_rate,
    pending,
    read_records,
    solved_without_reasoning,
    write_curated,
)


def _task(prompt, reference="3", **kw):
    return Task(id=kw.pop("id", prompt[:20]), prompt=prompt, reference=reference, **kw)


# ------------------------------------------------------------------ difficulty and drop rules


def test_pass_rate_is_share_correct():
    rng = np.random.default_rng(0)
    for _ in range(20):
        r = (rng.random(10) < rng.random()).astype(np.float32)
        assert pass_rate(r) == pytest.approx(r.sum() / 10)
    with pytest.raises(ValueError, match="n_samples"):
        pass_rate([])


@pytest.mark.parametrize(
    "rate, level", [(1.0, 0), (0.8, 0), (0.7, 1), (0.5, 1), (0.4, 2), (0.2, 2), (0.1, 3), (0.0, 3)]
)
def test_difficulty_levels_with_default_edges(rate, level):
    # edges 0.8 / 0.5 / 0.2: "lower pass rate means higher difficulty"
    assert difficulty_level(rate) == level


def test_difficulty_monotone_and_edges_checked():
    rates = np.linspace(0, 1, 101)
    levels = [difficulty_level(r, [0.9, 0.6, 0.3, 0.1]) for r in rates]
    assert all(a >= b for a, b in zip(levels, levels[1:], strict=False))
    assert levels[0] == 4 and levels[-1] == 0
    with pytest.raises(ValueError, match="descending"):
        difficulty_level(0.5, [0.2, 0.8])


def test_solved_without_reasoning():
    assert not solved_without_reasoning([0.0] * 8)
    for i in range(8):
        assert solved_without_reasoning(np.eye(8)[i])


# ------------------------------------------------------------------ format detectors


@pytest.mark.parametrize(
    "prompt, reference",
    [
        ("Which is prime? (A) 4 (B) 6 (C) 7 (D) 9", "C"),
        ("Pick one.\nA. 12\nB. 14\nC. 16", "14"),
        ("Evaluate $x$. $\\textbf{(A)}\\ 1 \\qquad \\textbf{(B)}\\ 2$", "\\text{(B)}"),
        ("Which of the following numbers is a perfect square: 8, 9, 10?", "9"),
        ("Find the shape. Enter the letter of the correct option.", "\\text{(E)}"),
    ],
)
def test_multiple_choice_detected(prompt, reference):
    assert is_multiple_choice(_task(prompt, reference))


@pytest.mark.parametrize(
    "prompt, reference",
    [
        ("If P(A) = 0.3 and P(B) = 0.5 are independent, find P(A and B).", "0.15"),
        ("Let f(A) = 2 and f(B) = 3. Find f(A) + f(B).", "5"),
        ("Find the ordered pair $(a,b)$.", "(-2,1)"),
        ("What is the least positive multiple of 30 with digits 0 and 2?", "2220"),
    ],
)
def test_not_multiple_choice(prompt, reference):
    assert not is_multiple_choice(_task(prompt, reference))


def test_true_false_detection():
    assert is_true_false(_task("True or false: every prime is odd.", "False"))
    assert is_true_false(_task("Is 91 prime? Answer yes or no.", "no"))
    assert is_true_false(_task("Every even number > 2 is a sum of two primes.", "\\text{True}"))
    assert not is_true_false(_task("For how many n is it true that 2^24 is an n-th power?", "7"))
    assert not is_true_false(_task("She got 90% of the true/false questions right; how many?", "9"))


def test_proof_detection():
    assert is_proof(_task("Prove that there are infinitely many primes.", ""))
    assert is_proof(_task("Let n > 1. Show that n^5 - n is divisible by 30.", "30"))
    assert is_proof(_task("Give a proof that sqrt 2 is irrational.", "x"))
    assert is_proof(_task("Compute 2+2.", " "))  # nothing to verify
    assert not is_proof(_task("The results show that the colony doubled. How many now?", "12"))
    assert not is_proof(_task("The dough needs 2 hours to proof. When must she start?", "6"))


def test_detectors_on_real_data(shared_data):
    letter = re.compile(r"^\\text\{\(([A-F])\)\}$")
    for t in load_math500(shared_data / "math500" / "test.jsonl"):
        reasons = format_drop_reasons(t)
        # MATH-500's only multiple-choice problems are the ones answered with an option letter
        assert ("multiple_choice" in reasons) == bool(letter.match(t.reference)), t.prompt
        assert "true_false" not in reasons and "proof" not in reasons, t.prompt
    for t in load_gsm8k(shared_data / "gsm8k" / "test.jsonl"):
        assert format_drop_reasons(t) == [], t.prompt  # numeric word problems


def test_unknown_filter_named():
    with pytest.raises(ValueError, match="format_filters"):
        format_drop_reasons(_task("x"), ["essay"])


# ------------------------------------------------------------------ tags and records


def test_domain_tags(shared_data):
    math = load_math500(shared_data / "math500" / "test.jsonl")
    t = next(t for t in math if t.domain == "Counting & Probability")
    assert domain_tags(t)[0] == "domain:counting_probability"
    assert f"band:{t.band}" in domain_tags(t) and "source:math500" in domain_tags(t)
    geo = _task("A triangle has sides 3, 4, 5. What is its area?", "6")
    assert domain_tags(geo) == ["domain:geometry"]
    money = _task("Tom buys 3 apples that cost 2 dollars each. How much does he pay?", "6")
    assert domain_tags(money)[0] == "domain:arithmetic"
    assert domain_tags(_task("Zorp?", "1"))[0] == "domain:other"
    syn = SyntheticSuite(SyntheticConfig(pool_per_band=3)).train_pool()[0]
    assert domain_tags(syn)[:2] == ["domain:addition", f"band:{syn.band}"]


def test_curation_record_verdicts():
    cfg = CurationConfig()
    t = _task("Compute 17*23.", "391", band="level2", domain="Prealgebra")
    row = curation_record(
        t, cfg, sample_rewards=[1, 0, 1, 1, 0, 0, 0, 0, 0, 1], direct_rewards=[0] * 8
    )
    assert row["kept"] and row["drop_reasons"] == []
    assert (row["pass_rate"], row["difficulty"], row["n_samples"]) == (0.4, 2, 10)
    assert (row["direct_correct"], row["n_direct"]) == (0, 8)
    assert row["id"] == t.id and row["reference"] == "391" and row["tags"][0] == "domain:prealgebra"
    row = curation_record(t, cfg, sample_rewards=[1] * 10, direct_rewards=[0] * 7 + [1])
    assert not row["kept"] and row["drop_reasons"] == ["solved_without_reasoning"]
    mc = _task("Which? (A) 1 (B) 2", "B")
    row = curation_record(mc, cfg)  # dropped before any sampling
    assert not row["kept"] and row["pass_rate"] is None and "multiple_choice" in row["drop_reasons"]
    strict = CurationConfig(drop_unsolved=True)
    assert curation_record(t, strict, [0] * 10, [0] * 8)["drop_reasons"] == ["unsolved"]
    assert curation_record(t, cfg, [0] * 10, [0] * 8)["kept"]
    json.dumps(row)  # rows are plain JSON


# ------------------------------------------------------------------ results file and resume


def _scored_rows(tasks, cfg, seed=0):
    rng = np.random.default_rng(seed)
    return [
        curation_record(t, cfg, (rng.random(10) < 0.5).astype(float), np.zeros(8)) for t in tasks
    ]


def test_resume_skips_done_and_repairs_torn_tail(tmp_path):
    cfg = CurationConfig()
    tasks = SyntheticSuite(SyntheticConfig(pool_per_band=10)).train_pool()
    path = tmp_path / "out" / "results.jsonl"
    assert completed_ids(path) == set()
    rows = _scored_rows(tasks, cfg)
    append_records(path, rows[:20])
    with path.open("a") as f:  # an interrupted write
        f.write(json.dumps(rows[20])[:30])
    done = completed_ids(path)
    assert done == {t.id for t in tasks[:20]}
    todo = pending(tasks, done)
    assert [t.id for t in todo] == [t.id for t in tasks[20:]]
    append_records(path, rows[20:])
    back = read_records(path)
    assert [r["id"] for r in back] == [t.id for t in tasks]
    assert back == rows


def test_malformed_results_line_reported(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(ValueError, match="line 2"):
        completed_ids(path)


def test_write_and_load_curated(tmp_path):
    cfg = CurationConfig()
    tasks = SyntheticSuite(SyntheticConfig(pool_per_band=6)).train_pool()
    rows = _scored_rows(tasks, cfg, seed=1)
    rows[0] = curation_record(tasks[0], cfg, [1] * 10, [1] + [0] * 7)  # dropped
    results = tmp_path / "results.jsonl"
    append_records(results, rows)
    n = write_curated(tmp_path / "curated.jsonl", read_records(results))
    kept = [r for r in rows if r["kept"]]
    assert n == len(kept) == len(rows) - 1
    back = load_curated(tmp_path / "curated.jsonl")
    assert [t.id for t in back] == [r["id"] for r in kept]
    for t, r in zip(back, kept, strict=True):
        assert t.prompt == r["prompt"] and t.reference == r["reference"] and t.band == r["band"]
        assert (t.meta["pass_rate"], t.meta["difficulty"]) == (r["pass_rate"], r["difficulty"])
        assert t.meta["tags"] == r["tags"] and t.meta["source"] == "synthetic"
        assert t.meta["operands"] == r["meta"]["operands"]
    # the results file itself also loads, kept rows only
    assert [t.id for t in load_curated(results)] == [t.id for t in back]


def test_balance_report_counts():
    cfg = CurationConfig()
    tasks = [
        _task("A circle has radius 2; its area?", id="g1"),
        _task("A triangle with an angle of 30 degrees", id="g2"),
        _task("Tom buys apples that cost 2 dollars", id="a1"),
        _task("Which? (A) 1 (B) 2", "B", id="mc"),
    ]
    rows = [
        curation_record(tasks[0], cfg, [1] * 10, [0] * 8),  # difficulty 0
        curation_record(tasks[1], cfg, [0] * 10, [0] * 8),  # difficulty 3
        curation_record(tasks[2], cfg, [1] * 5 + [0] * 5, [0] * 8),  # difficulty 1
        curation_record(tasks[3], cfg),
    ]
    rep = balance_report(rows)
    assert (rep["total"], rep["kept"], rep["dropped"]) == (4, 3, 1)
    assert rep["drop_reasons"] == {"multiple_choice": 1}
    assert rep["domains"] == {"domain:geometry": 2, "domain:arithmetic": 1}
    assert rep["domain_share"]["domain:geometry"] == pytest.approx(2 / 3)
    assert rep["difficulty"] == {"0": 1, "1": 1, "3": 1}
    assert rep["imbalance"] == 2.0
    text = format_balance(rep)
    assert "domain:geometry" in text and "kept: 3" in text
