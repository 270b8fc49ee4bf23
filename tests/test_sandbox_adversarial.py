"""Adversarial programs against the running sandbox service (issue acceptance 1).

Each program gets its expected verdict; afterwards the host is unchanged (no file appeared or
changed, no process of the sandbox uids is left) and the service still answers.
"""

import os
import socket
import textwrap
import threading
import time
from pathlib import Path

import pytest

from k15_jax.sandbox import SandboxConfig, start_sandbox

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 2
# Own uid range, so a service of another test session on this host cannot be mistaken for ours.
BASE_UID = SandboxConfig().base_uid + 1000 + 10 * (os.getpid() % 10_000)
OUTPUT_MB = 4


def sandbox_pids() -> list[tuple[int, int]]:
    """(pid, real uid) of every host process running as one of the slot uids."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            status = Path(f"/proc/{d}/status").read_text()
        except OSError:
            continue
        uid = int(next(ln for ln in status.splitlines() if ln.startswith("Uid:")).split()[1])
        if BASE_UID <= uid < BASE_UID + WORKERS:
            found.append((int(d), uid))
    return found


def tree_state(path: Path) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*")}


@pytest.fixture(scope="module", params=["c", "python"])
def sandbox(request, tmp_path_factory):
    """A service started from a directory with a secret in it (its cwd must stay invisible).

    Run once with each in-sandbox supervisor (compiled inner.c and its Python twin).
    """
    caller = tmp_path_factory.mktemp("caller")
    (caller / "secret.txt").write_text("caller-secret-7f3a\n")
    old = os.getcwd()
    os.chdir(caller)
    try:
        with start_sandbox(
            workers=WORKERS, output_limit_mb=OUTPUT_MB, supervisor=request.param, base_uid=BASE_UID
        ) as client:
            assert client.info["supervisor"] == request.param
            os.chdir(old)
            client.caller_dir = caller
            yield client
    finally:
        os.chdir(old)


@pytest.fixture
def host(sandbox):
    """Snapshot of what a run must not change; checked after the test, with a health probe."""
    before = tree_state(sandbox.caller_dir)
    yield
    for _ in range(50):  # the slot is freed when bwrap has exited; give the kernel a moment
        if not sandbox_pids():
            break
        time.sleep(0.1)
    assert sandbox_pids() == [], "a sandboxed process outlived its run"
    assert tree_state(sandbox.caller_dir) == before
    ok = sandbox.run("python", "print(sum(range(10)))")
    assert (ok["verdict"], ok["stdout"]) == ("OK", f"{sum(range(10))}\n")


def py(src: str) -> str:
    return textwrap.dedent(src).lstrip()


def test_read_etc_shadow(sandbox, host):
    r = sandbox.run("python", "print(open('/etc/shadow').read())")
    assert r["verdict"] == "RE"
    assert "FileNotFoundError" in r["stderr"]
    first = Path("/etc/shadow").read_text().splitlines()[0]
    assert first not in r["stdout"] + r["stderr"]


def test_caller_and_project_files_are_invisible(sandbox, host):
    targets = [
        str(sandbox.caller_dir / "secret.txt"),
        str(ROOT / "pyproject.toml"),
        str(ROOT / "k15_jax" / "sandbox" / "config.py"),
        "/root/.bashrc",
        "/proc/1/root/etc/hostname",
    ]
    src = py(
        f"""
        import os
        for p in {targets!r}:
            try:
                open(p).read()
                print("READ", p)
            except OSError as e:
                print("DENIED", p, type(e).__name__)
        print("SANDBOX", os.listdir("/sandbox") if os.path.isdir("/sandbox") else [])
        print("ROOT", sorted(os.listdir("/")))
        print("ETC", sorted(os.listdir("/etc")))
        """
    )
    r = sandbox.run("python", src)
    assert r["verdict"] == "OK", r
    lines = r["stdout"].splitlines()
    assert [ln.split()[0] for ln in lines[: len(targets)]] == ["DENIED"] * len(targets)
    assert "caller-secret-7f3a" not in r["stdout"]
    visible = set(eval(lines[-2][len("ROOT ") :]))
    # Only the runtime (/usr and its compatibility links), the supervisor and private mounts.
    allowed = {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "dev", "proc"}
    assert visible <= allowed | {"sandbox", "tmp", "work"}, visible
    assert set(eval(lines[-1][len("ETC ") :])) <= {"ld.so.cache"}
    assert set(eval(lines[-3][len("SANDBOX ") :])) <= {"supervisor"}


def test_write_outside_work_dir(sandbox, host):
    marker = f"k15-sandbox-escape-{os.getpid()}"
    targets = ["/" + marker, "/usr/" + marker, "/etc/" + marker, "/dev/" + marker]
    targets += [str(sandbox.caller_dir / marker), str(ROOT / marker)]
    src = py(
        f"""
        for p in {targets!r}:
            try:
                open(p, "w").write("x")
                print("WROTE", p)
            except OSError as e:
                print("DENIED", p, type(e).__name__)
        open("/work/ok.txt", "w").write("fine")   # the work dir is writable
        open("/tmp/{marker}", "w").write("private") # so is a private /tmp
        print("WORK", open("/work/ok.txt").read())
        """
    )
    r = sandbox.run("python", src)
    assert r["verdict"] == "OK", r
    lines = r["stdout"].splitlines()
    assert [ln.split()[0] for ln in lines[:-1]] == ["DENIED"] * len(targets)
    assert lines[-1] == "WORK fine"
    for p in [*targets, f"/tmp/{marker}"]:
        assert not os.path.exists(p), p


def test_connect_to_host_port(sandbox, host):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        src = py(
            f"""
            import socket
            s = socket.create_connection(("127.0.0.1", {port}), timeout=2)
            s.sendall(b"escaped")
            print("CONNECTED")
            """
        )
        r = sandbox.run("python", src)
        assert r["verdict"] == "RE", r
        assert "CONNECTED" not in r["stdout"]
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody ever connected
    finally:
        listener.close()


def test_no_privileges_and_unprivileged_uid_outside(sandbox, host):
    src = py(
        """
        import os, sys, time
        status = open("/proc/self/status").read()
        cap = [ln.split()[1] for ln in status.splitlines() if ln.startswith("CapEff")][0]
        print("UID", os.getuid(), "CAP", cap)
        try:
            os.setuid(0)
            print("SETUID ok")
        except OSError:  # EPERM, or EINVAL: uid 0 is not even mapped in the namespace
            print("SETUID denied")
        sys.stdout.flush()
        time.sleep(1.5)
        """
    )
    seen, done = [], threading.Event()

    def watch():
        while not done.is_set():
            seen.extend(sandbox_pids())
            time.sleep(0.05)

    t = threading.Thread(target=watch)
    t.start()
    try:
        r = sandbox.run("python", src, time_limit_s=1.0)
    finally:
        done.set()
        t.join()
    assert r["verdict"] == "OK", r
    uid_line, setuid_line = r["stdout"].splitlines()
    assert uid_line.split()[3] == "0000000000000000"  # no effective capabilities
    assert setuid_line == "SETUID denied"
    # Seen from the host, the run's processes have an unprivileged, slot-specific uid.
    assert seen and all(BASE_UID <= uid < BASE_UID + WORKERS for _, uid in seen)


def test_fork_bomb_is_contained(sandbox, host):
    r = sandbox.run("python", "import os\nwhile True:\n    os.fork()\n", time_limit_s=1.0)
    assert r["verdict"] == "RE", r
    assert "BlockingIOError" in r["stderr"]  # fork refused by the process limit


def test_allocate_10_gb(sandbox, host):
    r = sandbox.run("python", "x = bytearray(10 * 2**30)\nprint(len(x))", memory_limit_mb=256)
    assert r["verdict"] == "MLE", r
    src = "#include <cstdio>\n#include <vector>\nint main(){std::vector<char> v(10ULL << 30, 1);"
    src += 'printf("%d\\n", v[12345]);}\n'
    r = sandbox.run("cpp", src, memory_limit_mb=256)
    assert r["verdict"] == "MLE", r


def test_infinite_loop(sandbox, host):
    r = sandbox.run("python", "while True:\n    pass\n", time_limit_s=0.5)
    assert r["verdict"] == "TLE", r
    # Stopped for CPU time after using its allowance, or (on a very busy host) for wall time.
    assert r["time_s"] > 0.5 or r["wall_s"] >= 0.5 * SandboxConfig().wall_factor


def test_print_1_gb(sandbox, host):
    src = (
        "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)\n"
    )
    r = sandbox.run("python", src, time_limit_s=10.0)
    assert r["verdict"] == "OLE", r
    assert len(r["stdout"]) <= OUTPUT_MB << 20


def test_sleep_past_wall_limit(sandbox, host):
    r = sandbox.run("python", "import time\ntime.sleep(60)\nprint('woke')", time_limit_s=0.5)
    assert r["verdict"] == "TLE", r
    assert r["stdout"] == ""
    assert r["wall_s"] < 60  # killed, not waited for


def test_background_process_does_not_outlive_run(sandbox, host):
    src = py(
        """
        import os, subprocess, sys
        subprocess.Popen(["sleep", "1000"], start_new_session=True)
        if os.fork() == 0:          # a double-forked daemon
            os.setsid()
            if os.fork() == 0:
                import time
                while True:
                    time.sleep(0.1)
            os._exit(0)
        print("parent done")
        """
    )
    r = sandbox.run("python", src)
    assert (r["verdict"], r["stdout"]) == ("OK", "parent done\n"), r
    # `host` then checks that no process of the sandbox uids is left.


def test_cpp_compile_error(sandbox, host):
    r = sandbox.run("cpp", "int main() { return undeclared_name; }\n")
    assert r["verdict"] == "CE", r
    assert "undeclared_name" in r["stderr"] and "error" in r["stderr"]


def test_cpp_cannot_include_host_files(sandbox, host):
    secret = sandbox.caller_dir / "secret.txt"
    r = sandbox.run("cpp", f'#include "{secret}"\nint main() {{}}\n')
    assert r["verdict"] == "CE", r
    assert "caller-secret-7f3a" not in r["stderr"]
