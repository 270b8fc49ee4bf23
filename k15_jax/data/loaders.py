"""Benchmark loaders (MATH-500, GSM8K, AIME 2024, generic jsonl) and the shared Task record.

Every loader returns a list of `Task`: the raw problem text (templates turn it into model
input), the reference answer the verifier checks against, and the difficulty band and
domain labels where the data has them (MATH `level` and `subject`); "" where it has none.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Task:
    """One verifiable prompt. `id` is unique and stable (samplers key their state on it).

    band: difficulty label ("level3", "add5"; "" if unknown). domain: subject label.
    solution: a worked solution when the data has one (SFT demonstrations). meta: extra
    JSON-serializable fields (source, line, curation results ...). Not hashable (meta is a
    dict): key sets and dicts by `id`.
    """

    id: str
    prompt: str
    reference: str
    band: str = ""
    domain: str = ""
    solution: str | None = None
    meta: dict = dataclasses.field(default_factory=dict)


TASK_FIELDS = tuple(f.name for f in dataclasses.fields(Task))


def task_to_json(task: Task) -> dict:
    """The task as a flat JSON object (the jsonl row `load_jsonl_tasks` reads back)."""
    return dataclasses.asdict(task)


@dataclasses.dataclass
class BenchmarkDataConfig:
    """Where the benchmark files are; tests point these at ../shared/data."""

    math500_path: str = "../shared/data/math500/test.jsonl"
    gsm8k_path: str = "../shared/data/gsm8k/test.jsonl"
    aime24_path: str = "../shared/data/aime24/test.jsonl"


def read_jsonl(path: str | Path, *, config_key: str) -> Iterator[tuple[int, dict]]:
    """Yields (line number, object) for each non-blank line of a jsonl file.

    Raises FileNotFoundError naming `config_key` when the file is missing and ValueError
    with the file and line number when a line is not a JSON object.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"jsonl file not found: {path}; set {config_key} to its path")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"malformed JSON in {path} line {lineno}: {e.msg} (column {e.colno}); "
                    "fix or delete that line"
                ) from None
            if not isinstance(obj, dict):
                raise ValueError(
                    f"malformed row in {path} line {lineno}: expected a JSON object, "
                    f"got {type(obj).__name__}"
                )
            yield lineno, obj


