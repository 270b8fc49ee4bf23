"""Math answer rewards (k1.5 report, sections 2.1 and 2.3.5): r(x, y, y*) in {0, 1}.

A response is reduced to its final answer (the last of `\\boxed{...}`, GSM8K's `#### n`
or an `Answer:` line, by position in the text) and compared with the reference answer
by math-verify's sympy-based equivalence (`\\frac{14}{3}` = `14/3`, `(a+2)(a-2)` =
`a^2-4`). Every check runs under a per-check time limit; a timeout or verifier error
gives reward 0 and is counted in the stats, it never raises.

Time limits. math-verify's own timeout uses `signal.alarm` with whole seconds and
raises in any thread but the main one, so it is switched off here and the limit is
enforced by one of two backends (selected by name, see `BACKENDS`):
- "signal": the check runs in the calling thread under a `setitimer(ITIMER_REAL)` alarm
  (fractional seconds, no overhead). Main thread only; like any signal it only fires
  between Python bytecodes, so one long C call is not cut short.
- "process": the check runs in a persistent worker subprocess; the caller waits on the
  result pipe with `select` and kills and restarts the worker when the limit passes.
  Works from any thread and stops C-level hangs too; costs ~0.5 s to start the worker
  (once, and after each timeout) and a pipe round trip per check.
"auto" (the default) takes "signal" in the main thread and "process" elsewhere, e.g.
when the rollout engine scores in a background thread.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Check outcomes; the stats dict counts each.
CORRECT, WRONG, NO_ANSWER, TIMEOUT, ERROR = "correct", "wrong", "no_answer", "timeout", "error"


@dataclasses.dataclass
class MathRewardConfig:
    """Options of the math verifier."""

    timeout_s: float = 5.0  # per check (parse both sides + compare)
    backend: str = "auto"  # "auto" | "signal" | "process"


# ----------------------------------------------------------------------------- extraction

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_HASHES = re.compile(r"####[ \t]*([^\n]*)")
_ANSWER_LINE = re.compile(
    r"^[ \t>*#_]*(?:final[ \t]+)?answer[ \t*_]*[:：][ \t*_]*([^\n]*)$", re.IGNORECASE | re.M
)


def _brace_pairs(text: str) -> dict[int, int]:
    """Position of each '{' -> position of its matching '}' (unclosed ones are absent).

    One pass with a stack, so a degenerate response full of `\\boxed{` stays linear.
    Escaped braces (`\\{`, `\\}`) are literal set braces and do not count.
    """
    pairs, stack, i = {}, [], 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            stack.append(i)
        elif c == "}" and stack:
            pairs[stack.pop()] = i
        i += 1
    return pairs


def _candidates(response: str) -> list[tuple[int, str, bool]]:
    """All final-answer candidates as (position, text, is_latex)."""
    out = []
    boxes = list(_BOXED.finditer(response))
    pairs = _brace_pairs(response) if boxes else {}
    for m in boxes:
        close = pairs.get(m.end() - 1)
        if close is not None:
            out.append((m.start(), response[m.end() : close], True))
    for m in _HASHES.finditer(response):
        out.append((m.start(), m.group(1), False))
    for m in _ANSWER_LINE.finditer(response):
        out.append((m.start(), m.group(1), False))
    return [c for c in out if c[1].strip()]


_UNIT_WORDS = re.compile(r"^(-?[\d,]*\.?\d+)\s+[A-Za-z]{3,}(?:\s+[A-Za-z]+)*$")


def normalize_answer(text: str, *, latex: bool = True) -> str:
    """Light clean-up before parsing; math-verify normalizes the LaTeX itself.

    Strips `$...$`, a trailing period and markdown emphasis, writes a bare `pi` as
    `\\pi` (else it parses as i*p), and for plain-text answers (`####`, `Answer:`)
    drops currency signs and trailing unit words (`18 dollars` -> `18`).
    """
    s = text.strip().strip("*_").strip()
    s = s.rstrip(".").rstrip()
    if len(s) >= 2 and s[0] == "$" and s[-1] == "$":
        s = s.strip("$").strip()
    s = re.sub(r"(?<![\\A-Za-z])pi(?![A-Za-z])", r"\\pi", s)
    if not latex:
        s = s.replace("\\$", "").replace("$", "").strip()
        m = _UNIT_WORDS.match(s)
        if m:
            s = m.group(1)
    return s


def extract_answer(response: str) -> str | None:
    """The final answer of a response (normalized), or None if it states none.

    The last candidate by position wins, so a `\\boxed{}` inside an `Answer:` line wins.
    """
    cands = _candidates(response)
    if not cands:
        return None
    _, text, is_latex = max(cands, key=lambda c: c[0])
    s = normalize_answer(text, latex=is_latex)
    return s or None


# ----------------------------------------------------------------------------- checking


def _drop_no_timeout_warning(record: logging.LogRecord) -> bool:
    # math-verify warns once that its own timeout is off; here the backends enforce it.
    return not str(record.msg).startswith("Timeout is disabled")


@functools.cache
def _math_verify():
    """The math_verify module, imported on first use (it pulls in sympy, ~0.5 s)."""
    import math_verify

    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_drop_no_timeout_warning)
    return math_verify


@functools.lru_cache(maxsize=4096)
def _parse(answer: str) -> tuple:
    """math-verify parse of one answer (no time limit of its own; the caller bounds it)."""
    mv = _math_verify()
    return tuple(mv.parse("\\boxed{" + answer + "}", parsing_timeout=None, raise_on_error=True))


def check_answer(answer: str, reference: str) -> str:
    """CORRECT, WRONG or ERROR for one extracted answer against one reference; unbounded time.

    math-verify returns several parses per side (sympy form, then the raw string); the
    answer is correct if any pair verifies. ERROR when parsing fails, or when some
    comparison raised and none succeeded (a crashing comparison is not evidence of
    inequality, so it is counted apart).
    """
    verify = _math_verify().verify
    try:
        gold = _parse(normalize_answer(reference))
        pred = _parse(answer)
    except Exception:
        return ERROR
    raised = False
    for g in gold:
        for p in pred:
            try:
                if verify(g, p, timeout_seconds=None, raise_on_error=True):
                    return CORRECT
            except Exception:
                raised = True
    return ERROR if raised else WRONG


class _CheckTimeout(BaseException):
    """Raised by the alarm handler; BaseException so `except Exception` in sympy won't eat it."""


