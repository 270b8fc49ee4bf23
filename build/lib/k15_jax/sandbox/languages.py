"""Supported languages: how a source is placed, compiled and run inside the sandbox."""

import dataclasses
import shlex
from collections.abc import Callable

from k15_jax.sandbox.toolchain import Toolchain


@dataclasses.dataclass(frozen=True)
class Language:
    """source: file name under /work. compile_argv is None for interpreted languages.

    A compiled language returns `artifact` (under /work) from the compile sandbox; runs get
    it back as an executable file of the same name.
    """

    source: str
    run_argv: Callable[[Toolchain], list[str]]
    compile_argv: Callable[[Toolchain, str], list[str]] | None = None
    artifact: str | None = None
    # For interpreted languages: does a failed run's stderr show a compile-time error?
    compile_error: Callable[[bytes], bool] | None = None
    available: Callable[[Toolchain], bool] = lambda tc: True


SYNTAX_ERRORS = (b"SyntaxError", b"IndentationError", b"TabError")


def python_syntax_error(stderr: bytes) -> bool:
    """The interpreter rejected the script itself: a bare SyntaxError report, no traceback.

    An error raised while the program runs (exec, import of a broken module) carries a
    "Traceback (most recent call last)" header and stays a runtime error.
    """
    lines = stderr.strip().splitlines()
    return (
        bool(lines)
        and lines[0].lstrip().startswith(b'File "')
        and b"Traceback (most recent call last)" not in stderr
        and lines[-1].startswith(SYNTAX_ERRORS)
    )


LANGUAGES = {
    "python": Language(
        source="main.py",
        run_argv=lambda tc: [tc.python, "-B", "main.py"],
        compile_error=lambda err: python_syntax_error(err),
    ),
    "cpp": Language(
        source="main.cpp",
        run_argv=lambda tc: ["./prog"],  # relative to the work dir
        compile_argv=lambda tc, flags: [tc.cxx, *shlex.split(flags), "-o", "prog", "main.cpp"],
        artifact="prog",
        available=lambda tc: tc.cxx is not None,
    ),
}
ALIASES = {"python3": "python", "py": "python", "c++": "cpp", "cxx": "cpp"}


def canonical(name: str) -> str:
    return ALIASES.get(name, name)
