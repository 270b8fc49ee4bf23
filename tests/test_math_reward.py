"""Math verifier: extraction, equivalence on real MATH-500 answers, time limits, accounting."""

import json
import re
import signal
import threading

import numpy as np
import pytest

import k15_jax.rewards.math as math_mod
from k15_jax.rewards import extract_answer, math_reward, score_math

PATHOLOGICAL = "\\boxed{2^{10^{10}}}"  # sympy's numeric comparison runs ~90 s on it


@pytest.fixture
def math500_answers(shared_data):
    path = shared_data / "math500" / "test.jsonl"
    return [json.loads(line)["answer"] for line in path.open()]


def _boxed(xs):
    return [f"\\boxed{{{x}}}" for x in xs]


# ------------------------------------------------------------------ extraction


@pytest.mark.parametrize(
    "response, expected",
    [
        ("so \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("\\boxed{\\frac{\\sqrt{3}}{2}} done", "\\frac{\\sqrt{3}}{2}"),  # nested braces
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped set braces do not count
        ("first \\boxed{1} then \\boxed{2}", "2"),  # last one wins
        ("\\boxed{1}\nAnswer: 7", "7"),  # Answer line after the box wins
        ("Answer: 7\nlater \\boxed{9}", "9"),
        ("Answer: $\\boxed{4}$.", "4"),  # box inside the Answer line
        ("steps\n#### 1,000", "1,000"),
        ("**Final Answer:** 18 dollars.", "18"),
        ("#### $42", "42"),
        ("\\fbox{5}", "5"),
        ("no answer here", None),
        ("\\boxed{unclosed", None),
        ("\\boxed{" * 3 + "5}", "5"),  # only the innermost box closes
        ("\\boxed{}", None),
    ],
)
def test_extract_answer(response, expected):
    assert extract_answer(response) == expected


@pytest.mark.parametrize(
    "response, reference",
    [
        ("\\boxed{14/3}", "\\frac{14}{3}"),
        ("\\boxed{a^2-4}", "(a+2)(a-2)"),
        ("\\boxed{(3, pi/2)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("#### 18", "18"),
        ("Answer: 0.5", "\\frac12"),
    ],
)
def test_issue_examples_accepted(response, reference):
    assert math_reward(response, reference) == 1.0


@pytest.mark.parametrize(
    "response, reference",
    [
        ("\\boxed{14/5}", "\\frac{14}{3}"),
        ("\\boxed{a^2+4}", "(a+2)(a-2)"),
        ("\\boxed{(pi/2, 3)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("I think it is 18.", "18"),  # no explicit final answer
    ],
)
def test_wrong_or_missing_rejected(response, reference):
    assert math_reward(response, reference) == 0.0


# ------------------------------------------------------------------ MATH-500


def test_every_math500_reference_accepted_echoed(math500_answers):
    rewards, stats = score_math(_boxed(math500_answers), math500_answers)
    bad = [a for a, r in zip(math500_answers, rewards, strict=True) if r != 1.0]
    assert not bad, f"{len(bad)} echoed references rejected: {bad[:5]}"
    assert stats["correct"] == len(math500_answers) == 500


# Equivalent rewrites, each applied where it is valid (None: not applicable).
def _slash(a):
    m = re.fullmatch(r"(-?)\\[dt]?frac\{?(\d+)\}?\{?(\d+)\}?", a.strip())
    return f"{m[1]}{m[2]}/{m[3]}" if m else None


def _dfrac(a):
    return a.replace("\\frac", "\\dfrac") if "\\frac" in a else None


def _no_left_right(a):
    return re.sub(r"\\(left|right)\s*", "", a) if "\\left" in a else None


def _spaces(a):
    if re.search(r"\d,\s*(\\!)?\s*\d{3}", a):  # thousands separators are not list commas
        return None
    b = re.sub(r"\s*([,=+])\s*", r" \1 ", a)
    return b if b != a else None


def _dot_zero(a):
    return a + ".0" if re.fullmatch(r"-?\d+", a) else None


def _thousands(a):
    return f"{int(a):,}" if re.fullmatch(r"\d{4,}", a) else None


def _plain_text(a):
    m = re.fullmatch(r"\\text\{([A-Za-z]+)\}", a)
    return m[1] if m else None


def _plain_pi(a):
    b = re.sub(r"\\frac\{\\pi\}\{(\d+)\}", r"pi/\1", a)
    return b if b != a else None


def _dollars(a):
    return f"${a}$"


REWRITES = [_slash, _dfrac, _no_left_right, _spaces, _dot_zero, _thousands, _plain_text, _plain_pi]


@pytest.mark.parametrize("rewrite", REWRITES + [_dollars], ids=lambda f: f.__name__)
def test_rewritten_equivalents_accepted(math500_answers, rewrite):
    pairs = [(rewrite(a), a) for a in math500_answers if rewrite(a) is not None]
    assert pairs, "rewrite applies to no MATH-500 answer"
    rewards, _ = score_math(_boxed([p for p, _ in pairs]), [a for _, a in pairs])
    bad = [p for p, r in zip(pairs, rewards, strict=True) if r != 1.0]
    assert not bad, f"equivalent forms rejected: {bad[:5]}"


def test_sample_has_a_rewritten_form(math500_answers):
    """The built sample: every answer some non-trivial rewrite applies to (>= 1 accepted)."""
    sample = [a for a in math500_answers if any(f(a) is not None for f in REWRITES)]
    assert len(sample) >= 150
    forms = [(f(a), a) for a in sample for f in REWRITES if f(a) is not None]
    rewards, _ = score_math(_boxed([f for f, _ in forms]), [a for _, a in forms])
    accepted = {a for (_, a), r in zip(forms, rewards, strict=True) if r == 1.0}
    assert accepted == set(sample)


def _change_first_number(a):
    m = re.search(r"\d+", a)
    return a[: m.start()] + str(int(m.group()) + 1) + a[m.end() :] if m else None


def _flip_sign(a):
    m = re.fullmatch(r"-?\d+(\.\d+)?|-?\\[d]?frac\{\d+\}\{\d+\}", a)
    if not m or not re.search(r"[1-9]", a):  # -0 = 0
        return None
    return a[1:] if a.startswith("-") else "-" + a


def _split_top(s):
    parts, depth, cur = [], 0, ""
    for c in s:
        depth += c in "({[" and 1 or (c in ")}]" and -1 or 0)
        if c == "," and depth == 0:
            parts, cur = parts + [cur], ""
        else:
            cur += c
    return parts + [cur]


def _swap_tuple(a):
    s = re.sub(r"\\(left|right)", "", a).strip()
    if not (s.startswith("(") and s.endswith(")")) or "\\cup" in s:
        return None
    parts = _split_top(s[1:-1])
    if len(parts) < 2 or parts[0].strip() == parts[1].strip():
        return None
    parts[0], parts[1] = parts[1], parts[0]
    return "(" + ",".join(parts) + ")"


@pytest.mark.parametrize(
    "perturb, at_least", [(_change_first_number, 400), (_flip_sign, 300), (_swap_tuple, 10)]
)
def test_perturbed_answers_rejected(math500_answers, perturb, at_least):
    pairs = [(perturb(a), a) for a in math500_answers if perturb(a) is not None]
    assert len(pairs) >= at_least
    rewards, stats = score_math(_boxed([p for p, _ in pairs]), [a for _, a in pairs])
    bad = [p for p, r in zip(pairs, rewards, strict=True) if r != 0.0]
    assert not bad, f"perturbed answers accepted: {bad[:5]}"
    assert stats["timeouts"] == stats["errors"] == 0


# ------------------------------------------------------------------ time limits and accounting


def _assert_timeout_then_recovers(backend):
    rewards, stats = score_math(
        [PATHOLOGICAL, "\\boxed{3}", "nothing"], ["3", "3", "3"], timeout_s=0.5, backend=backend
    )
    np.testing.assert_array_equal(rewards, [0.0, 1.0, 0.0])
    assert (stats["timeouts"], stats["correct"], stats["no_answer"]) == (1, 1, 1)


@pytest.mark.parametrize("backend", ["auto", "signal", "process"])
def test_timeout_main_thread(backend):
    _assert_timeout_then_recovers(backend)


@pytest.mark.parametrize("backend", ["auto", "process"])
def test_timeout_from_worker_thread(backend):
    errors = []

    def work():
        try:
            _assert_timeout_then_recovers(backend)
        except BaseException as e:  # surfaced in the main thread below
            errors.append(e)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert not errors, errors[0]


def test_signal_backend_refuses_worker_thread():
    out = []
    t = threading.Thread(target=lambda: out.append(_try_signal()))
    t.start()
    t.join()
    assert isinstance(out[0], RuntimeError)


def _try_signal():
    try:
        score_math(["\\boxed{1}"], ["1"], backend="signal")
    except RuntimeError as e:
        return e
    return None


def test_signal_handler_restored():
    before = signal.getsignal(signal.SIGALRM)
    score_math(["\\boxed{1}"], ["1"], backend="signal")
    assert signal.getsignal(signal.SIGALRM) is before


def test_verifier_error_counted_not_raised(monkeypatch):
    def broken(answer):
        raise RuntimeError("parser crashed")

    monkeypatch.setattr(math_mod, "_parse", broken)
    rewards, stats = score_math(["\\boxed{1}", "x"], ["1", "1"], backend="signal")
    np.testing.assert_array_equal(rewards, [0.0, 0.0])
    assert (stats["errors"], stats["no_answer"]) == (1, 1)


def test_stats_partition_the_batch():
    responses = ["\\boxed{2}", "\\boxed{3}", "none", "#### 4", PATHOLOGICAL]
    rewards, stats = score_math(responses, ["2", "2", "2", "4", "3"], timeout_s=0.5)
    counts = [stats[k] for k in ("correct", "wrong", "no_answer", "timeouts", "errors")]
    assert counts == [2, 1, 1, 1, 0]
    assert stats["n"] == 5 and stats["accuracy"] == pytest.approx(rewards.mean())
    assert rewards.dtype == np.float32


def test_bad_arguments():
    with pytest.raises(ValueError, match="responses"):
        score_math(["a"], [])
    with pytest.raises(ValueError, match="backend"):
        score_math(["a"], ["b"], backend="gpu")