class RowError(ValueError):
    """A row lacks a field or has a malformed one; callers add the file and line."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def row_field(row: dict, key: str) -> str:
    """row[key] as a string; RowError naming the field (and the keys there are) if absent."""
    if key not in row or row[key] is None:
        raise RowError(
            key,
            f"has no {key!r} field (keys: {sorted(row)}); check that the file is the "
            "dataset its loader expects",
        )
    return str(row[key])


def required_field(row: dict, key: str, path: Path, lineno: int) -> str:
    """`row_field`, its error naming the file and line."""
    try:
        return row_field(row, key)
    except RowError as e:
        raise ValueError(f"row in {path} line {lineno} {e}") from None


def load_jsonl_tasks(
    path: str | Path,
    *,
    source: str | None = None,
    prompt_key: str = "prompt",
    reference_key: str = "reference",
    id_key: str = "id",
    band_key: str = "band",
    domain_key: str = "domain",
    solution_key: str = "solution",
    config_key: str = "data.path",
) -> list[Task]:
    """Tasks from any jsonl with one problem per line (the field names are arguments).

    Rows without `id_key` get "<source>/<line number>". Fields other than the Task ones
    are kept in `meta` (with any `meta` object of the row), so a curated file's
    pass_rate, difficulty and tags come back as task.meta entries.
    """
    path = Path(path)
    source = source or path.stem
    used = {prompt_key, reference_key, id_key, band_key, domain_key, solution_key, "meta"}
    tasks = []
    for lineno, row in read_jsonl(path, config_key=config_key):
        meta = {"source": source, "line": lineno}
        meta.update(row.get("meta") or {})
        meta.update({k: v for k, v in row.items() if k not in used})
        solution = row.get(solution_key)
        tasks.append(
            Task(
                id=str(row[id_key]) if row.get(id_key) is not None else f"{source}/{lineno}",
                prompt=required_field(row, prompt_key, path, lineno),
                reference=required_field(row, reference_key, path, lineno),
                band=str(row.get(band_key) or ""),
                domain=str(row.get(domain_key) or ""),
                solution=None if solution is None else str(solution),
                meta=meta,
            )
        )
    return tasks


def _math_band(level) -> str:
    """MATH `level` (5, "5" or "Level 5") -> "level5"; "" when absent or unparseable."""
    m = re.search(r"\d+", str(level)) if level is not None else None
    return f"level{m.group()}" if m else ""


# Row parsers: one dataset row -> Task fields (prompt, reference, band, domain, solution).
# The benchmark loaders below and `data.sources` share them.


def math_row(row: dict) -> dict:
    """MATH / MATH-500 (problem, answer, level, subject, solution): band from level."""
    return dict(
        prompt=row_field(row, "problem"),
        reference=row_field(row, "answer"),
        band=_math_band(row.get("level")),
        domain=str(row.get("subject") or ""),
        solution=row.get("solution"),
    )


def gsm8k_row(row: dict) -> dict:
    """GSM8K (question, answer = reasoning then `#### n`): the reference is n."""
    prompt = row_field(row, "question")
    try:
        solution, reference = split_gsm8k_answer(row_field(row, "answer"))
    except RowError:
        raise
    except ValueError as e:
        raise RowError("answer", f"{e} in the answer field") from None
    return dict(prompt=prompt, reference=reference, band="", domain="", solution=solution)


def aime_row(row: dict) -> dict:
    """AIME (id, problem, answer 0..999, solution): "025" -> "25"."""
    answer = row_field(row, "answer").strip()
    return dict(
        prompt=row_field(row, "problem"),
        reference=str(int(answer)) if answer.isdigit() else answer,
        band="",
        domain="",
        solution=row.get("solution"),
    )


def _parse(parse, row: dict, path: Path, lineno: int) -> dict:
    try:
        return parse(row)
    except RowError as e:
        raise ValueError(f"row in {path} line {lineno}: {e}") from None


def load_math500(path: str | Path, *, config_key: str = "data.math500_path") -> list[Task]:
    """MATH-500 (fields problem, solution, answer, subject, level): band from level."""
    path = Path(path)
    return [
        Task(
            id=str(row.get("unique_id") or f"math500/{lineno}"),
            **_parse(math_row, row, path, lineno),
            meta={"source": "math500", "line": lineno},
        )
        for lineno, row in read_jsonl(path, config_key=config_key)
    ]


_CALCULATOR = re.compile(r"<<[^>]*>>")


def split_gsm8k_answer(answer: str) -> tuple[str, str]:
    """GSM8K `answer` field -> (worked solution without <<calc>> notes, final number).

    The number after the last `####` loses its thousands separators ("1,080" -> "1080").
    """
    if "####" not in answer:
        raise ValueError("no '####' final-answer marker")
    body, final = answer.rsplit("####", 1)
    return _CALCULATOR.sub("", body).strip(), final.strip().replace(",", "")


def load_gsm8k(path: str | Path, *, config_key: str = "data.gsm8k_path") -> list[Task]:
    """GSM8K (fields question, answer = reasoning then `#### n`); no band/domain labels."""
    path = Path(path)
    split = path.stem
    return [
        Task(
            id=f"gsm8k/{split}/{lineno}",
            **_parse(gsm8k_row, row, path, lineno),
            meta={"source": "gsm8k", "split": split, "line": lineno},
        )
        for lineno, row in read_jsonl(path, config_key=config_key)
    ]


def load_aime24(path: str | Path, *, config_key: str = "data.aime24_path") -> list[Task]:
    """AIME 2024 (fields id, problem, solution, answer, url); answers are 0..999."""
    path = Path(path)
    return [
        Task(
            id=f"aime24/{row.get('id', lineno)}",
            **{**_parse(aime_row, row, path, lineno), "band": "aime"},
            meta={"source": "aime24", "line": lineno, "url": row.get("url")},
        )
        for lineno, row in read_jsonl(path, config_key=config_key)
    ]


LOADERS = {
    "math500": load_math500,
    "gsm8k": load_gsm8k,
    "aime24": load_aime24,
    "jsonl": load_jsonl_tasks,
}
