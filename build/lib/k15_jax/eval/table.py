"""The markdown report of an evaluation (eval.md): one row per benchmark, then breakdowns."""

from __future__ import annotations

BREAKDOWNS = (("by_band", "band / level"), ("by_domain", "domain / subject"))


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _pass1(s: dict) -> str:
    ci = s["pass@1_ci95"]
    return _pct(s["pass@1"]) + ("" if ci is None else f" ({_pct(ci[0])}-{_pct(ci[1])})")


def _tokens(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


# (header, cell of a summary dict); pass@K is added when K > 1
GROUP_COLUMNS = [
    ("prompts", lambda s: s["prompts"]),
    ("pass@1 (95% CI)", _pass1),
    ("mean tokens", lambda s: _tokens(s["response_tokens_mean"])),
]
BENCHMARK_COLUMNS = [
    *GROUP_COLUMNS,
    ("p90 tokens", lambda s: _tokens(s["response_tokens_p90"])),
    ("truncated", lambda s: s["truncated"]),
    ("verifier timeouts", lambda s: s["verifier_timeouts"]),
    ("no answer", lambda s: s["no_answer"]),
    ("too long", lambda s: s["prompt_too_long"]),
]


def _with_pass_k(columns: list, k: int) -> list:
    if k == 1:
        return columns
    return [*columns[:2], (f"pass@{k}", lambda s: _pct(s["pass@k"][str(k)])), *columns[2:]]


def _table(first: str, columns: list, groups: dict) -> list[str]:
    row = lambda cells: "| " + " | ".join(str(c) for c in cells) + " |"
    lines = [row([first] + [h for h, _ in columns]), row(["---"] + ["---:"] * len(columns))]
    return lines + [row([name] + [f(s) for _, f in columns]) for name, s in groups.items()]


def markdown(report: dict) -> str:
    """eval.json's dict -> markdown: settings line, the main table, per-group tables."""
    s, ck = report["sampling"], report["checkpoint"]
    k = s["samples"]
    decode = "greedy" if s["greedy"] else f"temperature {s['temperature']}, top-p {s['top_p']}"
    title = f"`{ck['path']}`" if ck["path"] else "a random model"
    lines = [
        f"# Evaluation of {title}",
        "",
        f"{ck['kind']} checkpoint, sha256 `{(ck.get('sha256') or '-')[:16]}`; {decode}; "
        f"K = {k} samples per prompt, at most {s['max_new_tokens']} new tokens; seed "
        f"{report['seed']}. pass@1 in % with its 95% interval over prompts, pass@k (unbiased "
        "estimator) in %, response lengths in tokens over all samples.",
        "",
        *_table("benchmark", _with_pass_k(BENCHMARK_COLUMNS, k), report["benchmarks"]),
    ]
    for name, b in report["benchmarks"].items():
        for key, label in BREAKDOWNS:
            if len(b[key]) > 1:
                lines += ["", f"### {name} by {label}", ""]
                lines += _table(label, _with_pass_k(GROUP_COLUMNS, k), b[key])
    return "\n".join(lines) + "\n"
