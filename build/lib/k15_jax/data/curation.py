"""Prompt-set curation (k1.5 report, section 2.1), the parts that need no model.

The report's rules, as pure functions over per-prompt results the rollout engine produces:
- difficulty: the pass rate of n_samples (10) answers sampled at a high temperature;
  `difficulty_level` buckets it (lower pass rate = harder).
- hackability: drop prompts the model answers right without reasoning (asked for the
  answer directly, n_direct = 8 tries, dropped if any is right), and multiple-choice,
  true/false and proof-style questions (easy to guess, or not verifiable).
- balance: domain tags from the data's labels (MATH `subject`) or, where there are
  none, a keyword classifier; `balance_report` counts kept prompts per tag.

Output: one JSON row per scored prompt (the Task's fields plus pass_rate, difficulty,
tags, drop_reasons, kept), appended as results arrive so an interrupted run resumes
from `completed_ids(path)`; `load_curated` reads the kept rows back as Tasks whose meta
holds pass_rate, difficulty and tags, for the curriculum and prioritized samplers.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from k15_jax.data.loaders import Task, load_jsonl_tasks, read_jsonl, task_to_json


@dataclasses.dataclass
class CurationConfig:
    """The curation rules (the command adds model, prompt set and output path)."""

    n_samples: int = 10  # answers per prompt for the pass rate
    sample_temperature: float = 1.0  # "relatively high"
    n_direct: int = 8  # direct-answer tries per prompt (0: skip the probe)
    direct_temperature: float = 1.0  # sampling the direct tries (<= 0: greedy, one distinct try)
    # pass-rate edges, descending: difficulty 0 if pass_rate >= 0.8, 1 if >= 0.5, ...
    difficulty_edges: list[float] = dataclasses.field(default_factory=lambda: [0.8, 0.5, 0.2])
    format_filters: list[str] = dataclasses.field(
        default_factory=lambda: ["multiple_choice", "true_false", "proof"]
    )
    drop_unsolved: bool = False  # also drop pass rate 0 (unsolvable, or a wrong reference)


# ----------------------------------------------------------------------------- difficulty


def pass_rate(rewards: Sequence[float]) -> float:
    """Share of sampled answers that verified (rewards in {0, 1})."""
    if len(rewards) == 0:
        raise ValueError("pass_rate of no samples; set curation n_samples >= 1")
    return float(np.mean(np.asarray(rewards, dtype=np.float64) > 0))


def difficulty_level(rate: float, edges: Sequence[float] = (0.8, 0.5, 0.2)) -> int:
    """0 (easiest) .. len(edges) (hardest): the number of edges the pass rate falls below."""
    if list(edges) != sorted(edges, reverse=True):
        raise ValueError(f"curation difficulty_edges {list(edges)} must be descending")
    return sum(rate < e for e in edges)


def solved_without_reasoning(direct_rewards: Sequence[float]) -> bool:
    """The report's rule: any of the direct (no chain of thought) tries right -> drop."""
    return bool(np.any(np.asarray(direct_rewards, dtype=np.float64) > 0))


# ----------------------------------------------------------------------------- format filters

_OPTION_PAREN = re.compile(r"(?<![A-Za-z0-9\\])\(\s*([A-E])\s*\)")  # (A) but not P(A), f(B)
_OPTION_LINE = re.compile(r"(?m)^[ \t]*([A-E])[.)][ \t]+\S")  # "A. text" / "B) text"
_MC_PHRASE = re.compile(
    r"which of the following|enter the letter|choose the correct|select the correct|"
    r"answer choices|correct option",
    re.IGNORECASE,
)
_LETTER_ANSWER = re.compile(r"^\s*(?:\\text(?:bf)?\{)?\s*\(?\s*[A-E]\s*\)?\s*\}?\s*$")
_TF_PHRASE = re.compile(
    r"true or false|true/false|yes or no|is it true that|"
    r"(?:determine|decide|state) whether\b.{0,120}?\b(?:true|false|holds)\b",
    re.IGNORECASE | re.DOTALL,
)
_TF_ANSWER = re.compile(r"^\s*(?:\\text\{)?\s*(true|false|yes|no)\s*\}?\s*\.?\s*$", re.IGNORECASE)
# Imperatives that ask for an argument, not a value ("Show that", "Prove", "give a proof").
_PROOF_PHRASE = re.compile(
    r"(?:^|[.?!;:]\s+|\n\s*)(?:prove|show|demonstrate|verify|justify)\b|\bprove that\b|"
    r"\b(?:give|write|provide) a (?:rigorous )?proof\b|\bq\.?e\.?d\b",
    re.IGNORECASE,
)


