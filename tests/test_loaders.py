"""Benchmark loaders on the real files, error reporting, generic jsonl, prompt templates."""

import json
import re

import pytest

from k15_jax.data import (
    LOADERS,
    Task,
    load_aime24,
    load_gsm8k,
    load_jsonl_tasks,
    load_math500,
    render,
    response_text,
    task_to_json,
    template,
)
from k15_jax.data.templates import PromptTemplate
from k15_jax.rewards import math_reward, score_math


def _raw(path):
    return [json.loads(line) for line in path.open() if line.strip()]


def test_math500(shared_data):
    path = shared_data / "math500" / "test.jsonl"
    raw, tasks = _raw(path), load_math500(path)
    assert len(tasks) == len(raw) == 500
    assert len({t.id for t in tasks}) == 500
    for r, t in zip(raw, tasks, strict=True):
        assert (t.prompt, t.reference, t.domain, t.solution) == (
            r["problem"],
            r["answer"],
            r["subject"],
            r["solution"],
        )
        assert t.band == f"level{int(r['level'])}"
    assert {t.band for t in tasks} == {f"level{i}" for i in range(1, 6)}


def test_gsm8k(shared_data):
    for split, n in (("test", 1319), ("train", 7473)):
        path = shared_data / "gsm8k" / f"{split}.jsonl"
        raw, tasks = _raw(path), load_gsm8k(path)
        assert len(tasks) == len(raw) == n
        assert len({t.id for t in tasks}) == n
        for r, t in zip(raw, tasks, strict=True):
            final = r["answer"].split("####")[-1]
            assert int(t.reference) == int(final.replace(",", ""))
            assert t.prompt == r["question"] and "####" not in t.solution
            assert "<<" not in t.solution and t.band == ""


def test_gsm8k_references_verify_in_gsm8k_format(shared_data):
    tasks = load_gsm8k(shared_data / "gsm8k" / "test.jsonl")
    raw = _raw(shared_data / "gsm8k" / "test.jsonl")
    # the dataset's own solutions (reasoning, then "#### n") score 1 against our references
    rewards, stats = score_math([r["answer"] for r in raw], [t.reference for t in tasks])
    assert rewards.sum() == len(tasks), stats


def test_aime24(shared_data):
    path = shared_data / "aime24" / "test.jsonl"
    raw, tasks = _raw(path), load_aime24(path)
    assert len(tasks) == len(raw) == 30
    for r, t in zip(raw, tasks, strict=True):
        assert int(t.reference) == int(r["answer"]) and 0 <= int(t.reference) <= 999
        assert t.prompt == r["problem"] and t.id == f"aime24/{r['id']}"
        assert math_reward(f"\\boxed{{{r['answer']}}}", t.reference) == 1.0


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"problem": "1+1", "answer": "2"}\n\n{"problem": "2+2", "answer": \n')
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} line 3"):
        load_math500(path)
    path.write_text('{"problem": "1+1", "answer": "2"}\n[1, 2]\n')
    with pytest.raises(ValueError, match="line 2"):
        load_math500(path)


def test_missing_field_names_line(tmp_path):
    path = tmp_path / "gsm.jsonl"
    path.write_text('{"question": "q", "answer": "x\\n#### 3"}\n{"question": "q"}\n')
    with pytest.raises(ValueError, match="line 2.*'answer'"):
        load_gsm8k(path)
    path.write_text('{"question": "q", "answer": "no marker"}\n')
    with pytest.raises(ValueError, match="line 1"):
        load_gsm8k(path)


@pytest.mark.parametrize(
    "name, key",
    [
        ("math500", "data.math500_path"),
        ("gsm8k", "data.gsm8k_path"),
        ("aime24", "data.aime24_path"),
    ],
)
def test_missing_file_names_config_key(tmp_path, name, key):
    with pytest.raises(FileNotFoundError, match=re.escape(key)):
        LOADERS[name](tmp_path / "nope.jsonl")


def test_jsonl_roundtrip_keeps_extra_fields(tmp_path):
    tasks = [
        Task("a/1", "What is $\\{1\\}$?", "1", "level1", "Algebra", "sol", {"source": "x"}),
        Task("a/2", "2+2", "4", meta={"source": "x", "k": [1, 2]}),
    ]
    path = tmp_path / "tasks.jsonl"
    rows = [dict(task_to_json(t), pass_rate=0.5) for t in tasks]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    back = load_jsonl_tasks(path)
    for t, b in zip(tasks, back, strict=True):
        assert (b.id, b.prompt, b.reference, b.band, b.domain, b.solution) == (
            t.id,
            t.prompt,
            t.reference,
            t.band,
            t.domain,
            t.solution,
        )
        assert b.meta["pass_rate"] == 0.5 and t.meta.items() <= b.meta.items()


def test_jsonl_custom_keys_and_default_ids(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"q": "1+2", "a": "3"}\n{"q": "2+2", "a": "4", "topic": "arith"}\n')
    tasks = load_jsonl_tasks(path, prompt_key="q", reference_key="a", domain_key="topic")
    assert [t.id for t in tasks] == ["mine/1", "mine/2"]
    assert [t.domain for t in tasks] == ["", "arith"]
    with pytest.raises(FileNotFoundError, match="data.train_path"):
        load_jsonl_tasks(tmp_path / "no.jsonl", config_key="data.train_path")


# ------------------------------------------------------------------ templates


def test_templates_render_verbatim_and_verify():
    prompt = "Find $\\frac{a}{b}$ when {x} = 2."  # braces must survive
    for name in ("long_cot", "direct", "compact", "compact_direct"):
        t = template(name)
        text = render(t, prompt)
        assert prompt in text and "{prompt}" not in text
        assert text.endswith(t.response_prefix)
    long_cot = render(template("long_cot"), "1+1")
    assert "\\boxed" in long_cot
    direct = template("direct")
    assert math_reward(response_text(direct, "7}"), "7") == 1.0
    assert math_reward(response_text(template("compact"), "3+4+0=07\n\\boxed{7}"), "7") == 1.0


def test_template_errors_and_copies():
    with pytest.raises(ValueError, match="placeholder"):
        render(PromptTemplate(format="no slot"), "x")
    with pytest.raises(ValueError, match="long_cot"):
        template("nope")
    t = template("compact")
    t.format = "changed {prompt}"
    assert template("compact").format != t.format
