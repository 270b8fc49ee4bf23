"""Prompt sources on the real benchmark files (../shared/data), parquet, curated and code rows.

References are checked against an independent re-parse of the raw files (plain json
and a regex here, not the loaders' code), and every bad input must name file and line.
"""

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from k15_jax.data.curation import CurationConfig, append_records, curation_record
from k15_jax.data.loaders import Task
from k15_jax.data.sources import (
    SANDBOX_PROBLEMS,
    SourceConfig,
    load_source,
    load_sources,
    mix,
)
from k15_jax.data.synthetic import SyntheticSuite


def _raw(path):
    """(line number, row) of every non-blank line, read independently of the loaders."""
    lines = path.read_text(encoding="utf-8").split("\n")
    return [(i + 1, json.loads(s)) for i, s in enumerate(lines) if s.strip()]


def _src(path, **kw):
    return SourceConfig(path=str(path), **kw)


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------ real benchmark files


def test_gsm8k_references_are_the_numbers_after_the_marker(shared_data):
    path = shared_data / "gsm8k" / "test.jsonl"
    raw, tasks = _raw(path), load_source(_src(path))
    assert len(tasks) == len(raw) == 1319
    for k in (0, 1, 700, len(raw) - 1):
        line, row = raw[k]
        t = tasks[k]
        final = re.search(r"####\s*([^\n]+)\s*$", row["answer"]).group(1)
        assert t.reference == final.strip().replace(",", "")
        assert t.prompt == row["question"] and "####" not in t.solution
        assert t.id == f"gsm8k/test:{line}" and t.band == "gsm8k/test"
        assert t.meta == {
            "source": "gsm8k/test",
            "kind": "math",
            "line": line,
            "tags": {"domain": "", "difficulty": None},
        }
    assert len({t.id for t in tasks}) == len(tasks)
    train = load_source(_src(shared_data / "gsm8k" / "train.jsonl", name="gsm", limit=5))
    assert [t.id for t in train] == [f"gsm:{i}" for i in range(1, 6)]


def test_math500_keeps_level_and_subject(shared_data):
    path = shared_data / "math500" / "test.jsonl"
    raw, tasks = _raw(path), load_source(_src(path, name="math500"))
    assert len(tasks) == len(raw) == 500
    for (line, row), t in zip(raw, tasks, strict=True):
        assert t.reference == row["answer"] and t.prompt == row["problem"]
        assert t.band == f"level{row['level']}" and t.domain == row["subject"]
        assert t.meta["tags"] == {"domain": row["subject"], "difficulty": f"level{row['level']}"}
        assert t.meta["line"] == line and t.meta["kind"] == "math"
    assert {t.band for t in tasks} == {f"level{i}" for i in range(1, 6)}


def test_aime_ids_and_integer_references(shared_data):
    path = shared_data / "aime24" / "test.jsonl"
    raw, tasks = _raw(path), load_source(_src(path))
    assert len(tasks) == 30
    for (_, row), t in zip(raw, tasks, strict=True):
        assert int(t.reference) == int(row["answer"]) and t.reference == str(int(row["answer"]))
        assert t.id == f"aime24/test:{row['id']}" and t.prompt == row["problem"]
        assert t.band == "aime24/test" and t.meta["url"] == row["url"]


def test_parquet_loads_like_the_same_rows_as_jsonl(tmp_path, shared_data):
    for folder, n in (("gsm8k", 40), ("math500", 40), ("aime24", 30)):
        rows = [r for _, r in _raw(shared_data / folder / "test.jsonl")[:n]]
        jl = _write_jsonl(tmp_path / f"{folder}.jsonl", rows)
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / f"{folder}.parquet")
        a = load_source(_src(jl, name=folder))
        b = load_source(_src(tmp_path / f"{folder}.parquet", name=folder))
        assert a == b and len(a) == n


# ------------------------------------------------------------------ curated and code rows


