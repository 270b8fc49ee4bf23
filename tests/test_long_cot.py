"""The long-CoT suite (k15_jax/data/long_cot.py) against re-derivations written here: every
line's arithmetic re-checked from its text, the answer from Python's own + and *, the
forms' markers, the verifier's verdict and the SFT mix's shares."""

import itertools
import re

import numpy as np
import pytest

from k15_jax.data.long_cot import FORMS, LongCotConfig, digit_pass, form_of
from k15_jax.data.synthetic import SyntheticConfig, SyntheticSuite, make_task
from k15_jax.rewards.math import score_math

LINE = re.compile(r"^(\d)([+*])(\d)\+(\d)=(\d\d)$")


def reread_pass(lines, a, b, family, n):
    """Re-derives a pass from its text: the lines whose arithmetic is wrong, whether the
    operand digits and carries are the right ones, and the number the lines spell."""
    wrong, value, carry = [], 0, 0
    for i, line in enumerate(lines):
        m = LINE.match(line)
        assert m, f"not a digit line: {line!r}"
        x, op, y, c, s = m.groups()
        x, y, c, s = int(x), int(y), int(c), int(s)
        assert x == a // 10**i % 10
        assert y == (b // 10**i % 10 if family == "add" else b)
        assert c == carry  # each line carries the tens digit of the line before
        if (x + y + c if op == "+" else x * y + c) != s:
            wrong.append(i)
        value += s % 10 * 10**i
        carry = s // 10
    return wrong, value + carry * 10**n


def split_passes(text):
    """The digit-line blocks of a response, in order."""
    blocks, cur = [], []
    for line in text.split("\n"):
        if LINE.match(line):
            cur.append(line)
        elif cur:
            blocks.append(cur)
            cur = []
    return blocks + ([cur] if cur else [])


@pytest.mark.parametrize("family,n", [("add", 1), ("add", 2), ("mul", 2)])
def test_digit_pass_brute_force(family, n):
    lo = 0 if n == 1 else 10 ** (n - 1)
    bs = range(lo, 10**n) if family == "add" else range(2, 10)
    for a, b in itertools.product(range(lo, 10**n), bs):
        lines, value = digit_pass(family, a, b, n)
        wrong, reread = reread_pass(lines, a, b, family, n)
        assert not wrong and reread == value == (a + b if family == "add" else a * b)


def test_slip_is_one_wrong_line_and_a_wrong_result():
    rng = np.random.default_rng(0)
    for _ in range(500):
        n = int(rng.integers(1, 6))
        a, b = (int(x) for x in rng.integers(10 ** (n - 1) if n > 1 else 0, 10**n, 2))
        slip = int(rng.integers(n))
        lines, value = digit_pass("add", a, b, n, slip=slip)
        wrong, reread = reread_pass(lines, a, b, "add", n)
        assert wrong == [slip] and reread == value and value != a + b
        assert abs(value - (a + b)) == 10**slip  # a one-unit slip in place `slip`


@pytest.mark.parametrize("band", ["add1", "add3", "add4", "mul3"])
def test_every_form_is_correct_where_it_claims(band):
    suite = SyntheticSuite(SyntheticConfig(bands=[band], sft_band_weights=None, style="long_cot"))
    rng = np.random.default_rng(1)
    seen = set()
    for task in suite.sft_tasks(300, rng):
        text = suite.demonstration(task, rng)
        form = form_of(text)
        seen.add(form)
        a, b = task.meta["operands"]
        n, family = task.meta["n_digits"], task.meta["family"]
        truth = a + b if family == "add" else a * b
        assert text.endswith(f"\\boxed{{{truth}}}")
        assert score_math([text], [task.reference])[0][0] == 1.0
        passes = split_passes(text)
        results = [int(x) for x in re.findall(r"^=(\d+)", text, re.MULTILINE)]
        rereads = [
            reread_pass(p, *((b, a) if k == 1 and family == "add" else (a, b)), family, n)
            for k, p in enumerate(passes)
        ]
        assert [v for _, v in rereads] == results or form in ("direct", "worked")
        if form == "direct":
            assert passes == []
        elif form == "worked":
            assert len(passes) == 1 and not rereads[0][0]
        elif form == "checked":
            assert len(passes) == 2 and results == [truth, truth] and text.count(" ok") == 1
            assert not rereads[0][0] and not rereads[1][0]
        else:  # corrected: a wrong first pass, caught by the check, settled by a third
            assert len(passes) == 3 and len(rereads[0][0]) == 1
            assert results[0] != truth and results[1:] == [truth, truth]
            assert " no\nagain\n" in text and text.count(" ok") == 1
    assert seen == set(FORMS)


def test_mix_shares_match_the_config():
    cfg = LongCotConfig(direct=0.5, check=0.6, slip=0.3)
    suite = SyntheticSuite(
        SyntheticConfig(bands=["add3"], sft_band_weights=None, style="long_cot", long_cot=cfg)
    )
    rng = np.random.default_rng(2)
    n = 4000
    forms = [form_of(suite.demonstration(t, rng)) for t in suite.sft_tasks(n, rng)]
    want = {
        "direct": 0.5,
        "worked": 0.5 * 0.4,
        "checked": 0.5 * 0.6 * 0.7,
        "corrected": 0.5 * 0.6 * 0.3,
    }
    for form, p in want.items():
        got = forms.count(form) / n
        assert abs(got - p) < 4.5 * np.sqrt(p * (1 - p) / n), (form, got, p)


def test_worked_style_is_round_one_suite():
    suite = SyntheticSuite(SyntheticConfig(bands=["add3"], sft_band_weights=None))
    task = make_task("add3", 472, 389)
    assert suite.demonstration(task, np.random.default_rng(0)) == (
        "2+9+0=11\n7+8+1=16\n4+3+1=08\n\\boxed{861}"
    )


def test_unknown_style_names_the_key():
    with pytest.raises(ValueError, match="data.synthetic.style"):
        SyntheticSuite(SyntheticConfig(style="longcot"))


def test_form_of_reads_the_markers():
    assert form_of("\\boxed{861}") == "direct"
    assert form_of("2+9+0=11\n\\boxed{11}") == "worked"
    assert form_of("2+9+0=11\n=11\ncheck\n9+2+0=11\n=11 ok\n\\boxed{11}") == "checked"
    assert form_of("x\ncheck\ny no\nagain\nz") == "corrected"


def test_responses_band_table_counts_forms():
    from experiments.responses import band_table

    rows = [
        ("add1", "\\boxed{4}", 1.0, 5.0),
        ("add1", "1+3+0=04\n\\boxed{4}", 1.0, 15.0),
        ("add2", "1+3+0=04\n=4\ncheck\n3+1+0=04\n=4 ok\n\\boxed{4}", 0.0, 40.0),
    ]
    t = band_table(rows)
    assert t["add1"]["accuracy"] == 1.0 and t["add1"]["mean_tokens"] == 10.0
    assert t["add1"]["forms"] == {"direct": 0.5, "worked": 0.5, "checked": 0.0, "corrected": 0.0}
    assert t["add2"]["forms"]["checked"] == 1.0 and t["add2"]["accuracy"] == 0.0
