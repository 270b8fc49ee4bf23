"""Benchmark statistics (report sec. 3.1 tables): pass@k, a 95% interval for pass@1, lengths.

Letters: B prompts, K samples per prompt (n in the pass@k formula), c correct of them.

    pass@1  = (1/B) sum_i c_i / K                       (mean over prompts of the sample mean)
    pass@k  = (1/B) sum_i [1 - C(K - c_i, k) / C(K, k)] (Chen et al. 2021, unbiased for k <= K)
    SE      = std_i(c_i / K, ddof=1) / sqrt(B)          (prompts are the independent units)
    CI95    = pass@1 -/+ 1.96 SE, clipped to [0, 1]

The interval treats the benchmark as a sample of prompts and the K answers of a prompt as
one cluster (the "clustered" CLT interval, Miller 2024, "Adding Error Bars to Evals"); it
covers both the choice of prompts and the sampling noise. It has zero width when every
prompt scores the same (0% or 100% everywhere) and is undefined (None) for one prompt.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one prompt with c correct among n samples:
    1 - C(n - c, k) / C(n, k), computed as 1 - prod_{i=n-c+1..n} (1 - k / i)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def k_values(n: int) -> list[int]:
    """The k reported for n samples: 1, 2, 4, ... below n, and n itself."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return [*ks, n]


def mean_ci(scores: Sequence[float], z: float = Z95) -> tuple[float, float | None, list | None]:
    """(mean, SE, [lo, hi]) of per-prompt scores in [0, 1] (see module docstring).

    scores [B]: each prompt's mean over its K samples. SE and the interval are None for B < 2.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        raise ValueError("no prompts to average; check the benchmark's prompt set and limit")
    mean = float(s.mean())
    if s.size < 2:
        return mean, None, None
    se = float(s.std(ddof=1) / np.sqrt(s.size))
    return mean, se, [max(0.0, mean - z * se), min(1.0, mean + z * se)]


def _counts(rows: Sequence[dict]) -> tuple[int, np.ndarray]:
    ns = {len(r["correct"]) for r in rows}
    if len(ns) != 1:
        raise ValueError(f"rows have different sample counts {sorted(ns)}; use one K per run")
    return ns.pop(), np.array([sum(r["correct"]) for r in rows], dtype=np.int64)


def group_summary(rows: Sequence[dict]) -> dict:
    """pass@1 with SE and CI, pass@k, and response lengths of a set of prompt rows.

    A row holds `correct` [K] in {0, 1} and `tokens` (response lengths of its generated
    samples; empty for a prompt that was skipped, which still counts as failed).
    """
    K, c = _counts(rows)
    p1, se, ci = mean_ci(c / K)
    lengths = np.array([t for r in rows for t in r["tokens"]], dtype=np.float64)
    return {
        "prompts": len(rows),
        "samples": K,
        "pass@1": p1,
        "pass@1_se": se,
        "pass@1_ci95": ci,
        "pass@k": {
            str(k): float(np.mean([pass_at_k(K, int(x), k) for x in c])) for k in k_values(K)
        },
        "response_tokens_mean": float(lengths.mean()) if lengths.size else None,
        "response_tokens_p90": float(np.percentile(lengths, 90)) if lengths.size else None,
    }


def breakdown(rows: Sequence[dict], field: str) -> dict[str, dict]:
    """group_summary per value of a row field (MATH level -> "band", subject -> "domain").

    Empty when no row has a value for it (GSM8K has neither).
    """
    groups = collections.defaultdict(list)
    for r in rows:
        groups[r.get(field) or ""].append(r)
    if set(groups) <= {""}:
        return {}
    return {k: group_summary(v) for k, v in sorted(groups.items())}


COUNTS = ("timeouts", "errors", "no_answer")


def benchmark_summary(rows: Sequence[dict]) -> dict:
    """The benchmark's figures: group_summary of all rows, the failure counts (verifier
    timeouts and errors, answers without a final answer, truncated and repeat-stopped
    responses, prompts too long to run) and the breakdown by band and domain."""
    out = group_summary(rows)
    finish = collections.Counter(f for r in rows for f in r["finish"])
    out.update(
        {
            "verifier_timeouts": sum(r["timeouts"] for r in rows),
            "verifier_errors": sum(r["errors"] for r in rows),
            "no_answer": sum(r["no_answer"] for r in rows),
            "truncated": finish["length"],
            "repeat_stopped": finish["repeat"],
            "prompt_too_long": sum(r.get("skipped") == "prompt_too_long" for r in rows),
            "by_band": breakdown(rows, "band"),
            "by_domain": breakdown(rows, "domain"),
        }
    )
    return out
