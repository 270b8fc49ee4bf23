"""HTTP front of the sandbox: POST /run, POST /judge, GET /health (JSON in, JSON out).

Standard-library ThreadingHTTPServer: one thread per connection, while the executor's slot
pool bounds how many programs run at once. Each connection carries exactly one request and
its response, so responses cannot be mixed up; requests may also carry an "id" that is
echoed back. Malformed requests get a 4xx with a message and never reach a sandbox.
"""

import json
import signal
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from k15_jax.sandbox import isolate
from k15_jax.sandbox.config import SandboxConfig
from k15_jax.sandbox.executor import Executor, with_fallback
from k15_jax.sandbox.schema import RequestError, parse_judge, parse_run
from k15_jax.sandbox.toolchain import resolve_toolchain

ROUTES = {"/run": (parse_run, "run"), "/judge": (parse_judge, "judge")}


class Handler(BaseHTTPRequestHandler):
    server_version = "k15-sandbox/1"

    def setup(self):
        self.timeout = self.server.cfg.read_timeout_s  # a stalled client cannot pin a thread
        super().setup()

    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass  # one line per request would flood the trainer's log under load

    def send_json(self, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def read_json(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise RequestError(411, "chunked bodies are not supported; send Content-Length")
        length = self.headers.get("Content-Length")
        if length is None:
            raise RequestError(411, "missing Content-Length header")
        try:
            n = int(length)
        except ValueError:
            raise RequestError(400, f"Content-Length {length!r} is not an integer") from None
        limit = int(self.server.cfg.max_body_mb * (1 << 20))
        if n < 0 or n > limit:
            raise RequestError(413, f"body of {n} bytes; the limit is {limit} (max_body_mb)")
        data = self.rfile.read(n)
        if len(data) < n:
            raise RequestError(400, f"body ended after {len(data)} of {n} bytes")
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise RequestError(400, f"body is not valid JSON: {e}") from None

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self.send_json(200, self.server.executor.health())
        elif path in ROUTES:
            self.send_json(405, {"error": f"{path} takes POST with a JSON body"})
        else:
            self.send_json(404, {"error": f"no endpoint {path}; use /run, /judge or /health"})

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        if path not in ROUTES:
            status = 405 if path == "/health" else 404
            self.send_json(status, {"error": f"no POST endpoint {path}; use /run or /judge"})
            return
        parse, method = ROUTES[path]
        ex: Executor = self.server.executor
        try:
            req = parse(self.read_json(), self.server.cfg, set(ex.languages()))
            out = getattr(ex, method)(req)
        except RequestError as e:
            self.send_json(e.status, {"error": e.message})
            return
        except TimeoutError:
            self.send_json(408, {"error": "request body not received in time"})
            return
        except Exception as e:  # a bug of ours, not the request's: say so and keep serving
            traceback.print_exc(file=sys.stderr)
            self.send_json(500, {"error": f"internal error: {type(e).__name__}: {e}"})
            return
        self.send_json(200, out)

    def _not_allowed(self):
        self.send_json(405, {"error": f"method {self.command} not allowed; use GET or POST"})

    do_PUT = do_DELETE = do_PATCH = _not_allowed


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # a burst of a rollout batch queues in the kernel, not refused

    def __init__(self, cfg: SandboxConfig, executor: Executor):
        self.cfg = cfg
        self.executor = executor
        super().__init__((cfg.host, cfg.port), Handler)


def watch_parent(pid: int, server: SandboxServer) -> None:
    """Stops the service when the process that started it is gone (e.g. a crashed trainer)."""
    import os

    while True:
        time.sleep(1.0)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            threading.Thread(target=server.shutdown, daemon=True).start()
            return
        except PermissionError:
            pass


def serve(cfg: SandboxConfig) -> None:
    """Checks the sandbox, binds, prints one JSON line with the URL, serves until SIGTERM."""

    def exit_now(signum, frame):  # before serving: unwind normally so atexit cleanup runs
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, exit_now)
    signal.signal(signal.SIGINT, exit_now)
    tc, warnings = resolve_toolchain(
        cfg.bwrap_path, cfg.python_path, cfg.cxx_path, cfg.insecure, cfg.supervisor
    )
    executor, more = with_fallback(cfg, tc)
    server = SandboxServer(cfg, executor)
    host, port = server.server_address[:2]
    info = {
        "url": f"http://{host}:{port}",
        "port": port,
        "secure": executor.tc.secure,
        "workers": executor.workers,
        "languages": executor.languages(),
        "python": executor.tc.python,
        "supervisor": "c" if executor.tc.supervisor else "python",
        "warnings": warnings + more,
    }

    def stop(signum, frame):  # shutdown() waits for serve_forever, so not from this thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for w in warnings + more:
        print(f"k15 sandbox WARNING: {w}", file=sys.stderr, flush=True)
    print(json.dumps(info), flush=True)
    if cfg.parent_pid:
        threading.Thread(target=watch_parent, args=(cfg.parent_pid, server), daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        isolate.kill_active()
