"""Pure parts of the sandbox: verdict rules, checkers, request parsing, bwrap command, CLI."""

import argparse
import dataclasses
import os
import signal
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k15_jax.sandbox import SandboxConfig
from k15_jax.sandbox.__main__ import add_dataclass_flags, from_args
from k15_jax.sandbox.client import config_args
from k15_jax.sandbox.isolate import Limits, Raw, bwrap_argv
from k15_jax.sandbox.languages import LANGUAGES, python_syntax_error
from k15_jax.sandbox.schema import RequestError, parse_judge, parse_run
from k15_jax.sandbox.toolchain import (
    SandboxUnavailable,
    Toolchain,
    is_elf,
    others_can_reach,
    pick_python,
)
from k15_jax.sandbox.verdict import CHECKERS, classify, normalize

CFG = SandboxConfig()


def report(**kw):
    base = {
        "exit_code": 0,
        "signal": None,
        "cpu_s": 0.1,
        "wall_s": 0.1,
        "maxrss_kb": 10_000,
        "wall_timeout": False,
        "exec_error": None,
        "artifact_bytes": -1,
    }
    return {**base, **kw}


# (Raw, expected verdict) with time limit 1 s and memory limit 256 MB.
VERDICT_TABLE = [
    (Raw(report()), "OK"),
    (Raw(report(exit_code=1)), "RE"),
    (Raw(report(exit_code=None, signal=signal.SIGSEGV)), "RE"),
    (Raw(report(cpu_s=1.2)), "TLE"),
    (Raw(report(exit_code=None, signal=signal.SIGXCPU, cpu_s=1.9)), "TLE"),
    (Raw(report(exit_code=None, signal=signal.SIGKILL, wall_timeout=True)), "TLE"),
    (Raw(report(exit_code=1), stderr=b"...\nMemoryError\n"), "MLE"),
    (Raw(report(exit_code=None, signal=6), stderr=b"what():  std::bad_alloc"), "MLE"),
    (Raw(report(exit_code=1, maxrss_kb=255 * 1024)), "MLE"),
    (Raw(report(maxrss_kb=255 * 1024)), "OK"),  # near the limit but finished fine
    (Raw(report(exit_code=None, signal=signal.SIGXFSZ)), "OLE"),
    (Raw(report(), stdout_overflow=True), "OLE"),
    (Raw(None, stderr_overflow=True), "OLE"),
    (Raw(report(exit_code=127, exec_error="ENOENT")), "SE"),
    (Raw(None, hard_timeout=True), "TLE"),
    (Raw(None), "SE"),
]


@pytest.mark.parametrize("raw,verdict", VERDICT_TABLE)
def test_classify(raw, verdict):
    assert classify(raw, 1.0, 256) == verdict


PY_CASES = [
    ("def f(:\n    pass\n", True),
    ("if True:\npass\n", True),  # IndentationError
    ("x = 1\nexec('def g(:')\n", False),  # raised while running: a runtime error
    ("import sys\nsys.stderr.write('SyntaxError: fake')\nsys.exit(1)\n", False),
    ("raise ValueError('x')\n", False),
]


@pytest.mark.parametrize("src,is_ce", PY_CASES)
def test_python_syntax_error_from_real_interpreter(tmp_path, src, is_ce):
    """The CE rule against what the real interpreter prints for each kind of failure."""
    path = tmp_path / "main.py"
    path.write_text(src)
    proc = subprocess.run([sys.executable, "-B", str(path)], capture_output=True)
    assert proc.returncode == 1
    raw = Raw(report(exit_code=proc.returncode), stderr=proc.stderr)
    assert python_syntax_error(proc.stderr) == is_ce
    got = classify(raw, 1.0, 256, LANGUAGES["python"].compile_error)
    assert got == ("CE" if is_ce else "RE")


TEXT = st.text(alphabet="ab1 \t\r\n", max_size=30)


@settings(max_examples=300, deadline=None)
@given(TEXT, TEXT)
def test_checkers_agree_with_normal_forms(a, b):
    """Voting compares normal forms; judging uses checkers: they must be the same relation."""
    for name, check in CHECKERS.items():
        assert check(a, b) == (normalize(a, name) == normalize(b, name))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="xy12", min_size=1, max_size=4), min_size=1, max_size=6))
