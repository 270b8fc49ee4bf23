"""Starting and stopping the service: refusal without isolation, the insecure flag, cleanup."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from k15_jax.sandbox import SandboxUnavailable, start_sandbox

ROOT = Path(__file__).resolve().parents[1]


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except OSError:
        return True


def test_refuses_without_bubblewrap():
    with pytest.raises(SandboxUnavailable, match="bubblewrap.*--insecure"):
        with start_sandbox(workers=1, bwrap_path="/nonexistent/bwrap"):
            pass


def test_refuses_when_sandbox_cannot_start():
    # /bin/false stands in for a bwrap that exists but cannot create namespaces.
    with pytest.raises(SandboxUnavailable, match="self-test failed"):
        with start_sandbox(workers=1, bwrap_path="/bin/false"):
            pass


def test_cli_exit_status_and_reason():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "k15_jax.sandbox", "serve", "--port", "0"]
    proc = subprocess.run(
        [*cmd, "--bwrap-path", "/nonexistent/bwrap"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "refusing to start" in proc.stderr and "apt-get install -y bubblewrap" in proc.stderr


def test_insecure_flag_runs_without_bubblewrap():
    with start_sandbox(workers=1, bwrap_path="/nonexistent/bwrap", insecure=True) as sb:
        assert sb.info["secure"] is False and sb.info["warnings"]
        assert sb.health()["secure"] is False
        r = sb.run("python", "print(sum(range(5)))")
        assert (r["verdict"], r["stdout"]) == ("OK", f"{sum(range(5))}\n")
        # Limits still apply without isolation.
        assert sb.run("python", "while True: pass", time_limit_s=0.3)["verdict"] == "TLE"


def test_stops_on_exit_and_binds_loopback():
    with start_sandbox(workers=1) as sb:
        port = sb.info["port"]
        assert sb.info["url"] == f"http://127.0.0.1:{port}"
        assert not refused(port)
    assert refused(port)


def test_exits_when_its_parent_dies(tmp_path):
    """A crashed trainer must not leave the service behind."""
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from k15_jax.sandbox import start_sandbox
        with start_sandbox(workers=1) as sb:
            print(sb.info["port"], flush=True)
            time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    port = int(parent.stdout.readline())
    assert not refused(port)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    for _ in range(100):
        if refused(port):
            break
        time.sleep(0.2)
    assert refused(port)


def test_startup_line_is_json():
    with start_sandbox(workers=1) as sb:
        line = json.dumps(sb.info)
        assert json.loads(line)["languages"] == sorted(sb.health()["languages"])