def _run_signal(pairs: Sequence[tuple[str, str]], timeout_s: float) -> list[str]:
    """Checks pairs in this thread, each under a SIGALRM interval timer."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError('math reward backend "signal" needs the main thread; use "process"')

    def on_alarm(signum, frame):
        raise _CheckTimeout

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    old_timer, _ = signal.setitimer(signal.ITIMER_REAL, 0)
    t0 = time.monotonic()
    out = []
    try:
        for answer, reference in pairs:
            result = TIMEOUT
            try:  # the outer try catches an alarm that lands inside the inner finally
                try:
                    signal.setitimer(signal.ITIMER_REAL, timeout_s)
                    result = check_answer(answer, reference)
                    signal.setitimer(signal.ITIMER_REAL, 0)
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            except _CheckTimeout:
                pass
            out.append(result)
    finally:
        signal.signal(signal.SIGALRM, old_handler)
        if old_timer > 0:  # give a caller's own alarm back its remaining time
            signal.setitimer(signal.ITIMER_REAL, max(old_timer - (time.monotonic() - t0), 1e-3))
    return out


_ROOT = str(Path(__file__).resolve().parents[2])
_STARTUP_TIMEOUT_S = 120.0  # imports on a loaded machine; not part of any check's limit
_WORKER_CODE = "from k15_jax.rewards.math import worker_main; worker_main()"


def worker_main() -> None:
    """Verifier subprocess loop: one JSON [answer, reference] per stdin line -> outcome line."""
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # stray prints from libraries must not corrupt the protocol
    check_answer("1", "1")  # import and warm up before saying ready
    out.write(b"ready\n")
    for line in sys.stdin.buffer:
        answer, reference = json.loads(line)
        out.write((check_answer(answer, reference) + "\n").encode())


class _VerifierProcess:
    """One persistent verifier subprocess shared by all threads (calls are serialized)."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.buf = b""
        self.lock = threading.Lock()
        atexit.register(self.close)

    def _start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = _ROOT + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            bufsize=0,
        )
        self.buf = b""
        if self._readline(time.monotonic() + _STARTUP_TIMEOUT_S) != "ready":
            self.close()
            raise RuntimeError("math verifier subprocess did not start; run `" + _WORKER_CODE + "`")

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def _readline(self, deadline: float) -> str | None:
        """One result line; None when the deadline passes; '' when the worker died."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return ""
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def check(self, pairs: Sequence[tuple[str, str]], timeout_s: float) -> list[str]:
        out = []
        with self.lock:
            for answer, reference in pairs:
                try:
                    if self.proc is None or self.proc.poll() is not None:
                        self._start()
                    self.proc.stdin.write((json.dumps([answer, reference]) + "\n").encode())
                    line = self._readline(time.monotonic() + timeout_s)
                except (OSError, RuntimeError):  # worker died or could not start
                    line = ""
                if line is None:
                    self.close()
                    out.append(TIMEOUT)
                elif line in (CORRECT, WRONG, ERROR):
                    out.append(line)
                else:
                    self.close()
                    out.append(ERROR)
        return out


_PROCESS = _VerifierProcess()


def _run_process(pairs: Sequence[tuple[str, str]], timeout_s: float) -> list[str]:
    return _PROCESS.check(pairs, timeout_s)


def _run_auto(pairs: Sequence[tuple[str, str]], timeout_s: float) -> list[str]:
    main = threading.current_thread() is threading.main_thread()
    return (_run_signal if main else _run_process)(pairs, timeout_s)


BACKENDS = {"auto": _run_auto, "signal": _run_signal, "process": _run_process}


# ----------------------------------------------------------------------------- public API


def score_math(
    responses: Sequence[str],
    references: Sequence[str],
    *,
    timeout_s: float = 5.0,
    backend: str = "auto",
) -> tuple[np.ndarray, dict]:
    """Rewards [N] float32 in {0, 1} for N responses against their N references.

    Returns (rewards, stats) with stats = {n, correct, wrong, no_answer, timeouts,
    errors, accuracy}; every response lands in exactly one of the five counts.
    """
    if len(responses) != len(references):
        raise ValueError(f"score_math got {len(responses)} responses, {len(references)} references")
    if backend not in BACKENDS:
        raise ValueError(f"unknown math reward backend {backend!r}; choose from {list(BACKENDS)}")
    outcomes = [NO_ANSWER] * len(responses)
    todo = []
    for i, r in enumerate(responses):
        answer = extract_answer(r)
        if answer is not None:
            todo.append((i, answer))
    checked = BACKENDS[backend]([(a, references[i]) for i, a in todo], timeout_s)
    for (i, _), outcome in zip(todo, checked, strict=True):
        outcomes[i] = outcome
    rewards = np.array([o == CORRECT for o in outcomes], dtype=np.float32)
    n = len(outcomes)
    stats = {
        "n": n,
        "correct": outcomes.count(CORRECT),
        "wrong": outcomes.count(WRONG),
        "no_answer": outcomes.count(NO_ANSWER),
        "timeouts": outcomes.count(TIMEOUT),
        "errors": outcomes.count(ERROR),
        "accuracy": float(rewards.mean()) if n else 0.0,
    }
    return rewards, stats


def math_reward(response: str, reference: str) -> float:
    """1.0 if the response's final answer is equivalent to the reference, else 0.0."""
    rewards, _ = score_math([response], [reference])
    return float(rewards[0])
