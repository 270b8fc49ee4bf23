"""Prompt sources: the `data.train` / `data.eval` lists of files (and the synthetic suite).

Each source is a `SourceConfig`; `load_source` turns it into `Task`s whatever the file
holds, and `mix` pools several sources with a per-task sampling weight, so that a
sampler draws sources in the configured proportions however long each one is.

Files: .jsonl (one JSON object a line) or .parquet (one row per record). The row format
is detected once per file, from its first row:

  code    `tests` ([{stdin, expected}]) or `problem_dir` (a sandbox problem folder),
          with `prompt` (else the folder's statement.md)
  task    `prompt` + `reference`: Task rows, and the rows `experiments.curate` writes
          (pass_rate, difficulty, tags ...; rows with kept=false are skipped)
  gsm8k   `question` + `answer` ("reasoning #### n": reference n, solution the reasoning)
  math    `problem` + `answer` with `level` or `subject` (MATH, MATH-500)
  aime    `problem` + `answer` otherwise (AIME: "025" -> "25")

Every Task gets id "<source name>:<row id or line number>" and meta {"source", "kind"
("math" | "code"), "line", "tags": {"domain", "difficulty", ...}} plus, for code,
"tests" and/or "problem_dir". band is the difficulty label where the data has one
(MATH "level3"; for curated rows the curation's "difficulty2", the row's own band then
in tags), else the row's band, else the source name. The synthetic suite
(path "synthetic") keeps its own ids and bands ("add3/472+389", "add3").
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from k15_jax.data.loaders import (
    TASK_FIELDS,
    RowError,
    Task,
    aime_row,
    gsm8k_row,
    math_row,
    read_jsonl,
    row_field,
)
from k15_jax.data.synthetic import SyntheticConfig, SyntheticSuite

KINDS = ("auto", "math", "code")
SANDBOX_PROBLEMS = Path(__file__).resolve().parents[1] / "sandbox" / "problems"
# file stems that name a split, not a dataset: "gsm8k/test.jsonl" is source "gsm8k/test"
_SPLIT_STEMS = {"train", "test", "validation", "valid", "val", "dev", "eval"}


@dataclasses.dataclass
class SourceConfig:
    """One prompt source. path: "synthetic" (the built-in suite) or a .jsonl / .parquet
    file; name: the source name in task ids and metrics (default: the file stem, with
    its folder when the stem is a split name such as test); weight: its share of draws
    (see `mix`); kind: auto | math | code; limit: the first `limit` rows only."""

    path: str = "synthetic"
    name: str | None = None
    weight: float = 1.0
    kind: str = "auto"
    limit: int | None = None


def source_name(cfg: SourceConfig) -> str:
    if cfg.name:
        return cfg.name
    if cfg.path == "synthetic":
        return "synthetic"
    p = Path(cfg.path)
    return f"{p.parent.name}/{p.stem}" if p.stem in _SPLIT_STEMS and p.parent.name else p.stem


def check_source(cfg: SourceConfig, key: str = "data.train[0]") -> Path | None:
    """Validates the config; returns the file (None for the synthetic suite)."""
    if cfg.kind not in KINDS:
        raise ValueError(f"{key}.kind={cfg.kind!r}; choose one of {list(KINDS)}")
    w = float(cfg.weight)
    if not (math.isfinite(w) and w > 0):
        raise ValueError(f"{key}.weight={cfg.weight}; set a positive weight")
    if cfg.limit is not None and cfg.limit < 1:
        raise ValueError(f"{key}.limit={cfg.limit}; set null (all rows) or a count >= 1")
    if cfg.path == "synthetic":
        return None
    path = Path(cfg.path)
    if path.suffix not in (".jsonl", ".parquet"):
        raise ValueError(
            f"{key}.path={cfg.path}: unsupported file type {path.suffix or '(none)'!r}; "
            "give a .jsonl or .parquet file, or 'synthetic'"
        )
    if not path.is_file():
        raise ValueError(f"{key}.path={cfg.path}: no such file; set {key}.path to a data file")
    return path


# ----------------------------------------------------------------------------- rows


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict]]:
    import pyarrow.parquet as pq  # only parquet sources need pyarrow

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise ValueError(f"cannot read parquet file {path}: {e}") from None
    yield from enumerate(table.to_pylist(), start=1)


def read_rows(path: Path, key: str) -> Iterator[tuple[int, dict]]:
    """(line or row number, object) for each record of a .jsonl or .parquet file."""
    if path.suffix == ".parquet":
        return _parquet_rows(path)
    return read_jsonl(path, config_key=f"{key}.path")


def detect_format(row: dict, kind: str) -> str:
    """code | task | gsm8k | math | aime (see module docstring), from the row's keys."""
    keys = {k for k, v in row.items() if v is not None}
    inner = row.get("meta") if isinstance(row.get("meta"), dict) else {}
    if kind == "code" or (keys | set(inner)) & {"tests", "problem_dir"}:
        return "code"
    if "prompt" in keys:
        return "task"
    if "problem" in keys:  # before `question`: the AIME file has both
        return "math" if keys & {"level", "subject"} else "aime"
    if "question" in keys:
        return "gsm8k"
    raise RowError(
        "prompt",
        f"the row matches no known format (keys: {sorted(keys)}); give prompt + reference, "
        "question + answer (GSM8K), problem + answer (MATH, AIME), or prompt + tests "
        "(code)",
    )


