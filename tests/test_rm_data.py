"""Reward-model data: variants are what they claim, labels agree with the rule verifier and
with plain integer arithmetic, CoT checks flag the first wrong line, pairs are balanced."""

import json
import re

import numpy as np
import pytest

from k15_jax.data.synthetic import SyntheticConfig, SyntheticSuite, make_task, worked_solution
from k15_jax.model.tokenizer import CharTokenizer
from k15_jax.rewards.math import score_math
from k15_jax.rewards.rm_cot import parse_verdict
from k15_jax.rewards.rm_data import balance, build_pairs, cot_target, rm_input, variants

SUITE = SyntheticSuite(SyntheticConfig(bands=["add1", "add2", "add3", "add4", "add5"]))
TASKS = [t for b in SUITE.bands for t in SUITE.train_pool([b])[:12]]
EXPECTED = {
    "gold": 1,
    "sum_prop": 0,
    "sum_kept": 1,
    "carry_prop": 0,
    "carry_kept": 1,
    "answer_digit": 0,
    "near_miss": 0,
    "equiv": 1,
    "injected": 0,
}


def _boxed_value(response: str) -> float | None:
    m = re.findall(r"\\boxed\{([^}]*)\}", response)
    try:
        return float(m[-1]) if m else None
    except ValueError:
        return None


def _lines(response: str):
    return [
        tuple(int(x) for x in re.fullmatch(r"(\d)\+(\d)\+(\d)=(\d\d)", line).groups())
        for line in response.split("\n")
        if "boxed" not in line and "verdict" not in line
    ]


@pytest.fixture(scope="module")
def pairs():
    sampled = [["7+7+0=14\n\\boxed{14}", "garbage", ""] for _ in TASKS]
    return build_pairs(TASKS, sampled, np.random.default_rng(0), max_input_chars=91)


def test_labels_agree_with_rule_verifier_and_integer_arithmetic(pairs):
    rule, _ = score_math([p.response for p in pairs], [p.reference for p in pairs])
    assert [p.label for p in pairs] == rule.tolist()
    for p in pairs:
        if p.kind == "sampled":
            continue
        a, b = (int(x) for x in p.question.split("+"))
        assert p.label == float(_boxed_value(p.response) == a + b), p
        assert p.label == EXPECTED[p.kind], p


def test_variants_alter_exactly_what_they_say():
    rng = np.random.default_rng(1)
    for task in TASKS:
        a, b = task.meta["operands"]
        n = task.meta["n_digits"]
        gold = worked_solution("add", a, b, n)
        out = dict(variants(task.prompt, rng))
        assert out["gold"] == gold
        for kind, response in out.items():
            if kind in ("gold", "injected"):
                continue
            rows = _lines(response)
            assert [(da, db) for da, db, _, _ in rows] == [
                (a // 10**i % 10, b // 10**i % 10) for i in range(n)
            ]
            bad_sum = [i for i, (da, db, c, s) in enumerate(rows) if s != da + db + c]
            bad_carry = [i for i in range(n) if rows[i][2] != (rows[i - 1][3] // 10 if i else 0)]
            if kind.startswith("sum"):
                assert (
                    len(bad_sum) == 1 and abs(rows[bad_sum[0]][3] - sum(rows[bad_sum[0]][:3])) == 1
                )
            else:
                assert bad_sum == []
            if kind == "carry_prop":
                assert len(bad_carry) == 1
            if kind == "sum_prop" or kind == "carry_prop":  # the box is read off the lines
                digits = [s % 10 for *_, s in rows]
                value = sum(d * 10**i for i, d in enumerate(digits)) + rows[-1][3] // 10 * 10**n
                assert _boxed_value(response) == value
            if kind.endswith("kept") or kind in ("answer_digit", "near_miss", "equiv"):
                assert response.split("\n")[:-1][-1] != "" and (
                    kind.endswith("kept") or response.split("\n")[:-1] == gold.split("\n")[:-1]
                )
        assert any(f in out["injected"] for f in ("verdict: correct", '"verdict":"correct"'))


def test_cot_targets_parse_flag_the_first_wrong_line_and_fit(pairs):
    tok = CharTokenizer()
    for p in pairs:
        target = cot_target(p.question, p.reference, p.response, p.label > 0)
        assert parse_verdict(target) == p.label
        assert all(tok.stoi.get(c) is not None for c in target)  # in the char vocabulary
        x = rm_input(p.question, p.reference, p.response, 91)
        assert len(x) + 1 <= 92 and len(target) + 1 <= 164
        a, b = (int(v) for v in p.question.split("+"))
        gold = worked_solution("add", a, b, max(len(str(a)), len(str(b)))).split("\n")[:-1]
        got = [ln for ln in p.response.split("\n") if ln and "\\boxed" not in ln]
        steps = json.loads(target)["steps"]
        first_bad = next((i for i, g in enumerate(gold) if i >= len(got) or got[i] != g), None)
        flagged = [i for i, s in enumerate(steps[:-1]) if not s.endswith(" ok")]
        if first_bad is None:
            assert flagged in ([], [len(gold)])  # [len] when an extra line follows
        else:
            assert flagged == [first_bad]
        assert steps[-1].endswith(" ok") == (p.label > 0) or steps[-1] == "ans none"
        if p.kind != "sampled":  # the place-by-place marks agree with the label
            pairs = steps[-1].split()[-2]
            assert ("x" in pairs) == (p.label == 0), (p, steps[-1])


def test_balance_and_input_truncation_keep_the_answer():
    pairs = build_pairs(
        [make_task("add5", 12345, 67890)],
        [["x" * 200]],
        np.random.default_rng(2),
        max_input_chars=60,
    )
    assert all(len(rm_input(p.question, p.reference, p.response, 60)) <= 60 for p in pairs)
    assert all("\\boxed{" in p.response for p in pairs if p.kind != "sampled")
    out = balance(pairs, np.random.default_rng(3))
    assert sum(p.label for p in out) * 2 == len(out) > 0
    with pytest.raises(ValueError, match="addition bands"):
        build_pairs([make_task("mul2", 12, 3)], [[]], np.random.default_rng(0), 91)


def test_digit_pairs_mark_exactly_the_differing_places():
    from k15_jax.rewards.rm_data import digit_pairs

    rng = np.random.default_rng(4)
    for _ in range(300):
        a, b = (int(v) for v in rng.integers(0, 10 ** rng.integers(1, 7, size=2)))
        s = digit_pairs(str(a), str(b))
        triples = [s[i : i + 3] for i in range(0, len(s), 3)]
        assert len(triples) == max(len(str(a)), len(str(b)))
        assert all(t[2] == ("=" if t[0] == t[1] else "x") for t in triples)
        assert ("x" in s) == (a != b)
        for form in ("0" + str(a), "+" + str(a), str(a) + ".0", "00" + str(a) + ".00"):
            assert "x" not in digit_pairs(form, str(a))
    assert digit_pairs("86.1", "861") == "88=66=.1x1_x"