def test_checker_tolerances(tokens):
    text = " ".join(tokens) + "\n"
    assert CHECKERS["exact"](text, text)
    assert CHECKERS["lines"](text.replace(" ", " ").rstrip("\n") + "  \n\n\n", text)
    assert CHECKERS["tokens"]("\n".join(tokens), text)
    assert not CHECKERS["lines"]("\n".join(tokens) + "z", text)
    assert not CHECKERS["tokens"](text + " extra", text)


def test_parse_run_defaults_and_aliases():
    r = parse_run({"language": "python3", "source": "print(1)"}, CFG, {"python", "cpp"})
    assert (r.language, r.stdin, r.time_limit_s) == ("python", "", CFG.default_time_limit_s)
    assert r.memory_limit_mb == CFG.default_memory_limit_mb
    with pytest.raises(RequestError) as e:
        parse_run({"language": "cpp", "source": ""}, CFG, {"python"})
    assert e.value.status == 400 and "not available" in e.value.message


def test_parse_judge_limits():
    body = {"language": "python", "source": "", "cases": [{"stdin": ""}] * (CFG.max_cases + 1)}
    with pytest.raises(RequestError) as e:
        parse_judge(body, CFG, {"python"})
    assert e.value.status == 413
    body["cases"] = [{"stdin": "1", "expected": None}, {"expected": "2"}]
    j = parse_judge(body, CFG, {"python"})
    assert [(c.stdin, c.expected) for c in j.cases] == [("1", None), ("", "2")]


def test_bwrap_command_isolates():
    tc = Toolchain("/usr/bin/bwrap", "/usr/bin/python3", None, ("/opt/py",), True, True, ())
    argv = bwrap_argv(tc, [(7, "main.py", "0644")], 64)
    for flag in ("--unshare-all", "--unshare-user", "--die-with-parent", "--as-pid-1"):
        assert flag in argv
    assert "--share-net" not in argv and "--clearenv" in argv
    binds = [argv[i + 1] for i, a in enumerate(argv) if a in ("--bind", "--ro-bind", "--dev-bind")]
    assert "--bind" not in argv and "--dev-bind" not in argv  # nothing of the host is writable
    assert set(binds) <= {"/usr", "/opt/py", "/bin", "/sbin", "/lib", "/lib32", "/lib64"}
    ro = [argv[i + 1] for i, a in enumerate(argv) if a == "--remount-ro"]
    assert "/" in ro and "/dev" in ro
    assert argv[argv.index("--file") + 1 : argv.index("--file") + 3] == ["7", "/work/main.py"]


def test_reachability_and_shims(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    exe = private / "python3"
    exe.write_text('#!/bin/sh\nexec /usr/bin/python3 "$@"\n')
    exe.chmod(0o755)
    assert not others_can_reach(str(exe))
    os.chmod(private, 0o755)
    assert others_can_reach(str(exe)) == all(
        os.stat(p).st_mode & 0o001 for p in [*exe.parents][:-1]
    )
    assert not is_elf(str(exe)) and is_elf("/bin/sh")
    with pytest.raises(SandboxUnavailable, match="python_path"):
        pick_python(str(exe), drop_uid=False)  # a shim is refused with the fix named


def test_cli_flags_round_trip():
    cfg = dataclasses.replace(CFG, port=0, workers=3, insecure=True, output_limit_mb=1.5)
    parser = argparse.ArgumentParser()
    add_dataclass_flags(parser, SandboxConfig)
    assert from_args(SandboxConfig, parser.parse_args(config_args(cfg))) == cfg


def test_limits_wall_formula():
    from k15_jax.sandbox.executor import Executor

    tc = Toolchain(None, "/usr/bin/python3", None, (), False, False, ())
    lim = Executor(CFG, tc).limits(2.0, 128, 5)
    assert isinstance(lim, Limits)
    assert lim.wall_s == 2.0 * CFG.wall_factor + CFG.wall_extra_s
    assert (lim.memory_mb, lim.nproc) == (128, 5)
