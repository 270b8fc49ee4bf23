"""Client of the sandbox service, and `start_sandbox`, which runs the service as a subprocess.

with start_sandbox(workers=4) as sb:
    r = sb.run("python", "print(input())", "hi\\n", time_limit_s=2, memory_limit_mb=256)
    j = sb.judge("cpp", src, [{"stdin": "1 2\\n", "expected": "3\\n"}])
    reward = j["pass_fraction"]
"""

import collections
import contextlib
import dataclasses
import json
import os
import selectors
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from k15_jax.sandbox.config import SandboxConfig
from k15_jax.sandbox.toolchain import SandboxUnavailable

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class SandboxError(RuntimeError):
    """The service rejected a request (4xx) or failed (5xx); `status` is the HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(f"sandbox returned HTTP {status}: {message}")
        self.status = status
        self.message = message


class SandboxClient:
    """Talks JSON over HTTP to one service. Thread-safe: each call is its own connection."""

    def __init__(self, url: str, timeout_s: float = 600.0):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        # A proxy from the environment must never see loopback traffic.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(self, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, headers={"Content-Type": "application/json"}
        )
        try:
            with self._opener.open(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            try:
                msg = json.loads(e.read()).get("error", "")
            except ValueError:
                msg = e.reason
            raise SandboxError(e.code, msg) from None

    def health(self) -> dict:
        return self._call("/health")

    def run(
        self,
        language: str,
        source: str,
        stdin: str = "",
        time_limit_s: float = 2.0,
        memory_limit_mb: int = 256,
        id: str | int | None = None,  # noqa: A002 - echoed back by the service
    ) -> dict:
        """{"verdict", "stdout", "stderr", "time_s", "wall_s", "memory_mb", "exit_code", ...}."""
        body = {
            "language": language,
            "source": source,
            "stdin": stdin,
            "time_limit_s": time_limit_s,
            "memory_limit_mb": memory_limit_mb,
        }
        if id is not None:
            body["id"] = id
        return self._call("/run", body)

    def judge(
        self,
        language: str,
        source: str,
        cases: list,
        time_limit_s: float = 2.0,
        memory_limit_mb: int = 256,
        checker: str = "lines",
        return_output: bool = False,
        stop_on_first_failure: bool = False,
        id: str | int | None = None,  # noqa: A002
    ) -> dict:
        """cases: [{"stdin", "expected"}] or [(stdin, expected)]; returns pass_fraction etc."""
        cases = [c if isinstance(c, dict) else {"stdin": c[0], "expected": c[1]} for c in cases]
        body = {
            "language": language,
            "source": source,
            "cases": cases,
            "time_limit_s": time_limit_s,
            "memory_limit_mb": memory_limit_mb,
            "checker": checker,
            "return_output": return_output,
            "stop_on_first_failure": stop_on_first_failure,
        }
        if id is not None:
            body["id"] = id
        return self._call("/judge", body)


def config_args(cfg: SandboxConfig) -> list[str]:
    """SandboxConfig -> `serve` flags (the inverse of __main__'s parser)."""
    args = []
    for f in dataclasses.fields(cfg):
        args += [f"--{f.name.replace('_', '-')}", str(getattr(cfg, f.name))]
    return args


@contextlib.contextmanager
def start_sandbox(
    port: int | None = None,
    workers: int | None = None,
    config: SandboxConfig | None = None,
    **kw,
):
    """Starts `python -m k15_jax.sandbox serve` on 127.0.0.1, yields a SandboxClient, stops it.

    port/workers/kw (other SandboxConfig fields) override `config`; without a config the
    port is 0 (any free one) and workers 0 (one per CPU). The service exits by itself if
    this process dies. Raises SandboxUnavailable with the service's reason when it refuses
    to start (e.g. bubblewrap missing and no insecure flag). `client.info` holds the
    service's start-up line (url, port, secure, workers, languages, warnings).
    """
    cfg = config or SandboxConfig(port=0, workers=0)
    if port is not None:
        kw["port"] = port
    if workers is not None:
        kw["workers"] = workers
    cfg = dataclasses.replace(cfg, parent_pid=os.getpid(), **kw)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "k15_jax.sandbox", "serve", *config_args(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    tail: collections.deque[str] = collections.deque(maxlen=40)
    threading.Thread(target=_forward_stderr, args=(proc, tail), daemon=True).start()
    try:
        line = _first_line(proc, timeout_s=120.0)
        if not line:
            proc.wait(timeout=10)
            raise SandboxUnavailable(
                f"sandbox service exited with status {proc.returncode}: " + "".join(tail).strip()
            )
        info = json.loads(line)
        client = SandboxClient(info["url"])
        client.info = info
        yield client
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _first_line(proc: subprocess.Popen, timeout_s: float) -> str:
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sel.select(0.5):
            return proc.stdout.readline().decode()
    raise SandboxUnavailable(f"sandbox service printed nothing within {timeout_s:.0f} s")


def _forward_stderr(proc: subprocess.Popen, tail: collections.deque) -> None:
    for raw in proc.stderr:
        line = raw.decode("utf-8", "replace")
        tail.append(line)
        sys.stderr.write(line)