def test_curated_rows_keep_difficulty_and_tags(tmp_path, shared_data):
    tasks = load_source(_src(shared_data / "math500" / "test.jsonl", name="math500", limit=3))
    cfg = CurationConfig()
    rows = [
        curation_record(tasks[0], cfg, [1] + [0] * 9, [0] * 8),  # kept, hard
        curation_record(tasks[1], cfg, [1] * 10, [1] * 8),  # solved without reasoning
        curation_record(tasks[2], cfg, [1] * 9 + [0], [0] * 8),  # kept, easy
    ]
    append_records(tmp_path / "results.jsonl", rows)
    got = load_source(_src(tmp_path / "results.jsonl", name="cur"))
    assert [t.id for t in got] == [f"cur:{tasks[0].id}", f"cur:{tasks[2].id}"]
    for t, row in zip(got, [rows[0], rows[2]], strict=True):
        assert t.meta["difficulty"] == row["difficulty"] and t.meta["pass_rate"] == row["pass_rate"]
        assert t.meta["tag_list"] == row["tags"] and t.meta["origin"] == "math500"
        assert t.meta["tags"]["difficulty"] == row["difficulty"]
        assert f"domain:{t.meta['tags']['domain']}" == row["tags"][0]
        assert (t.prompt, t.reference) == (row["prompt"], row["reference"])
        assert t.band == f"difficulty{row['difficulty']}"  # the model-judged difficulty
        assert t.meta["tags"]["band"] == row["band"] == tasks[0 if t is got[0] else 2].band
    assert [t.meta["difficulty"] for t in got] == [3, 0]
    # a curated GSM8K row: the keyword domain of the curation's tags
    gsm = load_source(_src(shared_data / "gsm8k" / "test.jsonl", limit=1))[0]
    append_records(tmp_path / "g.jsonl", [curation_record(gsm, cfg, [1, 0] * 5, [0] * 8)])
    (g,) = load_source(_src(tmp_path / "g.jsonl"))
    assert g.band == "difficulty1" and g.meta["tags"]["domain"] == "arithmetic"


def test_code_rows_keep_tests_and_problem_dirs(tmp_path):
    tests = [{"stdin": "1 2\n", "expected": "3\n"}, {"stdin": "5 5\n", "expected": "10\n"}]
    rows = [
        {"id": "a+b", "prompt": "Add two integers.", "tests": tests, "difficulty": 800},
        {"problem_dir": "sum_array"},
    ]
    got = load_source(_src(_write_jsonl(tmp_path / "code.jsonl", rows), name="cf"))
    assert [t.id for t in got] == ["cf:a+b", "cf:2"]
    assert got[0].meta["tests"] == tests and got[0].meta["kind"] == "code"
    assert got[0].band == "difficulty800" and got[0].reference == ""
    statement = (SANDBOX_PROBLEMS / "sum_array" / "statement.md").read_text()
    assert got[1].prompt == statement and got[1].meta["kind"] == "code"
    assert got[1].meta["problem_dir"] == str((SANDBOX_PROBLEMS / "sum_array").resolve())
    assert "tests" not in got[1].meta and got[1].band == "cf"
    # a curated code row (Task fields, tests in its meta) is still a code problem
    cfg = CurationConfig(format_filters=[])
    curated = [curation_record(t, cfg, [1, 0, 0, 0], [0] * 8) for t in got]
    append_records(tmp_path / "cur.jsonl", curated)
    back = load_source(_src(tmp_path / "cur.jsonl", name="c2"))
    assert [b.meta["kind"] for b in back] == ["code", "code"] and back[0].meta["tests"] == tests
    assert back[1].meta["problem_dir"] == got[1].meta["problem_dir"]
    assert [b.band for b in back] == ["difficulty2", "difficulty2"] and back[0].id == "c2:cf:a+b"
    # parquet stores the test list as structs: the same tasks come back
    pq.write_table(pa.Table.from_pylist(rows[:1]), tmp_path / "code.parquet")
    assert load_source(_src(tmp_path / "code.parquet", name="cf")) == got[:1]


def test_synthetic_source_is_the_suite_pool():
    got = load_source(SourceConfig("synthetic", limit=7))
    pool = SyntheticSuite().train_pool()[:7]
    assert [t.id for t in got] == [t.id for t in pool] and [t.band for t in got] == [
        t.band for t in pool
    ]
    assert all(t.meta["kind"] == "math" and t.meta["source"] == "synthetic" for t in got)


# ------------------------------------------------------------------ mix


def test_mix_weights_draw_sources_in_proportion(shared_data):
    a = load_source(_src(shared_data / "aime24" / "test.jsonl"))
    g = load_source(_src(shared_data / "gsm8k" / "test.jsonl", limit=300))
    pool, w = mix([a, g], [1.0, 3.0])
    assert pool == a + g and w.shape == (330,)
    assert np.allclose(w[:30], 1 / 30) and np.allclose(w[30:], 3 / 300)
    draws = np.random.default_rng(0).choice(len(pool), size=40_000, p=w / w.sum())
    assert abs(np.mean(draws < 30) - 0.25) < 0.01  # source 0 a quarter of the time
    with pytest.raises(ValueError, match="distinct names"):
        mix([a, a], [1.0, 1.0])
    with pytest.raises(ValueError, match="source 1 has no tasks"):
        mix([a, []], [1.0, 1.0])
    pool2, w2 = load_sources(
        [_src(shared_data / "aime24" / "test.jsonl"), _src(shared_data / "gsm8k" / "test.jsonl")]
    )
    assert len(pool2) == 30 + 1319 and np.isclose(w2.sum(), 2.0)


