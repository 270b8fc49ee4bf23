"""The curation command: scoring logic with a scripted model, resume after an interruption,
and end to end with the rollout engine on the synthetic suite and on MATH-500."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments import curate as cmd
from k15_jax.data.curation import load_curated
from k15_jax.data.loaders import Task
from k15_jax.data.synthetic import SyntheticConfig, SyntheticSuite
from k15_jax.data.templates import render, template
from k15_jax.rewards.math import math_reward

ROOT = Path(__file__).resolve().parents[1]


def _cfg(*overrides) -> cmd.CurateConfig:
    with initialize_config_dir(str(ROOT / "configs"), version_base=None):
        return OmegaConf.to_object(compose("curate", overrides=list(overrides)))


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _expected_difficulty(rate: float) -> int:
    # the report's rule with the default edges, written out: lower pass rate = harder
    return 0 if rate >= 0.8 else 1 if rate >= 0.5 else 2 if rate >= 0.2 else 3


# ------------------------------------------------------------------ scripted model


def _tasks():
    suite = SyntheticSuite(
        SyntheticConfig(bands=["add1", "add2"], sft_band_weights=[1, 1], pool_per_band=7)
    )
    return suite.train_pool()  # 7 + 7 prompts


def _plan(i: int, n: int) -> tuple[int, bool]:
    """(right long-CoT answers of n, whether one direct try is right) for prompt i."""
    return i % (n + 1), i % 4 == 1


class Scripted:
    """A model that answers prompt i right in a planned number of samples; records calls."""

    def __init__(self, tasks, n, fail_after=None):
        self.ref = {t.id: t.reference for t in tasks}
        self.index = {t.id: i for i, t in enumerate(tasks)}
        self.n, self.fail_after, self.asked = n, fail_after, []

    def sample(self, requests, k):
        if self.fail_after is not None and len(self.asked) >= self.fail_after:
            raise RuntimeError("killed")
        self.asked.append([rid for rid, _ in requests])
        out = []
        for rid, text in requests:
            assert text == render(template("compact"), rid.split("/")[1])  # the long-CoT input
            m, _ = _plan(self.index[rid], self.n)
            out.append([f"1+2\n\\boxed{{{self.ref[rid] if j < m else 'x'}}}" for j in range(k)])
        return out

    def direct(self, requests, k):
        # the direct template prefills "\boxed{": a completion "7}" answers 7
        return [
            [f"{self.ref[rid]}}}" if _plan(self.index[rid], self.n)[1] and j == 3 else "0x}"
             for j in range(k)]
            for rid, _ in requests
        ]  # fmt: skip

    def generator(self):
        fns = {"sample": self.sample, "direct": self.direct}
        return cmd.Generator(fns, n_tokens=lambda text: len(text) + 1, max_prompt_len=24)


def test_scripted_rows_follow_the_report_rules(tmp_path):
    cfg = _cfg("batch_prompts=4", "curation.n_samples=5", "curation.n_direct=4")
    tasks = _tasks()
    mc = Task("mc/1", "Which of the following is 3? (A) 2 (B) 3", "B")  # format drop
    long = Task("long/1", "1" * 30 + "+1", "2")  # does not fit max_prompt_len
    tasks = [*tasks[:5], mc, *tasks[5:9], long, *tasks[9:]]
    model = Scripted(tasks, 5)
    rows, report = cmd.curate(tasks, model.generator(), cfg, tmp_path)

    assert [r["id"] for r in rows] == [t.id for t in tasks]
    asked = [i for batch in model.asked for i in batch]
    assert sorted(asked) == sorted(t.id for t in tasks if t.id not in ("mc/1", "long/1"))
    by_id = {r["id"]: r for r in rows}
    assert (
        by_id["mc/1"]["drop_reasons"] == ["multiple_choice"] and by_id["mc/1"]["pass_rate"] is None
    )
    assert by_id["long/1"]["drop_reasons"] == ["prompt_too_long"] and not by_id["long/1"]["kept"]
    expect_kept = []
    for i, t in enumerate(tasks):
        if t.id in ("mc/1", "long/1"):
            continue
        m, direct_right = _plan(i, 5)
        r = by_id[t.id]
        assert r["pass_rate"] == pytest.approx(m / 5) and r["n_samples"] == 5
        assert r["difficulty"] == _expected_difficulty(m / 5)
        assert r["direct_correct"] == int(direct_right) and r["n_direct"] == 4
        assert r["drop_reasons"] == (["solved_without_reasoning"] if direct_right else [])
        assert r["tags"] == ["domain:addition", f"band:{t.band}", "source:synthetic"]
        if not direct_right:
            expect_kept.append(t.id)
    curated = load_curated(tmp_path / "curated.jsonl")
    assert [t.id for t in curated] == expect_kept
    assert all(t.meta["pass_rate"] == by_id[t.id]["pass_rate"] for t in curated)
    saved = json.loads((tmp_path / "balance.json").read_text())
    assert (
        saved == report
        and report["kept"] == len(expect_kept) == report["domains"]["domain:addition"]
    )
    n_direct_drops = sum(_plan(i, 5)[1] for i, t in enumerate(tasks) if t.id[0] == "a")
    assert report["drop_reasons"] == {
        "solved_without_reasoning": n_direct_drops,
        "multiple_choice": 1,
        "prompt_too_long": 1,
    }


def test_interrupted_run_resumes_without_rescoring(tmp_path):
    cfg = _cfg("batch_prompts=3", "curation.n_samples=4", "curation.n_direct=2")
    tasks = _tasks()
    full_rows, _ = cmd.curate(tasks, Scripted(tasks, 4).generator(), cfg, tmp_path / "full")

    out = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="killed"):
        cmd.curate(tasks, Scripted(tasks, 4, fail_after=2).generator(), cfg, out)
    results = out / "results.jsonl"
    before = _lines(results)
    assert [json.loads(x)["id"] for x in before] == [t.id for t in tasks[:6]]
    with results.open("a") as f:  # a write torn by the kill
        f.write(json.dumps(full_rows[6])[:40])
    model = Scripted(tasks, 4)
    rows, _ = cmd.curate(tasks, model.generator(), cfg, out)
    assert [i for batch in model.asked for i in batch] == [t.id for t in tasks[6:]]
    after = _lines(results)
    assert after[:6] == before and len(after) == len(tasks)
    assert rows == full_rows
    assert _lines(out / "curated.jsonl") == _lines(tmp_path / "full" / "curated.jsonl")

    # a re-run with other rules refuses to mix its rows with these
    with pytest.raises(ValueError, match=r"curation\.n_samples: 4 -> 5"):
        cmd.curate(tasks, model.generator(), _cfg("curation.n_samples=5"), out)


def test_direct_probe_can_be_switched_off(tmp_path):
    cfg = _cfg("curation.n_samples=3", "curation.n_direct=0")
    tasks = _tasks()
    model = Scripted(tasks, 3)
    gen = model.generator()
    del gen.generate["direct"]  # never asked for
    rows, _ = cmd.curate(tasks, gen, cfg, tmp_path)
    for i, r in enumerate(rows):
        assert r["n_direct"] is None and r["direct_correct"] is None and r["kept"]
        assert r["pass_rate"] == pytest.approx(_plan(i, 3)[0] / 3)


# ------------------------------------------------------------------ input errors


def test_malformed_line_and_missing_file_are_named(tmp_path):
    bad = tmp_path / "set.jsonl"
    bad.write_text('{"id": "a", "prompt": "1+1", "reference": "2"}\n{"id": "b", "prompt": \n')
    with pytest.raises(ValueError, match=re.escape(f"{bad} line 2")):
        cmd.run(_cfg("source=jsonl", f"data.jsonl_path={bad}", f"output_dir={tmp_path}/o"))
    with pytest.raises(ValueError, match="data.jsonl_path"):
        cmd.run(_cfg("source=jsonl", f"output_dir={tmp_path}/o"))
    with pytest.raises(FileNotFoundError, match="set data.gsm8k_path"):
        cmd.run(_cfg("source=gsm8k", f"data.gsm8k_path={tmp_path}/no.jsonl"))
    with pytest.raises(FileNotFoundError, match="set data.math500_path"):
        cmd.run(_cfg("source=math500", f"data.math500_path={tmp_path}/no.jsonl"))
    with pytest.raises(FileNotFoundError, match="set model_path"):
        cmd.run(_cfg(f"model_path={tmp_path}/no_model", f"output_dir={tmp_path}/o", "limit=2"))
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="set tokenizer_path"):
        cmd.run(_cfg(f"model_path={hf}", f"output_dir={tmp_path}/o", "limit=2"))


# ------------------------------------------------------------------ with the rollout engine


def _check_responses(rows, sample_template, direct_template):
    """Pass rates and direct counts re-derived from the saved texts with math_reward."""
    for r in rows:
        if r["pass_rate"] is None:
            continue
        s, d = r["responses"]["sample"], r["responses"]["direct"]
        assert len(s) == r["n_samples"] and len(d) == r["n_direct"]
        ts, td = template(sample_template), template(direct_template)
        right = [math_reward(ts.response_prefix + x, r["reference"]) for x in s]
        assert r["pass_rate"] == pytest.approx(sum(right) / len(s))
        assert r["direct_correct"] == sum(
            math_reward(td.response_prefix + x, r["reference"]) for x in d
        )
        assert len(set(s)) > 1  # independent samples, not one answer repeated


def test_command_on_synthetic_suite_with_tiny_random_model(tmp_path):
    out = tmp_path / "syn"
    args = ["data.synthetic.bands=[add1,add3]", "data.synthetic.pool_per_band=6",
            "batch_prompts=5", "save_responses=true", f"output_dir={out}"]  # fmt: skip
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "experiments.curate", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().splitlines()[-1] == str(out / "curated.jsonl")
    assert "prompts: 12" in proc.stdout
    rows = [json.loads(x) for x in _lines(out / "results.jsonl")]
    pool = SyntheticSuite(
        SyntheticConfig(bands=["add1", "add3"], sft_band_weights=[1, 1], pool_per_band=6)
    ).train_pool()
    assert [r["id"] for r in rows] == [t.id for t in pool]
    assert all(r["n_samples"] == 10 and r["n_direct"] == 8 for r in rows)  # the report's counts
    _check_responses(rows, "compact", "compact_direct")
    kept = [r for r in rows if r["kept"]]
    curated = load_curated(out / "curated.jsonl")
    assert [t.id for t in curated] == [r["id"] for r in kept]
    for t, r in zip(curated, kept, strict=True):
        assert t.meta["pass_rate"] == r["pass_rate"] and t.meta["difficulty"] == r["difficulty"]
        assert t.meta["tags"] == ["domain:addition", f"band:{t.band}", "source:synthetic"]
        assert "responses" not in t.meta
    report = json.loads((out / "balance.json").read_text())
    assert report["total"] == 12 and report["kept"] == len(kept)


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    """A random tiny char-level policy saved like a run's final/hf folder."""
    import jax

    from k15_jax.model import export_hf, init_params
    from k15_jax.model.tokenizer import CharTokenizer

    d = tmp_path_factory.mktemp("hf")
    tok = CharTokenizer()
    model = cmd.model_config(_cfg("model.max_position_embeddings=1024").model)
    model = model.replace(bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
    export_hf(init_params(model, jax.random.key(3)), model, d)
    tok.save_hf(d)
    return d


def test_math500_from_hf_checkpoint_resumes_and_matches_uninterrupted(
    tmp_path, shared_data, tiny_hf, monkeypatch
):
    path = shared_data / "math500" / "test.jsonl"
    raw = [json.loads(x) for x in _lines(path)[:10]]
    base = [
        "source=math500", f"data.math500_path={path}", f"model_path={tiny_hf}",
        "generation.max_prompt_len=512", "generation.max_new_tokens=24",
        "generation.direct_max_new_tokens=6", "generation.slots=32", "batch_prompts=4",
        "curation.n_samples=4", "curation.n_direct=2", "save_responses=true",
    ]  # fmt: skip
    asked = []
    make = cmd.make_generator

    def recording(cfg):
        gen = make(cfg)
        sample = gen.generate["sample"]
        gen.generate["sample"] = lambda req, k: asked.append([i for i, _ in req]) or sample(req, k)
        return gen

    monkeypatch.setattr(cmd, "make_generator", recording)
    out = tmp_path / "m"
    cmd.run(_cfg(*base, "limit=5", f"output_dir={out}"))  # "interrupted" after 5 prompts
    first = _lines(out / "results.jsonl")
    assert len(first) == 5
    asked.clear()
    cmd.run(_cfg(*base, f"output_dir={out}", "limit=10"))
    after = _lines(out / "results.jsonl")
    assert after[:5] == first and len(after) == 10  # finished rows untouched, none repeated

    def too_long(p):  # char tokenizer: one token per character, plus BOS
        return max(len(render(template(n), p)) for n in ("long_cot", "direct")) + 1 > 512

    ids = [f"math500/{i}" for i in range(1, 11)]
    fits = [i for i, row in zip(ids, raw, strict=True) if not too_long(row["problem"])]
    assert [i for b in asked for i in b] == [i for i in fits if int(i.split("/")[1]) > 5]
    rows = {r["id"]: r for r in map(json.loads, after)}
    for i, row in zip(ids, raw, strict=True):
        r = rows[i]
        assert r["reference"] == row["answer"]
        subject = "domain:" + row["subject"].lower().replace(" ", "_").replace("&", "").replace(
            "__", "_"
        )
        assert r["tags"] == [subject, f"band:level{row['level']}", "source:math500"]
        if i not in fits:
            assert r["drop_reasons"] == ["prompt_too_long"] and r["pass_rate"] is None
    _check_responses(rows.values(), "long_cot", "direct")

    # the same set in one go (other batches) gives the same rows: keys follow the prompt
    cmd.run(_cfg(*base, f"output_dir={tmp_path / 'one'}", "limit=10", "batch_prompts=10"))
    assert _lines(tmp_path / "one" / "results.jsonl") == after
    curated = load_curated(out / "curated.jsonl")
    assert [t.id for t in curated] == [i for i in ids if rows[i]["kept"]]