def is_multiple_choice(task: Task) -> bool:
    """Lettered options (A)/(B).. or "A." lines, a phrase such as "which of the following",
    or a reference that is a single option letter."""
    opts = set(_OPTION_PAREN.findall(task.prompt)) | set(_OPTION_LINE.findall(task.prompt))
    return (
        {"A", "B"} <= opts
        or bool(_MC_PHRASE.search(task.prompt))
        or bool(_LETTER_ANSWER.match(task.reference))
    )


def is_true_false(task: Task) -> bool:
    """A true/false or yes/no answer, or such phrasing with a reference that holds no
    number (phrases alone misfire: "For how many n is it true that ...?" asks a count)."""
    if _TF_ANSWER.match(task.reference):
        return True
    return bool(_TF_PHRASE.search(task.prompt)) and not re.search(r"\d", task.reference)


def is_proof(task: Task) -> bool:
    """Asks for a proof ("prove", "show that"), or has no final answer to check."""
    return bool(_PROOF_PHRASE.search(task.prompt)) or not task.reference.strip()


FORMAT_FILTERS = {
    "multiple_choice": is_multiple_choice,
    "true_false": is_true_false,
    "proof": is_proof,
}


def format_drop_reasons(task: Task, filters: Sequence[str] = tuple(FORMAT_FILTERS)) -> list[str]:
    """Names of the format filters the task trips (empty: keep); run before any sampling."""
    unknown = [f for f in filters if f not in FORMAT_FILTERS]
    if unknown:
        raise ValueError(f"unknown curation format_filters {unknown}; use {list(FORMAT_FILTERS)}")
    return [name for name in filters if FORMAT_FILTERS[name](task)]


# ----------------------------------------------------------------------------- domain tags

# For prompts without a subject label (GSM8K, AIME): keyword hits per domain.
KEYWORD_DOMAINS = {
    "geometry": r"triangle|circle|angle|polygon|rectangle|square|radius|diameter|perimeter|"
    r"area|hexagon|sphere|cube|cylinder|cone|parallel|perpendicular|chord|tangent line",
    "counting_probability": r"probability|how many ways|arrangements?|permutations?|"
    r"combinations?|random(?:ly)?|expected|dice|die|coins?",
    "number_theory": r"primes?|divisible|divisors?|remainder|gcd|lcm|modulo|mod|"
    r"greatest common|least common|base \d+|digits",
    "algebra": r"equations?|polynomial|functions?|roots?|solve|inequality|sequence|"
    r"real numbers?|variables?|f\(x\)",
    "arithmetic": r"dollars?|\$\d|costs?|price|buys?|sells?|earns?|pays?|hours?|minutes?|"
    r"miles?|percent|each|total",
}
_KEYWORD_RES = {d: re.compile(rf"\b(?:{p})\b", re.IGNORECASE) for d, p in KEYWORD_DOMAINS.items()}


def slug(text: str) -> str:
    """'Counting & Probability' -> 'counting_probability'."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def keyword_domain(prompt: str) -> str:
    """The domain with the most keyword hits in the prompt; "other" when none hits."""
    hits = {d: len(r.findall(prompt)) for d, r in _KEYWORD_RES.items()}
    best = max(hits, key=hits.get)
    return best if hits[best] > 0 else "other"


def domain_tags(task: Task) -> list[str]:
    """["domain:<label or keyword domain>", "band:<band>", "source:<source>"] (known parts).

    The first tag is the prompt's domain, the one `balance_report` counts.
    """
    domain = slug(task.domain) if task.domain.strip() else keyword_domain(task.prompt)
    tags = [f"domain:{domain}"]
    if task.band:
        tags.append(f"band:{task.band}")
    if task.meta.get("source"):
        tags.append(f"source:{task.meta['source']}")
    return tags


# ----------------------------------------------------------------------------- records


def curation_record(
    task: Task,
    cfg: CurationConfig,
    sample_rewards: Sequence[float] | None = None,
    direct_rewards: Sequence[float] | None = None,
    format_reasons: Sequence[str] | None = None,
) -> dict:
    """One output row: the task's fields plus the curation results and the verdict.

    A prompt dropped by format before sampling has pass_rate/difficulty None. drop_reasons
    lists format filter names, "solved_without_reasoning" and "unsolved" (drop_unsolved).
    """
    if format_reasons is None:
        format_reasons = format_drop_reasons(task, cfg.format_filters)
    reasons = list(format_reasons)
    rate = None if sample_rewards is None else pass_rate(sample_rewards)
    n_direct_right = None
    if direct_rewards is not None:
        n_direct_right = int(np.sum(np.asarray(direct_rewards, dtype=np.float64) > 0))
        if solved_without_reasoning(direct_rewards):
            reasons.append("solved_without_reasoning")
    if cfg.drop_unsolved and rate == 0.0:
        reasons.append("unsolved")
    row = task_to_json(task)
    row.update(
        pass_rate=rate,
        n_samples=None if sample_rewards is None else len(sample_rewards),
        difficulty=None if rate is None else difficulty_level(rate, cfg.difficulty_edges),
        direct_correct=n_direct_right,
        n_direct=None if direct_rewards is None else len(direct_rewards),
        tags=domain_tags(task),
        drop_reasons=reasons,
        kept=not reasons and rate is not None,
    )
    return row


def append_records(path: str | Path, rows: Iterable[dict]) -> None:
    """Appends rows as jsonl, one write per line, flushed and synced so a crash loses at
    most a torn last line (which `completed_ids` cuts off)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def completed_ids(path: str | Path) -> set[str]:
    """Ids that already have a row in an existing results file (empty if there is none).

    A last line without its newline is a write torn by an interruption: it is cut off the
    file so that appends start on a clean line. Any other bad line raises with its number.
    """
    path = Path(path)
    if not path.is_file():
        return set()
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with path.open("r+b") as f:
            f.truncate(keep)
    return {str(row["id"]) for row in _rows(path)}


