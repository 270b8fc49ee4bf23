"""One isolated run: builds the bubblewrap command, feeds stdin, caps output, collects the report.

Process chain: service thread --(drop to the slot's uid)--> bwrap (new user, pid, net, ipc,
uts and cgroup namespaces) --> supervisor (inner.c, or inner.py) as pid 1 --(rlimits)--> the
program. The end of pid 1 takes the whole pid namespace with it, so no process of a run can
outlive it; to stop a run early the service kills pid 1 through a pidfd.
"""

import dataclasses
import json
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from k15_jax.sandbox.toolchain import Toolchain

INNER_SRC = (Path(__file__).with_name("inner.py")).read_text()
SANDBOX_UID = 65534  # uid seen inside; maps to the slot's real uid outside
SUPERVISOR_PATH = "/sandbox/supervisor"  # where the compiled supervisor is bound inside
ARTIFACT_MAX = 64 << 20
GRACE_S = 5.0  # on top of the wall limit before the service kills bwrap itself
PROGRAM_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/work",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "MALLOC_ARENA_MAX": "2",  # glibc reserves 64 MB of address space per arena
}
_ACTIVE: set = set()  # running sandboxes, killed when the service stops
_ACTIVE_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-run limits. cpu_s is the CPU-time limit; wall_s the wall-clock one."""

    cpu_s: float
    wall_s: float
    memory_mb: int
    nproc: int
    output_bytes: int
    stderr_keep: int
    fsize_bytes: int
    nofile: int


@dataclasses.dataclass
class Raw:
    """What came back from one sandboxed process; `report` is None if the supervisor died."""

    report: dict | None
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_overflow: bool = False
    stderr_overflow: bool = False
    hard_timeout: bool = False
    returncode: int = 0
    artifact: bytes = b""


def memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, 0)
    _write_all(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def root_links() -> list[str]:
    """Recreates /bin, /lib, ... as on the host: symlinks into /usr or read-only binds."""
    args = []
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    return args


def bwrap_argv(tc: Toolchain, files: list[tuple[int, str, str]], work_mb: int) -> list[str]:
    """The bwrap command up to `--`. files: (fd, path under /work, octal perms)."""
    args = [
        tc.bwrap,
        "--unshare-all",
        "--unshare-user",
        *[f for f in tc.bwrap_flags if f != "--size"],
    ]
    args += ["--die-with-parent", "--new-session", "--as-pid-1"]
    args += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox"]
    args += ["--ro-bind", "/usr", "/usr", *root_links()]
    for p in tc.extra_binds:
        args += ["--ro-bind", p, p]
    args += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    size = ["--size", str(work_mb << 20)] if "--size" in tc.bwrap_flags else []
    # Every writable place is a size-capped tmpfs; /dev's own tmpfs would be unbounded.
    args += ["--proc", "/proc", "--dev", "/dev", *size, "--tmpfs", "/dev/shm"]
    args += [*size, "--tmpfs", "/tmp", *size, "--tmpfs", "/work"]
    if tc.supervisor:
        args += ["--ro-bind", tc.supervisor, SUPERVISOR_PATH]
    for fd, name, perms in files:
        args += ["--perms", perms, "--file", str(fd), f"/work/{name}"]
    args += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/work", "--clearenv"]
    for k, v in PROGRAM_ENV.items():
        args += ["--setenv", k, v]
    return [*args, "--"]


def supervisor_argv(
    tc: Toolchain,
    argv: list[str],
    limits: Limits,
    report_fd: int,
    artifact_fd: int,
    artifact: str | None,
) -> list[str]:
    """The supervisor command (inner.c or inner.py, same arguments) that runs `argv`."""
    if tc.supervisor:
        head = [SUPERVISOR_PATH if tc.secure else tc.supervisor]
    else:
        head = [tc.python, "-S", "-c", INNER_SRC]
    opts = {
        "--report-fd": report_fd,
        "--artifact-fd": artifact_fd if artifact else -1,
        "--cpu": int(limits.cpu_s) + 1,  # kernel backstop; the verdict uses the measured time
        "--wall": limits.wall_s,
        "--as": limits.memory_mb << 20,
        "--nproc": limits.nproc,
        "--fsize": limits.fsize_bytes,
        "--nofile": limits.nofile,
        "--pid-ns": int(tc.secure),
        "--artifact": artifact or "",
        "--artifact-max": ARTIFACT_MAX,
    }
    return [*head, *(x for k, v in opts.items() for x in (k, str(v))), "--", *argv]


def execute(
    tc: Toolchain,
    uid: int | None,
    argv: list[str],
    files: dict[str, tuple[bytes, str]],
    stdin: bytes,
    limits: Limits,
    work_mb: int,
    artifact: str | None = None,
) -> Raw:
    """Runs argv (relative to /work) in a fresh sandbox as `uid`; files: name -> (data, perms)."""
    rep_r, rep_w = os.pipe()
    art_r, art_w = os.pipe()  # a compiler's output file comes back here
    info_r, info_w = os.pipe()  # bwrap reports the host pid of the sandbox's pid 1 here
    fds = [(memfd(name, data), name, perms) for name, (data, perms) in files.items()]
    workdir = None
    try:
        if tc.secure:
            cmd = bwrap_argv(tc, fds, work_mb)
            cmd[1:1] = ["--info-fd", str(info_w)]
            cwd = None
        else:
            workdir = insecure_workdir(files, uid)
            cmd, cwd = [], workdir
        cmd += supervisor_argv(tc, argv, limits, rep_w, art_w, artifact)
        ids = {"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=[rep_w, art_w, info_w, *(fd for fd, _, _ in fds)],
            start_new_session=True,
            cwd=cwd,
            env=PROGRAM_ENV,
            **ids,
        )
    finally:
        for fd in (rep_w, art_w, info_w):
            os.close(fd)
        for fd, _, _ in fds:
            os.close(fd)
    box = Box(proc)
    with _ACTIVE_LOCK:
        _ACTIVE.add(box)
    try:
        deadline = time.monotonic() + limits.wall_s + GRACE_S
        raw = drive(box, rep_r, art_r, info_r, stdin, limits, deadline)
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.discard(box)
        box.close()
        for fd in (rep_r, art_r, info_r):
            os.close(fd)
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return raw


class Box:
    """A started sandbox: the outer bwrap process and, once known, a pidfd of its pid 1."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.pidfd = -1

    def set_child(self, info: bytes) -> None:
        try:
            self.pidfd = os.pidfd_open(json.loads(info)["child-pid"])
        except (ValueError, KeyError, OSError):
            self.pidfd = -1

    def kill(self) -> None:
        """Kills pid 1 (the namespace dies with it; bwrap reaps it and exits), else bwrap."""
        if self.pidfd >= 0:
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
                self.proc.wait(timeout=5)
                return
            except (OSError, subprocess.TimeoutExpired):
                pass
        try:  # --die-with-parent then ends pid 1, which the host's init reaps later
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


