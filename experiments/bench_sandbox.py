"""Throughput and latency of the sandbox service vs plain unsandboxed subprocess runs.

Both sides run the same small programs with the same concurrency: `--requests` runs are
submitted at once (as a rollout batch would) and served by `--workers` parallel slots
(sandbox) or threads (plain). Latency is per run, from submission to result, so it includes
queueing; `sequential_ms` is the unloaded per-run latency (one run at a time).

    python experiments/bench_sandbox.py --requests 200 --workers 2

Prints one JSON object as its last line.
"""

import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from k15_jax.sandbox import start_sandbox  # noqa: E402

PROGRAMS = {
    "python": ("a, b = map(int, input().split())\nprint(a * b + {i})\n", "main.py"),
    "cpp": (
        '#include <cstdio>\nint main(){long long a,b;scanf("%lld %lld",&a,&b);'
        'printf("%lld\\n",a*b+{i});}\n',
        "main.cpp",
    ),
}


def percentiles(lat: list[float]) -> dict:
    s = sorted(lat)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))]
    return {"p50_ms": round(1000 * pick(0.50), 2), "p99_ms": round(1000 * pick(0.99), 2)}


def burst(fn, n: int, pool_size: int) -> dict:
    """Submits n calls at once to pool_size threads; checks every answer; times each call."""
    t0 = time.perf_counter()

    def timed(i):
        ok = fn(i)
        return ok, time.perf_counter() - t0

    with concurrent.futures.ThreadPoolExecutor(pool_size) as pool:
        results = list(pool.map(timed, range(n)))
    total = time.perf_counter() - t0
    bad = sum(not ok for ok, _ in results)
    return {
        "runs_per_s": round(n / total, 2),
        **percentiles([t for _, t in results]),
        "wrong_results": bad,
    }


def sequential(fn, n: int) -> float:
    lat = []
    for i in range(n):
        t = time.perf_counter()
        assert fn(i)
        lat.append(time.perf_counter() - t)
    return round(1000 * sorted(lat)[len(lat) // 2], 2)


def plain_runner(language: str, python: str, workdir: Path):
    """A function i -> bool running program(i) as a plain subprocess (no isolation)."""
    template, name = PROGRAMS[language]
    # The constant lives in the input here so one build serves every i; outputs are identical.
    src = template.replace("{i}", "0")
    path = workdir / name
    path.write_text(src)
    if language == "cpp":
        exe = workdir / "prog"
        subprocess.run(["g++", "-O2", "-std=gnu++17", "-o", str(exe), str(path)], check=True)
        cmd = [str(exe)]
    else:
        cmd = [python, "-B", str(path)]

    def run(i):
        p = subprocess.run(cmd, input=f"{i} 3\n", capture_output=True, text=True, timeout=30)
        return p.returncode == 0 and int(p.stdout) == 3 * i

    return run


def sandbox_runner(client, language: str):
    template, _ = PROGRAMS[language]
    src = template.replace("{i}", "0")

    def run(i):
        r = client.run(language, src, f"{i} 3\n", time_limit_s=5.0, memory_limit_mb=256, id=i)
        return r["id"] == i and r["verdict"] == "OK" and int(r["stdout"]) == 3 * i

    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--sequential", type=int, default=20)
    ap.add_argument("--languages", default="python,cpp")
    ap.add_argument("--supervisor", default="auto", help="in-sandbox supervisor: auto, c, python")
    args = ap.parse_args()
    langs = [lang for lang in args.languages.split(",") if lang]
    if "cpp" in langs and shutil.which("g++") is None:
        langs.remove("cpp")
    out = {
        "bench": "sandbox",
        "cpus": os.cpu_count(),
        "workers": args.workers,
        "requests": args.requests,
    }
    sandbox = start_sandbox(workers=args.workers, supervisor=args.supervisor)
    with sandbox as client, tempfile.TemporaryDirectory() as tmp:
        python = client.info["python"]  # the same interpreter on both sides
        out["interpreter"] = python
        out["supervisor"] = client.info["supervisor"]
        for lang in langs:
            sb = sandbox_runner(client, lang)
            assert sb(1)  # warm-up; for C++ this also compiles and caches the binary
            plain = plain_runner(lang, python, Path(tmp))
            out[lang] = {
                "sandbox": burst(sb, args.requests, args.requests),
                "plain": burst(plain, args.requests, args.workers),
                "sequential_ms": {
                    "sandbox": sequential(sb, args.sequential),
                    "plain": sequential(plain, args.sequential),
                },
            }
            r = out[lang]
            r["throughput_ratio_plain_over_sandbox"] = round(
                r["plain"]["runs_per_s"] / r["sandbox"]["runs_per_s"], 2
            )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