def _rows(path: Path) -> list[dict]:
    out = []
    for lineno, row in read_jsonl(path, config_key="curation output path"):
        if "id" not in row:
            raise ValueError(f"curation row in {path} line {lineno} has no 'id' field")
        out.append(row)
    return out


def pending(tasks: Sequence[Task], done: set[str]) -> list[Task]:
    """The tasks still to score, in order."""
    return [t for t in tasks if t.id not in done]


def read_records(path: str | Path) -> list[dict]:
    """All result rows; when an id occurs twice the later row wins."""
    by_id = {str(row["id"]): row for row in _rows(Path(path))}
    return list(by_id.values())


def write_curated(path: str | Path, rows: Iterable[dict]) -> int:
    """Writes the kept rows (atomically: temp file, then rename); returns how many."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = [r for r in rows if r.get("kept")]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), "utf-8")
    os.replace(tmp, path)
    return len(kept)


def load_curated(path: str | Path, *, config_key: str = "data.curated_path") -> list[Task]:
    """A curated (or results) file as Tasks, kept rows only; pass_rate, difficulty, tags,
    drop_reasons and kept are in task.meta. When an id occurs twice the later row wins."""
    tasks = load_jsonl_tasks(path, config_key=config_key)
    by_id = {t.id: t for t in tasks if t.meta.get("kept", True)}
    return list(by_id.values())


# ----------------------------------------------------------------------------- balance


def balance_report(rows: Sequence[dict]) -> dict:
    """Counts over result rows: total, kept, drops per reason, and for kept rows the counts
    and shares per domain tag, per difficulty level and per band, and max/min domain count."""
    kept = [r for r in rows if r.get("kept")]
    reasons = collections.Counter(x for r in rows for x in r.get("drop_reasons") or [])
    domains = collections.Counter(
        next((t for t in r.get("tags") or [] if t.startswith("domain:")), "domain:other")
        for r in kept
    )
    difficulty = collections.Counter(str(r.get("difficulty")) for r in kept)
    bands = collections.Counter(r.get("band") or "" for r in kept)
    n = max(len(kept), 1)
    return {
        "total": len(rows),
        "kept": len(kept),
        "dropped": len(rows) - len(kept),
        "drop_reasons": dict(reasons.most_common()),
        "domains": dict(domains.most_common()),
        "domain_share": {d: c / n for d, c in domains.most_common()},
        "difficulty": dict(sorted(difficulty.items())),
        "bands": dict(sorted(bands.items())),
        "imbalance": (max(domains.values()) / min(domains.values())) if domains else None,
    }


def format_balance(report: dict) -> str:
    """The report as a few human-readable lines."""
    lines = [f"prompts: {report['total']}  kept: {report['kept']}  dropped: {report['dropped']}"]
    if report["drop_reasons"]:
        lines.append("drops: " + ", ".join(f"{k} {v}" for k, v in report["drop_reasons"].items()))
    for d, c in report["domains"].items():
        lines.append(f"  {d:<34} {c:6d}  {100 * report['domain_share'][d]:5.1f}%")
    if report["difficulty"]:
        levels = ", ".join(f"{k}: {v}" for k, v in report["difficulty"].items())
        lines.append(f"difficulty: {levels}")
    if report["imbalance"] is not None:
        lines.append(f"largest/smallest domain: {report['imbalance']:.1f}x")
    return "\n".join(lines)
