"""Finds bubblewrap, the interpreter and the compiler the sandbox uses, and checks them.

The service usually runs as root here, so each run first drops to an unprivileged uid
(bubblewrap started by root keeps real uid 0 outside its user namespace: root-owned files
stay readable and RLIMIT_NPROC is ignored). That uid must be able to reach every path the
sandbox binds, so a version-manager interpreter under a mode-700 /root cannot be used;
shims (shell scripts that re-exec an interpreter found through $HOME) fail inside a minimal
sandbox, so only real ELF interpreters qualify.
"""

import atexit
import dataclasses
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

SYSTEM_PREFIX = "/usr"


class SandboxUnavailable(RuntimeError):
    """Raised when runs cannot be isolated; the message says why and how to fix it."""


@dataclasses.dataclass(frozen=True)
class Toolchain:
    """Resolved paths and capabilities; `secure` is False only in the explicit insecure mode."""

    bwrap: str | None
    python: str
    cxx: str | None
    extra_binds: tuple[str, ...]  # read-only binds for tools installed outside /usr
    drop_uid: bool  # True when the service is root and runs each slot as its own uid
    secure: bool
    bwrap_flags: tuple[str, ...]  # optional hardening flags this bwrap supports
    supervisor: str = ""  # compiled inner.c on the host; "" = inner.py run by `python`


def others_can_reach(path: str) -> bool:
    """True when a process of an unrelated uid can traverse to `path` and execute it."""
    real = os.path.realpath(path)
    parts = real.split("/")
    for i in range(2, len(parts)):
        st = os.stat("/".join(parts[:i]) or "/")
        if not st.st_mode & stat.S_IXOTH:
            return False
    return bool(os.stat(real).st_mode & stat.S_IXOTH)


def is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def install_prefix(real_exe: str) -> str:
    """/opt/py/3.11/bin/python3.11 -> /opt/py/3.11 (what must be bound for it to run)."""
    return os.path.dirname(os.path.dirname(real_exe))


def pick_python(configured: str, drop_uid: bool) -> str:
    """Real interpreter path for the sandbox: configured, else the service's own, else system."""
    if configured:
        cands = [configured]
    else:
        on_path = shutil.which("python3") or ""
        cands = [sys.executable, on_path, "/usr/bin/python3"]
    tried = []
    for c in cands:
        if not c:
            continue
        real = os.path.realpath(c)
        ok = os.path.exists(real) and is_elf(real) and (not drop_uid or others_can_reach(real))
        if ok:
            return real
        tried.append(real)
    raise SandboxUnavailable(
        f"no usable Python interpreter for the sandbox (tried {tried}: each must be a real ELF "
        "binary, not a shim, reachable by an unprivileged uid); set sandbox.python_path to one "
        "(e.g. apt-get install python3 and use /usr/bin/python3)"
    )


def bwrap_features(bwrap: str) -> tuple[str, ...]:
    """Optional hardening flags that this bubblewrap version knows."""
    out = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10)
    text = out.stdout + out.stderr
    return tuple(f for f in ("--disable-userns", "--size") if f in text)


def build_supervisor(mode: str, drop_uid: bool) -> tuple[str, list[str]]:
    """Compiles inner.c into a fresh directory the slot uids can read; ("", warnings) if not.

    mode: "c" (required), "python" (never compile) or "auto" (C when a compiler works).
    """
    if mode not in ("auto", "c", "python"):
        raise ValueError(f"supervisor={mode!r}; use auto, c or python")
    if mode == "python":
        return "", []
    cc = next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    dirs = [d for d in (tempfile.gettempdir(), "/tmp", "/dev/shm") if os.path.isdir(d)]
    where = next((d for d in dirs if not drop_uid or others_can_reach(d)), None)
    problem = None
    if cc is None:
        problem = "no C compiler (apt-get install gcc)"
    elif where is None:
        problem = f"none of {dirs} is reachable by an unprivileged uid"
    else:
        out_dir = tempfile.mkdtemp(prefix="k15-sandbox-", dir=where)
        atexit.register(shutil.rmtree, out_dir, True)
        os.chmod(out_dir, 0o755)
        exe = os.path.join(out_dir, "supervisor")
        src = str(Path(__file__).with_name("inner.c"))
        for extra in (["-static"], []):  # static: no dynamic loader work per run
            cmd = [cc, "-O2", *extra, "-o", exe, src]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            if proc.returncode == 0:
                os.chmod(exe, 0o755)
                return exe, []
        problem = f"compiling {src} failed: {proc.stderr.strip()[-1000:]}"
    if mode == "c":
        raise SandboxUnavailable(f"supervisor=c but {problem}; or set supervisor=python")
    return "", [f"using the slower Python supervisor: {problem}"]


def resolve_toolchain(
    bwrap_path: str, python_path: str, cxx_path: str, insecure: bool, supervisor: str = "auto"
) -> tuple[Toolchain, list[str]]:
    """Returns the toolchain and warnings; raises SandboxUnavailable if bwrap is missing.

    With `insecure`, a missing bwrap gives a toolchain with secure=False instead.
    """
    warnings = []
    drop_uid = os.geteuid() == 0
    if not drop_uid:
        warnings.append(
            "service is not root: all runs share its uid, so the process limit is shared too"
        )
    python = pick_python(python_path, drop_uid)
    cxx = shutil.which(cxx_path or "g++")
    if cxx:
        cxx = os.path.realpath(cxx)
        if drop_uid and not others_can_reach(cxx):
            warnings.append(f"C++ disabled: {cxx} is not reachable by an unprivileged uid")
            cxx = None
    else:
        warnings.append("C++ disabled: no g++ found; apt-get install g++ or set sandbox.cxx_path")
    extra = tuple(
        sorted(
            {
                install_prefix(p)
                for p in (python, cxx)
                if p and not p.startswith(SYSTEM_PREFIX + "/")
            }
        )
    )
    sup, sup_warnings = build_supervisor(supervisor, drop_uid)
    warnings += sup_warnings
    bwrap = shutil.which(bwrap_path or "bwrap")
    if bwrap is None:
        msg = (
            "bubblewrap not found: install it (apt-get install -y bubblewrap) or set "
            "sandbox.bwrap_path"
        )
        if not insecure:
            raise SandboxUnavailable(msg + "; or pass --insecure to run WITHOUT isolation")
        warnings.append(msg + "; running INSECURE (no isolation)")
        return Toolchain(None, python, cxx, extra, drop_uid, False, (), sup), warnings
    features = bwrap_features(bwrap)
    return Toolchain(bwrap, python, cxx, extra, drop_uid, True, features, sup), warnings