# ------------------------------------------------------------------ errors


def _err(tmp_path, name, text, match, **kw):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_source(_src(path, **kw), "data.train[3]")


def test_bad_rows_name_file_and_line(tmp_path):
    p = re.escape(str(tmp_path))
    good = '{"question": "q", "answer": "r\\n#### 3"}\n'
    _err(
        tmp_path, "a.jsonl", good + "\n" + '{"question": "q", "answer": \n', rf"{p}/a.jsonl line 3"
    )
    _err(tmp_path, "b.jsonl", good + '{"question": "q"}\n', rf"{p}/b.jsonl line 2.*'answer'")
    _err(tmp_path, "c.jsonl", good + '{"question": "q", "answer": "7"}\n', r"c.jsonl line 2.*####")
    _err(tmp_path, "d.jsonl", '{"problem": "p", "level": 2}\n', r"d.jsonl line 1.*'answer'")
    _err(
        tmp_path,
        "e.jsonl",
        '{"prompt": "p", "reference": "1"}\n{"prompt": "q"}\n',
        r"line 2.*'reference'",
    )
    _err(tmp_path, "f.jsonl", '{"text": "p"}\n', r"f.jsonl line 1.*no known format")
    code = '{"prompt": "p", "tests": [{"stdin": "", "expected": "1"}]}\n'
    _err(tmp_path, "g.jsonl", code + '{"prompt": "p"}\n', r"g.jsonl line 2.*'tests'")
    _err(tmp_path, "h.jsonl", code + '{"prompt": "p", "tests": []}\n', r"h.jsonl line 2.*'tests'")
    _err(
        tmp_path,
        "i.jsonl",
        '{"prompt": "p", "tests": [{"stdin": 1}]}\n',
        r"i.jsonl line 1.*tests\[0\]",
    )
    _err(tmp_path, "j.jsonl", '{"problem_dir": "nope"}\n', r"j.jsonl line 1.*'problem_dir'")
    _err(tmp_path, "k.jsonl", code, r"k.jsonl line 1.*kind=math", kind="math")
    _err(
        tmp_path,
        "l.jsonl",
        '{"problem": "p", "answer": "1"}\n',
        r"l.jsonl line 1.*'prompt'",
        kind="code",
    )
    pq.write_table(
        pa.Table.from_pylist([{"problem": "p", "answer": "1"}, {"problem": "q", "answer": None}]),
        tmp_path / "m.parquet",
    )
    with pytest.raises(ValueError, match=rf"{p}/m.parquet row 2.*'answer'"):
        load_source(_src(tmp_path / "m.parquet"))


def test_bad_sources_name_the_config_key(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n")
    (tmp_path / "empty.jsonl").write_text("\n")
    cases = [
        (_src(tmp_path / "nope.jsonl"), r"data.train\[3\].path=.*nope.jsonl: no such file"),
        (_src(tmp_path / "x.csv"), r"data.train\[3\].path=.*unsupported file type '.csv'"),
        (_src(tmp_path / "empty.jsonl"), r"data.train\[3\].path=.*no rows"),
        (SourceConfig("synthetic", kind="text"), r"data.train\[3\].kind='text'"),
        (SourceConfig("synthetic", weight=0), r"data.train\[3\].weight=0"),
        (SourceConfig("synthetic", limit=0), r"data.train\[3\].limit=0"),
        (SourceConfig("synthetic", kind="code"), r"data.train\[3\]: the synthetic suite is math"),
    ]
    for cfg, match in cases:
        with pytest.raises(ValueError, match=match):
            load_source(cfg, "data.train[3]")
    with pytest.raises(ValueError, match=r"data.eval\[1\].path"):
        load_sources([SourceConfig("synthetic"), _src(tmp_path / "nope.jsonl")], "data.eval")


def test_task_records_are_plain_tasks(shared_data):
    (t,) = load_source(_src(shared_data / "aime24" / "test.jsonl", limit=1))
    assert isinstance(t, Task) and json.dumps(t.meta)  # JSON-serializable meta
