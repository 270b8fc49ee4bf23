"""Verdicts of a run (OK/RE/TLE/MLE/OLE/CE/SE) and output checkers for a judged case (AC/WA)."""

import signal

from k15_jax.sandbox.isolate import Raw

RUN_VERDICTS = ("OK", "RE", "TLE", "MLE", "OLE", "CE", "SE")
MEMORY_MARKERS = (b"MemoryError", b"std::bad_alloc", b"Cannot allocate memory")


def classify(raw: Raw, time_limit_s: float, memory_limit_mb: int, compile_error=None) -> str:
    """Run verdict from what the supervisor measured inside the sandbox.

    compile_error(stderr) -> bool detects an interpreter's refusal of the source (Python).

    Order matters: a run killed for output is OLE even if it would also time out; a failing
    run that hit the address-space limit (allocation error, or peak RSS at the limit) is MLE
    rather than RE.
    """
    if raw.stdout_overflow or raw.stderr_overflow:
        return "OLE"
    r = raw.report
    if r is None:
        return "TLE" if raw.hard_timeout else "SE"
    if r["exec_error"]:
        return "SE"
    if compile_error and r["exit_code"] == 1 and compile_error(raw.stderr):
        return "CE"  # an interpreter refused the source before running it
    if r["wall_timeout"] or r["cpu_s"] > time_limit_s or r["signal"] == signal.SIGXCPU:
        return "TLE"
    if r["signal"] == signal.SIGXFSZ:
        return "OLE"
    failed = r["exit_code"] != 0
    if failed and (
        any(m in raw.stderr for m in MEMORY_MARKERS)
        or r["maxrss_kb"] >= 0.95 * memory_limit_mb * 1024
    ):
        return "MLE"
    return "RE" if failed else "OK"


def _lines(text: str) -> list[str]:
    lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


# (output, expected) -> accepted?
CHECKERS = {
    "exact": lambda out, exp: out == exp,
    "lines": lambda out, exp: _lines(out) == _lines(exp),  # trailing spaces/blank lines ignored
    "tokens": lambda out, exp: out.split() == exp.split(),  # any whitespace is a separator
}


def normalize(text: str, checker: str) -> str:
    """A canonical form under which CHECKERS[checker] is plain equality (used for voting)."""
    if checker == "tokens":
        return " ".join(text.split())
    if checker == "lines":
        return "\n".join(_lines(text))
    return text
