"""Supervisor that runs INSIDE the sandbox as its pid 1 (passed to the interpreter with -c).

Python twin of inner.c with the same arguments and report; used when no C compiler is
available. Standalone standard-library code, so any Python 3 inside the sandbox can run it.
It forks the program with resource limits set, waits with a wall deadline, measures CPU
time and peak RSS from wait4's rusage (bubblewrap's outer process cannot see them), kills
everything the program left, writes an optional artifact file raw to --artifact-fd and one
JSON report to --report-fd. As pid 1 of the pid namespace it cannot be signalled by the
program, and it is non-dumpable so the program cannot ptrace it or open its fds via /proc.

usage: -c SRC --report-fd N --artifact-fd N --cpu S --wall S --as B --nproc N --fsize B
       --nofile N --pid-ns 0|1 --artifact PATH --artifact-max B -- PROGRAM ARGS...
"""

import json
import os
import resource
import select
import signal
import sys
import time

KEYS = {
    "--report-fd": ("report_fd", int),
    "--artifact-fd": ("artifact_fd", int),
    "--cpu": ("cpu", float),
    "--wall": ("wall", float),
    "--as": ("as_bytes", int),
    "--nproc": ("nproc", int),
    "--fsize": ("fsize", int),
    "--nofile": ("nofile", int),
    "--pid-ns": ("pid_ns", int),
    "--artifact": ("artifact", str),
    "--artifact-max": ("artifact_max", int),
}


def parse(args):
    o = {"artifact_fd": -1, "artifact": ""}
    i = 0
    while args[i] != "--":
        name, kind = KEYS[args[i]]
        o[name] = kind(args[i + 1])
        i += 2
    o["argv"] = args[i + 1 :]
    return o


def make_undumpable():
    try:
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except Exception:
        pass


def child_exec(o, err_w):
    """In the forked child: limits, then exec. Never returns."""
    try:
        if not o["pid_ns"]:
            os.setsid()  # without a pid namespace the process group is what we kill
        cpu = int(o["cpu"])
        lim = [
            (resource.RLIMIT_CPU, cpu, cpu + 1),
            (resource.RLIMIT_NPROC, o["nproc"], o["nproc"]),
            (resource.RLIMIT_FSIZE, o["fsize"], o["fsize"]),
            (resource.RLIMIT_NOFILE, o["nofile"], o["nofile"]),
            (resource.RLIMIT_CORE, 0, 0),
        ]
        if o["as_bytes"] > 0:
            lim.append((resource.RLIMIT_AS, o["as_bytes"], o["as_bytes"]))
            lim.append((resource.RLIMIT_STACK, o["as_bytes"], o["as_bytes"]))
        for kind, soft, hard in lim:
            resource.setrlimit(kind, (soft, hard))
        os.execv(o["argv"][0], o["argv"])
    except BaseException as e:  # exec failed: a sandbox problem, not the program's
        try:
            os.write(err_w, f"{o['argv'][0]}: {e}".encode()[:500])
        finally:
            os._exit(127)


def wait_deadline(pid, deadline):
    """Waits for pid until the deadline; returns True on timeout."""
    pidfd = -1
    if hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            pidfd = -1
    try:
        while True:
            # WNOWAIT: leave it for wait4, which collects the rusage.
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            if info is not None and info.si_pid == pid:
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            if pidfd >= 0:
                select.select([pidfd], [], [], left)
            else:
                time.sleep(min(0.002, left))
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def kill_all(pid, pid_ns):
    try:
        if pid_ns:
            os.kill(-1, signal.SIGKILL)  # from pid 1: every other process of the namespace
        else:
            os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def send_artifact(o):
    path, fd = o["artifact"], o["artifact_fd"]
    try:
        if fd < 0 or not path or os.path.getsize(path) > o["artifact_max"]:
            return -1
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return -1
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return len(data)


def main():
    o = parse(sys.argv[1:])
    make_undumpable()
    keep = sorted(fd for fd in (o["report_fd"], o["artifact_fd"]) if fd >= 3)
    lo = 3
    for fd in keep:  # fds bubblewrap was handed stay out of the program
        os.closerange(lo, fd)
        lo = fd + 1
    os.closerange(lo, 1 << 16)
    err_r, err_w = os.pipe()  # close-on-exec: EOF without data means exec succeeded
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(err_r)
        for fd in keep:
            os.close(fd)
        child_exec(o, err_w)
    os.close(err_w)
    timed_out = wait_deadline(pid, t0 + o["wall"])
    kill_all(pid, o["pid_ns"])
    _, status, ru = os.wait4(pid, 0)
    wall = time.monotonic() - t0
    err = os.read(err_r, 600)
    exited = os.WIFEXITED(status)
    artifact = -1
    if exited and os.WEXITSTATUS(status) == 0 and not timed_out:
        artifact = send_artifact(o)
    if o["artifact_fd"] >= 0:
        os.close(o["artifact_fd"])
    report = {
        "exit_code": os.WEXITSTATUS(status) if exited else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "wall_s": wall,
        "maxrss_kb": ru.ru_maxrss,
        "wall_timeout": timed_out,
        "exec_error": err.decode("utf-8", "replace") if err else None,
        "artifact_bytes": artifact,
    }
    data = json.dumps(report).encode()
    while data:
        data = data[os.write(o["report_fd"], data) :]
    os.close(o["report_fd"])


main()