def _tag_dict(tags) -> dict:
    # curated rows tag as ["domain:algebra", "band:level3"]; a dict passes through
    if isinstance(tags, dict):
        return dict(tags)
    out = {}
    for t in tags or []:
        k, _, v = str(t).partition(":")
        out[k] = v if v else True
    return out


def _math_fields(fmt: str, row: dict, name: str) -> tuple[str, dict, dict]:
    """(row id, Task fields, extra meta) of a gsm8k / math / aime row."""
    fields = {"gsm8k": gsm8k_row, "math": math_row, "aime": aime_row}[fmt](row)
    rid = row.get("unique_id") or row.get("id")
    difficulty = fields["band"] or None
    fields["band"] = fields["band"] or name
    extra = {"url": row["url"]} if row.get("url") else {}
    tags = {"domain": fields["domain"], "difficulty": difficulty}
    return rid, fields, {**extra, "tags": tags}


def _row_extras(row: dict, domain: str, difficulty) -> dict:
    """A Task / curated row's other fields (pass_rate, difficulty, kept ...) and its meta
    object, as meta; tags as a dict (the curated list also kept, as tag_list)."""
    extra = dict(row.get("meta") or {})
    extra.update({k: v for k, v in row.items() if k not in TASK_FIELDS})
    if "source" in extra:
        extra["origin"] = extra.pop("source")  # where the row came from before curation
    if isinstance(row.get("tags"), list):
        extra["tag_list"] = list(row["tags"])
    # curation's domain tag (a keyword domain where the data has no subject) wins
    extra["tags"] = {"domain": domain, **_tag_dict(row.get("tags")), "difficulty": difficulty}
    return extra


def _task_fields(row: dict, name: str) -> tuple[str, dict, dict]:
    """A Task / curated row: its own fields, the rest (pass_rate, difficulty ...) as meta."""
    difficulty = row.get("difficulty")
    # curation's difficulty (from the model's pass rate) is the label samplers should see;
    # the row's own band stays in the tags ("band:level3")
    band = f"difficulty{difficulty}" if difficulty is not None else row.get("band") or name
    fields = dict(
        prompt=row_field(row, "prompt"),
        reference=row_field(row, "reference"),
        band=str(band),
        domain=str(row.get("domain") or ""),
        solution=None if row.get("solution") is None else str(row["solution"]),
    )
    return row.get("id"), fields, _row_extras(row, fields["domain"], difficulty)


def _resolve_problem_dir(value: str, data_file: Path) -> Path:
    p = Path(value)
    for folder in (p,) if p.is_absolute() else (data_file.parent / p, SANDBOX_PROBLEMS / p):
        if (folder / "problem.json").is_file():
            return folder.resolve()
    raise RowError(
        "problem_dir",
        f"problem_dir {value!r} is not a sandbox problem folder (with problem.json) "
        f"beside the data file or in {SANDBOX_PROBLEMS}; fix the path",
    )


def _check_tests(tests) -> list[dict]:
    if not isinstance(tests, list) or not tests:
        raise RowError("tests", "has no tests: give a non-empty list of {stdin, expected}")
    for i, case in enumerate(tests):
        ok = isinstance(case, dict) and all(
            isinstance(case.get(k), str) for k in ("stdin", "expected")
        )
        if not ok:
            raise RowError(
                "tests", f"tests[{i}] = {case!r} is not an object with string stdin and expected"
            )
    return [{"stdin": c["stdin"], "expected": c["expected"]} for c in tests]


def _code_fields(row: dict, name: str, data_file: Path) -> tuple[str, dict, dict]:
    """A code problem: tests inline or a sandbox problem folder (statement.md as prompt).
    A curated code row (Task fields, tests in its meta object) reads the same."""
    row = {**(row.get("meta") or {}), **row}
    extra = _row_extras(row, str(row.get("domain") or "code"), row.get("difficulty"))
    for k in ("tests", "problem_dir"):  # checked and resolved below
        extra.pop(k, None)
    if row.get("problem_dir") is not None:
        folder = _resolve_problem_dir(str(row["problem_dir"]), data_file)
        extra["problem_dir"] = str(folder)
        prompt = row.get("prompt") or (folder / "statement.md").read_text(encoding="utf-8")
    else:
        prompt = row_field(row, "prompt")
    if row.get("tests") is not None or "problem_dir" not in extra:
        extra["tests"] = _check_tests(row.get("tests"))
    difficulty = row.get("difficulty")
    band = f"difficulty{difficulty}" if difficulty is not None else row.get("band") or name
    fields = dict(
        prompt=str(prompt),
        reference=str(row.get("reference") or ""),  # judged by the tests, not an answer
        band=str(band),
        domain=extra["tags"]["domain"],
        solution=row.get("solution"),
    )
    return row.get("id"), fields, extra


