"""Long-CoT demonstrations for the synthetic suite (report sec. 2.2), where thinking longer
can pay: answer at once, or work the digits, or work them, check, and on a failed check work
them again. The SFT mix holds all of these, so RL has room to choose how long to think.

A demonstration of "472+389" (add3) takes one of four forms, drawn per demonstration:

  direct     \\boxed{861}                           answer at once (11 tokens)
  worked     2+9+0=11                              one line per digit, least significant
             7+8+1=16                              first: digit + digit + carry = two-digit
             4+3+1=08                              sum, whose tens digit is the next carry
             \\boxed{861}                           (38 tokens)
  checked    <worked lines> =861                   evaluation: the pass's result, then an
             check <lines of 389+472> =861 ok      independent recomputation with the
             \\boxed{861}                           operands swapped, compared (83 tokens)
  corrected  <lines with one slip> =851            reflection: the first pass slips on one
             check <lines of 389+472> =861 no      line, the check disagrees, a third pass
             again <worked lines> =861 ok          settles it (two of three agree)
             \\boxed{861}                           (116 tokens)

(Each item on its own line; see `checked`.) Every form ends in the same \\boxed{} answer,
which `math_reward` verifies; the slip in `corrected` is a visible arithmetic error in one
line (a sum off by one) whose carry the pass then follows, as a real slip would.

Why this suite shows the report's findings (measured in docs/ablations.md): a 0.4M-param
character model answers add1/add2 directly but not add4/add5 (the answer's leading digits
need every carry), while the worked lines stay reliable at any width; the SFT mix answers
directly more often than not, so greedy decoding starts short and wrong on the hard bands,
and RL can make it longer and right. Checking pays only under sampling (it catches a
sampled slip), so a long2short method can drop it at no cost in greedy accuracy.
The `mul` family (n digits times one digit) uses the same forms; its check recomputes.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np


@dataclasses.dataclass
class LongCotConfig:
    """The SFT mix of the long_cot style: the share of each demonstration form."""

    direct: float = 0.6  # answer at once; more than half, so greedy decoding starts direct
    check: float = 0.7  # of the worked demonstrations: the share that check their result
    slip: float = 0.25  # of the checked ones: the share whose first pass slips and is redone


FORMS = ("direct", "worked", "checked", "corrected")


def digit_pass(family: str, a: int, b: int, n: int, slip: int | None = None):
    """The worked lines of a (op) b over n digits of a, and the number they spell.

    slip: the line (0 = least significant) whose two-digit sum is off by one; later lines
    carry from the wrong sum. Returns (lines, result)."""
    lines, carry, value = [], 0, 0
    for i in range(n):
        da = a // 10**i % 10
        other = b // 10**i % 10 if family == "add" else b
        s = da + other + carry if family == "add" else da * other + carry
        if i == slip:
            s = s + 1 if s % 10 != 9 else s - 1  # a one-unit slip in this line's sum
        op = "+" if family == "add" else "*"
        lines.append(f"{da}{op}{other}+{carry}={s:02d}")
        value += s % 10 * 10**i
        carry = s // 10
    return lines, value + carry * 10**n


def _check_operands(family: str, a: int, b: int, n: int) -> tuple[int, int]:
    """The recomputation's operands: swapped for addition (n digits each), the same for
    multiplication by one digit."""
    return (b, a) if family == "add" else (a, b)


def direct(family: str, a: int, b: int, n: int, answer: int) -> str:
    del family, a, b, n
    return f"\\boxed{{{answer}}}"


def worked(family: str, a: int, b: int, n: int, answer: int) -> str:
    lines, _ = digit_pass(family, a, b, n)
    return "\n".join([*lines, f"\\boxed{{{answer}}}"])


def checked(family: str, a: int, b: int, n: int, answer: int) -> str:
    first, v1 = digit_pass(family, a, b, n)
    second, v2 = digit_pass(family, *_check_operands(family, a, b, n), n)
    assert v1 == v2 == answer
    return "\n".join([*first, f"={v1}", "check", *second, f"={v2} ok", f"\\boxed{{{answer}}}"])


def corrected(family: str, a: int, b: int, n: int, answer: int, slip: int) -> str:
    first, v1 = digit_pass(family, a, b, n, slip=slip)
    second, v2 = digit_pass(family, *_check_operands(family, a, b, n), n)
    third, v3 = digit_pass(family, a, b, n)
    assert v1 != v2 == v3 == answer
    return "\n".join(
        [*first, f"={v1}", "check", *second, f"={v2} no", "again", *third, f"={v3} ok"]
        + [f"\\boxed{{{answer}}}"]
    )


def draw_form(cfg: LongCotConfig, rng: np.random.Generator) -> str:
    """One demonstration form, drawn with the configured shares."""
    if rng.random() < cfg.direct:
        return "direct"
    if rng.random() >= cfg.check:
        return "worked"
    return "corrected" if rng.random() < cfg.slip else "checked"


def long_cot_demonstration(task, cfg: LongCotConfig, rng: np.random.Generator) -> str:
    """A demonstration of a synthetic task in a form drawn from the long_cot mix."""
    family, n = task.meta["family"], task.meta["n_digits"]
    a, b = task.meta["operands"]
    answer = int(task.reference)
    form = draw_form(cfg, rng)
    if form == "corrected":
        return corrected(family, a, b, n, answer, slip=int(rng.integers(n)))
    return {"direct": direct, "worked": worked, "checked": checked}[form](family, a, b, n, answer)


_LINE = re.compile(r"^\d[+*]\d\+\d=\d\d$", re.MULTILINE)


def form_of(response: str) -> str:
    """Which form a response took (for metrics): by its markers, not its correctness.
    'corrected' when it redid a pass, 'checked' when it checked, 'worked' when it has digit
    lines, else 'direct'."""
    if "again" in response:
        return "corrected"
    if "check" in response:
        return "checked"
    return "worked" if _LINE.search(response) else "direct"