def insecure_workdir(files: dict[str, tuple[bytes, str]], uid: int | None) -> str:
    """Without bubblewrap: a private temporary directory instead of a tmpfs (NOT isolated)."""
    d = tempfile.mkdtemp(prefix="k15-sandbox-")
    for name, (data, perms) in files.items():
        p = os.path.join(d, name)
        Path(p).write_bytes(data)
        os.chmod(p, int(perms, 8))
        if uid is not None:
            os.chown(p, uid, uid)
    if uid is not None:
        os.chown(d, uid, uid)
    return d


def drive(box: Box, rep_r, art_r, info_r, stdin: bytes, limits: Limits, deadline: float) -> Raw:
    """Feeds stdin and reads stdout, stderr and the report at once, enforcing the caps."""
    proc = box.proc
    raw = Raw(report=None)
    out, err, rep, info, art = bytearray(), bytearray(), bytearray(), bytearray(), bytearray()
    err_total = 0
    sel = selectors.DefaultSelector()
    if stdin:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin, selectors.EVENT_WRITE)
    else:
        proc.stdin.close()
    for f in (proc.stdout, proc.stderr, rep_r, art_r, info_r):
        sel.register(f, selectors.EVENT_READ)
    view, pos = memoryview(stdin), 0
    killed = False
    while sel.get_map() and not killed:
        left = deadline - time.monotonic()
        if left <= 0:
            raw.hard_timeout = killed = True
            break
        for key, _ in sel.select(left):
            if key.fileobj is proc.stdin:
                try:
                    pos += os.write(proc.stdin.fileno(), view[pos : pos + 65536])
                except BlockingIOError:
                    continue
                except BrokenPipeError:  # the program did not read all of its input
                    pos = len(view)
                if pos >= len(view):
                    sel.unregister(proc.stdin)
                    proc.stdin.close()
                continue
            chunk = os.read(key.fd, 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                if key.fileobj == info_r:
                    box.set_child(bytes(info))
                continue
            if key.fileobj is proc.stdout:
                out += chunk
                if len(out) > limits.output_bytes:
                    raw.stdout_overflow = killed = True
            elif key.fileobj is proc.stderr:
                err_total += len(chunk)
                if len(err) < limits.stderr_keep:
                    err += chunk[: limits.stderr_keep - len(err)]
                if err_total > limits.output_bytes:
                    raw.stderr_overflow = killed = True
            elif key.fileobj == rep_r:
                rep += chunk
            elif key.fileobj == art_r:
                art += chunk
                killed = killed or len(art) > ARTIFACT_MAX
            else:
                info += chunk
    sel.close()
    if killed:
        box.kill()
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if not f.closed:
            f.close()
    raw.returncode = proc.wait()
    raw.stdout = bytes(out[: limits.output_bytes])
    raw.stderr = bytes(err)
    raw.artifact = bytes(art)
    if rep and not killed:
        try:
            raw.report = json.loads(rep)
        except ValueError:
            raw.report = None
    return raw


def kill_active() -> None:
    """Kills every running sandbox (service shutdown)."""
    with _ACTIVE_LOCK:
        boxes = list(_ACTIVE)
    for b in boxes:
        b.kill()
