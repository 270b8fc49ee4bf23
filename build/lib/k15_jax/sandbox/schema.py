"""Parses and validates the JSON bodies of POST /run and POST /judge.

Every problem becomes a RequestError with a 4xx status and a message naming the field and
what it should be, so a malformed request never reaches a sandbox.
"""

import dataclasses

from k15_jax.sandbox.config import SandboxConfig
from k15_jax.sandbox.languages import LANGUAGES, canonical
from k15_jax.sandbox.verdict import CHECKERS


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclasses.dataclass
class RunRequest:
    language: str
    source: str
    stdin: str
    time_limit_s: float
    memory_limit_mb: int
    id: str | int | None = None


@dataclasses.dataclass
class Case:
    stdin: str
    expected: str | None  # None: only run it (verdict is the run verdict, e.g. OK)


@dataclasses.dataclass
class JudgeRequest:
    language: str
    source: str
    cases: list[Case]
    time_limit_s: float
    memory_limit_mb: int
    checker: str = "lines"
    stop_on_first_failure: bool = False
    return_output: bool = False
    id: str | int | None = None


RUN_FIELDS = {"language", "source", "stdin", "time_limit_s", "memory_limit_mb", "id"}
JUDGE_FIELDS = (RUN_FIELDS - {"stdin"}) | {
    "cases",
    "checker",
    "stop_on_first_failure",
    "return_output",
}


def _str(body: dict, key: str, default: str | None = None) -> str:
    v = body.get(key, default)
    if v is None:
        raise RequestError(400, f'missing field "{key}" (a string)')
    if not isinstance(v, str):
        raise RequestError(400, f'field "{key}" must be a string, got {type(v).__name__}')
    _utf8(v, f'field "{key}"')
    return v


def _utf8(text: str, what: str) -> None:
    try:
        text.encode()
    except UnicodeEncodeError as e:  # e.g. a lone surrogate escape such as "\ud800"
        raise RequestError(400, f"{what} is not valid Unicode text: {e.reason}") from None


def _bool(body: dict, key: str, default: bool) -> bool:
    v = body.get(key, default)
    if not isinstance(v, bool):
        raise RequestError(400, f'field "{key}" must be true or false, got {v!r}')
    return v


def _number(body: dict, key: str, default: float, lo: float, hi: float) -> float:
    v = body.get(key, default)
    # Range first: it rejects NaN and infinities, and a huge int never reaches float().
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and lo < v <= hi
    if not ok:
        shown = repr(v) if len(repr(v)) < 40 else repr(v)[:40] + "..."
        raise RequestError(400, f'field "{key}" must be a number in ({lo:g}, {hi:g}], got {shown}')
    return v


def _common(body, cfg: SandboxConfig, allowed: set[str], available: set[str]) -> dict:
    if not isinstance(body, dict):
        raise RequestError(400, f"request body must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise RequestError(400, f"unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    lang = canonical(_str(body, "language"))
    if lang not in LANGUAGES:
        raise RequestError(400, f"unknown language {lang!r}; use one of {sorted(LANGUAGES)}")
    if lang not in available:
        raise RequestError(400, f"language {lang!r} is not available on this server (no compiler)")
    rid = body.get("id")
    if rid is not None and (not isinstance(rid, (str, int)) or isinstance(rid, bool)):
        raise RequestError(400, f'field "id" must be a string or an integer, got {rid!r}')
    mem = _number(body, "memory_limit_mb", cfg.default_memory_limit_mb, 0, cfg.max_memory_limit_mb)
    if mem < cfg.min_memory_limit_mb:
        raise RequestError(
            400, f'field "memory_limit_mb" must be at least {cfg.min_memory_limit_mb}, got {mem!r}'
        )
    tl = _number(body, "time_limit_s", cfg.default_time_limit_s, 0, cfg.max_time_limit_s)
    return {
        "language": lang,
        "source": _str(body, "source"),
        "time_limit_s": tl,
        "memory_limit_mb": int(mem),
        "id": rid,
    }


def parse_run(body, cfg: SandboxConfig, available: set[str]) -> RunRequest:
    c = _common(body, cfg, RUN_FIELDS, available)
    return RunRequest(stdin=_str(body, "stdin", ""), **c)


def parse_judge(body, cfg: SandboxConfig, available: set[str]) -> JudgeRequest:
    c = _common(body, cfg, JUDGE_FIELDS, available)
    raw_cases = body.get("cases")
    if not isinstance(raw_cases, list) or not raw_cases:
        raise RequestError(400, 'field "cases" must be a non-empty list of {"stdin", "expected"}')
    if len(raw_cases) > cfg.max_cases:
        raise RequestError(413, f"{len(raw_cases)} cases; at most {cfg.max_cases} per request")
    cases = []
    for i, rc in enumerate(raw_cases):
        if not isinstance(rc, dict) or set(rc) - {"stdin", "expected"}:
            raise RequestError(400, f'cases[{i}] must be an object with "stdin" and "expected"')
        exp = rc.get("expected")
        if exp is not None and not isinstance(exp, str):
            raise RequestError(400, f"cases[{i}].expected must be a string or null")
        stdin = rc.get("stdin", "")
        if not isinstance(stdin, str):
            raise RequestError(400, f"cases[{i}].stdin must be a string")
        _utf8(stdin, f"cases[{i}].stdin")
        cases.append(Case(stdin, exp))
    checker = _str(body, "checker", "lines")
    if checker not in CHECKERS:
        raise RequestError(400, f"unknown checker {checker!r}; use one of {sorted(CHECKERS)}")
    return JudgeRequest(
        cases=cases,
        checker=checker,
        stop_on_first_failure=_bool(body, "stop_on_first_failure", False),
        return_output=_bool(body, "return_output", False),
        **c,
    )
