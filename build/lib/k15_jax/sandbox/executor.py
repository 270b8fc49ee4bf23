"""Runs and judges programs on a bounded pool of sandbox slots.

Each slot has its own uid (base_uid + slot) so RLIMIT_NPROC, which the kernel counts per
uid, bounds one run without touching the others. Requests beyond the pool wait in a FIFO
queue for a free slot rather than fail. Compiled C++ programs are cached by source hash.
"""

import collections
import dataclasses
import hashlib
import os
import queue
import threading

from k15_jax.sandbox import isolate
from k15_jax.sandbox.config import SandboxConfig
from k15_jax.sandbox.languages import LANGUAGES
from k15_jax.sandbox.schema import JudgeRequest, RunRequest
from k15_jax.sandbox.toolchain import SandboxUnavailable, Toolchain
from k15_jax.sandbox.verdict import CHECKERS, classify

SELFTEST_SRC = "print(6 * 7)\n"


class Executor:
    def __init__(self, cfg: SandboxConfig, tc: Toolchain):
        self.cfg = cfg
        self.tc = tc
        self.workers = cfg.workers or os.cpu_count() or 1
        self.slots: queue.Queue[int] = queue.Queue()
        for i in range(self.workers):
            self.slots.put(i)
        self._cache: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._cache_lock = threading.Lock()
        self._compile_locks: dict[str, threading.Lock] = {}
        self._count_lock = threading.Lock()
        self.waiting = 0
        self.runs_done = 0

    def languages(self) -> list[str]:
        return sorted(n for n, lang in LANGUAGES.items() if lang.available(self.tc))

    def health(self) -> dict:
        return {
            "status": "ok",
            "secure": self.tc.secure,
            "languages": self.languages(),
            "workers": self.workers,
            "busy": self.workers - self.slots.qsize(),
            "waiting": self.waiting,
            "runs_done": self.runs_done,
            "python": self.tc.python,
        }

    def limits(self, cpu_s: float, memory_mb: int, nproc: int) -> isolate.Limits:
        c = self.cfg
        return isolate.Limits(
            cpu_s=cpu_s,
            wall_s=cpu_s * c.wall_factor + c.wall_extra_s,
            memory_mb=memory_mb,
            nproc=nproc,
            output_bytes=int(c.output_limit_mb * (1 << 20)),
            stderr_keep=c.stderr_keep_kb << 10,
            fsize_bytes=c.work_dir_mb << 20,
            nofile=c.nofile,
        )

    def sandboxed(self, argv, files, stdin: bytes, limits, **kw) -> isolate.Raw:
        """One isolated run on the next free slot (waits in FIFO order when all are busy)."""
        with self._count_lock:
            self.waiting += 1
        slot = self.slots.get()
        with self._count_lock:
            self.waiting -= 1
        try:
            uid = self.cfg.base_uid + slot if self.tc.drop_uid else None
            return isolate.execute(
                self.tc, uid, argv, files, stdin, limits, self.cfg.work_dir_mb, **kw
            )
        finally:
            self.slots.put(slot)
            with self._count_lock:
                self.runs_done += 1

    def compile(self, language: str, source: str) -> tuple[bytes | None, dict | None]:
        """(binary, None) or (None, CE/SE result). Concurrent compiles of one source share work."""
        key = hashlib.sha256(f"{language}\0{self.cfg.cxx_flags}\0{source}".encode()).hexdigest()
        with self._cache_lock:
            lock = self._compile_locks.setdefault(key, threading.Lock())
        with lock:
            with self._cache_lock:
                if key in self._cache:
                    self._cache.move_to_end(key)
                    return self._cache[key], None
            lang = LANGUAGES[language]
            c = self.cfg
            limits = self.limits(c.compile_time_limit_s, c.compile_memory_limit_mb, c.compile_nproc)
            raw = self.sandboxed(
                lang.compile_argv(self.tc, c.cxx_flags),
                {lang.source: (source.encode(), "0644")},
                b"",
                limits,
                artifact=lang.artifact,
            )
            v = classify(raw, limits.cpu_s, limits.memory_mb)
            if v == "OK" and raw.report and raw.report["artifact_bytes"] == len(raw.artifact) > 0:
                binary = raw.artifact
                with self._cache_lock:
                    self._cache[key] = binary
                    while len(self._cache) > c.binary_cache_size:
                        self._cache.popitem(last=False)
                    self._compile_locks.pop(key, None)
                return binary, None
            with self._cache_lock:
                self._compile_locks.pop(key, None)
            verdict = "SE" if v == "SE" else "CE"
            note = "" if v in ("OK", "RE", "SE") else f"\n[compiler stopped: {v}]"
            return None, result(verdict, raw, extra_stderr=note)

    def prepare(self, language: str, source: str):
        """(argv, files, compile_error check) ready to run, or a CE/SE result dict."""
        lang = LANGUAGES[language]
        if lang.compile_argv is None:
            files = {lang.source: (source.encode(), "0644")}
            return lang.run_argv(self.tc), files, lang.compile_error
        binary, failed = self.compile(language, source)
        if failed is not None:
            return failed
        return lang.run_argv(self.tc), {lang.artifact: (binary, "0755")}, None

    def execute_prepared(self, prepared, stdin: str, time_limit_s: float, memory_mb: int) -> dict:
        argv, files, compile_error = prepared
        limits = self.limits(time_limit_s, memory_mb, self.cfg.nproc)
        raw = self.sandboxed(argv, files, stdin.encode(), limits)
        return result(classify(raw, time_limit_s, memory_mb, compile_error), raw)

    def run(self, req: RunRequest) -> dict:
        prepared = self.prepare(req.language, req.source)
        if isinstance(prepared, dict):
            return {"id": req.id, **prepared}
        out = self.execute_prepared(prepared, req.stdin, req.time_limit_s, req.memory_limit_mb)
        return {"id": req.id, **out}

    def judge(self, req: JudgeRequest) -> dict:
        """Runs every case; pass_fraction = accepted cases / all cases."""
        n = len(req.cases)
        prepared = self.prepare(req.language, req.source)
        if isinstance(prepared, dict):
            cases = [{"verdict": prepared["verdict"]} for _ in req.cases]
            return judged(req.id, prepared["verdict"], cases, prepared["stderr"])
        check = CHECKERS[req.checker]
        cases = []
        for case in req.cases:
            if cases and req.stop_on_first_failure and cases[-1]["verdict"] not in ("AC", "OK"):
                cases.append({"verdict": "SKIPPED"})
                continue
            r = self.execute_prepared(prepared, case.stdin, req.time_limit_s, req.memory_limit_mb)
            verdict = r["verdict"]
            if verdict == "OK" and case.expected is not None:
                verdict = "AC" if check(r["stdout"], case.expected) else "WA"
            entry = {"verdict": verdict, "time_s": r["time_s"], "memory_mb": r["memory_mb"]}
            if req.return_output:
                entry["stdout"] = r["stdout"]
                entry["stderr"] = r["stderr"]
            cases.append(entry)
        first_bad = next((c["verdict"] for c in cases if c["verdict"] not in ("AC", "OK")), None)
        assert len(cases) == n
        return judged(req.id, first_bad or ("AC" if all_ac(cases) else "OK"), cases, "")

    def selftest(self) -> None:
        """Runs a tiny program end to end; raises SandboxUnavailable with the reason if it fails."""
        prepared = self.prepare("python", SELFTEST_SRC)
        r = self.execute_prepared(prepared, "", 5.0, 256)
        if r["verdict"] != "OK" or r["stdout"].strip() != "42":
            raise SandboxUnavailable(
                f"sandbox self-test failed (verdict {r['verdict']}): {r['stderr'].strip()[:2000]}; "
                "check that bubblewrap can create user namespaces (sysctl user.max_user_namespaces"
                " > 0; on Ubuntu kernel.apparmor_restrict_unprivileged_userns=0), or pass "
                "--insecure to run WITHOUT isolation"
            )