# ----------------------------------------------------------------------------- sources


def _row_task(fmt: str, row: dict, lineno: int, name: str, path: Path) -> Task:
    if fmt == "code":
        rid, fields, extra = _code_fields(row, name, path)
    elif fmt == "task":
        rid, fields, extra = _task_fields(row, name)
    else:
        rid, fields, extra = _math_fields(fmt, row, name)
    kind = "code" if fmt == "code" else "math"
    meta = {**extra, "source": name, "kind": kind, "line": lineno}
    return Task(id=f"{name}:{rid if rid is not None else lineno}", **fields, meta=meta)


def _file_tasks(path: Path, cfg: SourceConfig, key: str) -> list[Task]:
    name, tasks, fmt = source_name(cfg), {}, None
    where = "row" if path.suffix == ".parquet" else "line"
    for lineno, row in read_rows(path, key):
        try:
            fmt = fmt or detect_format(row, cfg.kind)
            if fmt == "code" and cfg.kind == "math":
                raise RowError("tests", f"a code problem, but {key}.kind=math; set kind=code")
            if row.get("kept") is False:
                continue  # a curation result the curation dropped
            task = _row_task(fmt, row, lineno, name, path)
        except RowError as e:
            raise ValueError(f"{path} {where} {lineno} ({key}, field {e.field!r}): {e}") from None
        tasks[task.id] = task  # a resumed curation appends rows again: the later one wins
        if cfg.limit is not None and len(tasks) >= cfg.limit:
            break
    if not tasks:
        raise ValueError(f"{key}.path={cfg.path}: the file has no rows; point it at a data file")
    return list(tasks.values())


def _synthetic_tasks(cfg: SourceConfig, synthetic: SyntheticConfig | None, key: str) -> list[Task]:
    if cfg.kind == "code":
        raise ValueError(f"{key}: the synthetic suite is math; set {key}.kind to auto or math")
    name = source_name(cfg)
    pool = SyntheticSuite(synthetic).train_pool()[: cfg.limit]
    return [
        dataclasses.replace(
            t,
            meta={
                **t.meta,
                "source": name,
                "kind": "math",
                "line": i + 1,
                "tags": {"domain": t.domain, "difficulty": t.band},
            },
        )
        for i, t in enumerate(pool)
    ]


def load_source(
    cfg: SourceConfig, key: str | None = None, *, synthetic: SyntheticConfig | None = None
) -> list[Task]:
    """The tasks of one source (module docstring). key names the config entry in errors
    ("data.train[2]"); synthetic configures the built-in suite (path "synthetic")."""
    key = key or "data source"
    path = check_source(cfg, key)
    if path is None:
        return _synthetic_tasks(cfg, synthetic, key)
    return _file_tasks(path, cfg, key)


def mix(
    sources: Sequence[Sequence[Task]], weights: Sequence[float]
) -> tuple[list[Task], np.ndarray]:
    """(pool, w): the sources concatenated, and w[i] = weight of task i's source / that
    source's length, so drawing tasks with p = w / w.sum() draws source s with
    probability weight_s / sum(weights), uniformly within it. Task ids must be unique."""
    if len(sources) != len(weights):
        raise ValueError(f"mix: {len(sources)} sources but {len(weights)} weights")
    pool, w, seen = [], [], {}
    for s, (tasks, weight) in enumerate(zip(sources, weights, strict=True)):
        if not tasks:
            raise ValueError(f"mix: source {s} has no tasks; remove it or fix its file")
        if not (math.isfinite(float(weight)) and weight > 0):
            raise ValueError(f"mix: source {s} has weight {weight}; weights must be positive")
        for t in tasks:
            if t.id in seen:
                raise ValueError(
                    f"mix: task id {t.id!r} is in source {seen[t.id]} and source {s}; give "
                    "the sources distinct names (data.train[i].name)"
                )
            seen[t.id] = s
        pool.extend(tasks)
        w.extend([float(weight) / len(tasks)] * len(tasks))
    return pool, np.asarray(w, dtype=np.float64)


def load_sources(
    cfgs: Sequence[SourceConfig],
    key: str = "data.train",
    *,
    synthetic: SyntheticConfig | None = None,
) -> tuple[list[Task], np.ndarray]:
    """Every source of a `data.train` / `data.eval` list, mixed by their weights."""
    if not cfgs:
        raise ValueError(f"{key} is empty; list at least one source (path: synthetic)")
    tasks = [load_source(c, f"{key}[{i}]", synthetic=synthetic) for i, c in enumerate(cfgs)]
    return mix(tasks, [c.weight for c in cfgs])