def all_ac(cases: list[dict]) -> bool:
    return all(c["verdict"] == "AC" for c in cases)


def judged(rid, verdict: str, cases: list[dict], compile_stderr: str) -> dict:
    passed = sum(c["verdict"] == "AC" for c in cases)
    return {
        "id": rid,
        "verdict": verdict,
        "passed": passed,
        "total": len(cases),
        "pass_fraction": passed / len(cases),
        "cases": cases,
        "compile_stderr": compile_stderr,
    }


def result(verdict: str, raw: isolate.Raw, extra_stderr: str = "") -> dict:
    r = raw.report or {}
    stderr = raw.stderr.decode("utf-8", "replace") + extra_stderr
    if r.get("exec_error"):
        stderr += f"\n[sandbox: cannot start program: {r['exec_error']}]"
    if raw.report is None and verdict == "SE":
        stderr += f"\n[sandbox: supervisor gave no report (exit status {raw.returncode})]"
    stdout = raw.stdout[: 1 << 16] if verdict == "OLE" else raw.stdout  # only a prefix
    return {
        "verdict": verdict,
        "stdout": stdout.decode("utf-8", "replace"),
        "stderr": stderr,
        "time_s": round(r.get("cpu_s", 0.0), 4),
        "wall_s": round(r.get("wall_s", 0.0), 4),
        "memory_mb": round(r.get("maxrss_kb", 0) / 1024, 2),
        "exit_code": r.get("exit_code"),
        "signal": r.get("signal"),
    }


def with_fallback(cfg: SandboxConfig, tc: Toolchain) -> tuple[Executor, list[str]]:
    """An executor that passed its self-test.

    If the compiled supervisor fails (supervisor=auto), the Python one is tried; isolation
    is given up only when cfg.insecure allows it.
    """
    tries = [(tc, [])]
    if tc.supervisor and cfg.supervisor == "auto":
        note = "the compiled supervisor failed its self-test; using the Python one"
        tries.append((dataclasses.replace(tc, supervisor=""), [note]))
    if cfg.insecure and tc.secure:
        note = "running INSECURE (no isolation) because --insecure was given"
        tries += [(dataclasses.replace(t, secure=False), [*w, note]) for t, w in tries]
    first = None
    for t, notes in tries:
        ex = Executor(cfg, t)
        try:
            ex.selftest()
            return ex, ([str(first)] if first else []) + notes
        except SandboxUnavailable as e:
            first = first or e
    raise first
