"""RL of a real (tiny, random) Qwen2 checkpoint with a real BPE tokenizer and chat template on
real GSM8K and MATH-500 rows, through the issue's contract command line:

    python -m experiments.run +exp=math trainer.init_from_hf=DIR 'data.train=[...]'
        'data.eval=[...]' trainer.run_dir=OUT trainer.iterations=2 sampler.batch_prompts=4
        sampler.samples_per_prompt=4 rollout.max_prompt_len=256 rollout.max_new_tokens=32

Outputs, exact resume after SIGKILL, final/hf in transformers, and bad input refused by name.
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests.loop_runs import ROOT, has_record, records
from tests.real_model import real_model_dir

DATA = ROOT.parent / "shared" / "data"


def _subset(src, dst, rows: slice):
    lines = src.read_text().splitlines()[rows]
    dst.write_text("\n".join(lines) + "\n")
    return dst


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("real-data")
    return {
        "train": [
            _subset(DATA / "gsm8k" / "train.jsonl", d / "gsm8k_train.jsonl", slice(0, 48)),
            _subset(DATA / "math500" / "test.jsonl", d / "math500_train.jsonl", slice(0, 48)),
        ],
        "eval": [
            _subset(DATA / "gsm8k" / "test.jsonl", d / "gsm8k_test.jsonl", slice(0, 4)),
            _subset(DATA / "math500" / "test.jsonl", d / "math500_test.jsonl", slice(100, 104)),
        ],
    }


def _cmd(run_dir, data, *extra):
    return [
        sys.executable,
        "-m",
        "experiments.run",
        "+exp=math",
        f"trainer.init_from_hf={real_model_dir()}",
        "data.train=[{}]".format(",".join(map(str, data["train"]))),
        "data.eval=[{}]".format(",".join(map(str, data["eval"]))),
        f"trainer.run_dir={run_dir}",
        "trainer.iterations=2",
        "sampler.batch_prompts=4",
        "sampler.samples_per_prompt=4",
        "rollout.max_prompt_len=256",
        "rollout.max_new_tokens=32",
        "rollout.slots=16",
        "trainer.checkpoint_every=1",
        "trainer.eval_every=2",
        *extra,
    ]


def _run(run_dir, data, *extra, popen=False):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    cmd = _cmd(run_dir, data, *extra)
    if popen:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return proc


@pytest.fixture(scope="module")
def math_run(tmp_path_factory, data):
    run_dir = tmp_path_factory.mktemp("math") / "run"
    proc = _run(run_dir, data)
    assert proc.stdout.strip().splitlines()[-1] == str(run_dir)  # last line: the run dir
    return run_dir


def test_contract_run_leaves_summary_metrics_heldout_and_hf(math_run, data):
    summary = json.loads((math_run / "summary.json").read_text())
    sources = ["gsm8k_test", "math500_test"]
    for when in ("start", "end"):  # each eval source, then its tags (MATH levels) as src/tag
        keys = list(summary["eval_accuracy"][when])
        assert [k for k in keys if "/" not in k] == sources
        assert all(k.split("/")[0] in sources for k in keys)
    rl = [r for r in records(math_run) if r["phase"] == "rl"]
    assert [r["iteration"] for r in rl] == [0, 1]
    assert all(r["train/groups"] >= 0 for r in rl)
    rows = [json.loads(x) for x in (math_run / "eval" / "heldout.jsonl").read_text().splitlines()]
    # prompts over rollout.max_prompt_len are dropped before RL and counted, never truncated
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(real_model_dir())
    dropped = summary["dropped_prompts"].get("data.eval[1]", 0)
    assert 0 <= dropped < 4
    assert [r["band"] for r in rows] == ["gsm8k_test"] * 4 + ["math500_test"] * (4 - dropped)
    lengths = [len(tok(r["prompt"], add_special_tokens=False)["input_ids"]) for r in rows]
    assert max(lengths) <= 256
    # the prompt as fed: the checkpoint's chat template around the problem, per transformers
    question = json.loads(data["eval"][0].read_text().splitlines()[0])["question"]
    want = tok.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    assert question in rows[0]["prompt"] and rows[0]["prompt"].startswith(want.split(question)[0])
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (math_run / "final" / "hf" / f).is_file(), f


def test_final_hf_loads_in_transformers_and_greedy_matches_ours(math_run):
    import torch
    import transformers

    from k15_jax.model import load_hf
    from k15_jax.model.tokenizer import load_tokenizer
    from k15_jax.rollout.driver import collect
    from k15_jax.rollout.engine import make_engine
    from k15_jax.rollout.types import RolloutConfig

    hf = math_run / "final" / "hf"
    model = transformers.AutoModelForCausalLM.from_pretrained(hf).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf)
    assert hf_tok.chat_template  # the chat template travels with the policy
    row = json.loads((math_run / "eval" / "heldout.jsonl").read_text().splitlines()[0])
    tok = load_tokenizer(hf)
    prompt = tok.encode(row["prompt"])
    assert prompt == hf_tok(row["prompt"], add_special_tokens=False)["input_ids"]
    cfg, params = load_hf(hf)
    rcfg = RolloutConfig(
        greedy=True, max_prompt_len=256, max_new_tokens=24, slots=4, stop_on_repeat=False
    )
    engine = make_engine(cfg, rcfg, eos_id=tok.stop_ids, pad_id=tok.pad_id, params=params)
    ro, _, _, _ = collect(engine, [("0", prompt)], k=1, iteration=0, key=jax.random.key(0))
    ours = np.asarray(ro.tokens)[0, len(prompt) : len(prompt) + int(ro.length[0])].tolist()
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=24,
            do_sample=False,
            eos_token_id=list(tok.stop_ids),
            pad_token_id=tok.pad_id,
        )
    assert out[0, len(prompt) :].tolist() == ours


def test_killed_run_resumes_to_the_same_metrics(data, tmp_path):
    """Partial rollouts on (a budget of 8 tokens a call): the killed run's buffer holds
    unfinished trajectories; resumed, the metrics equal an uninterrupted run's."""
    partial = ["rollout.partial=true", "rollout.budget_tokens=8", "trainer.iterations=3"]
    whole = tmp_path / "whole"
    _run(whole, data, *partial)
    assert any(r.get("rollout/buffer_unfinished", 0) > 0 for r in records(whole))
    run_dir = tmp_path / "killed"
    metrics = run_dir / "metrics.jsonl"
    proc = _run(run_dir, data, *partial, popen=True)
    deadline = time.time() + 600
    while time.time() < deadline:  # killed once RL iteration 1 is written
        if has_record(metrics, phase="rl", iteration=1):
            break
        if proc.poll() is not None:
            pytest.fail(f"run ended before it could be killed:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = _run(run_dir, data, *partial)
    assert "resumed from" in resumed.stderr
    assert records(run_dir) == records(whole)


def _compose(*overrides):
    from hydra import compose, initialize_config_dir

    from k15_jax.config import register

    register()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        return compose("config", overrides=list(overrides))


def _build(tmp_path, data, *extra, hf=None):
    from k15_jax.train.setup import build

    cfg = _compose(*_cmd(tmp_path / "run", data, *extra)[3:])
    if hf is not None:
        cfg.trainer.init_from_hf = str(hf)
    return build(cfg)


def test_bad_jsonl_line_and_row_without_answer_name_file_and_line(tmp_path, data):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1?", "answer": "#### 2"}\n{"question": oops\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl line 2"):
        _build(tmp_path, {**data, "train": [bad]})
    empty = tmp_path / "noanswer.jsonl"
    empty.write_text('{"problem": "What is 2+2?", "answer": "4"}\n{"problem": "And 3+3?"}\n')
    with pytest.raises(ValueError, match=r"noanswer\.jsonl line 2"):
        _build(tmp_path, {**data, "train": [empty]})


def test_unknown_source_is_refused(tmp_path, data):
    with pytest.raises(ValueError, match="data.train"):
        _build(tmp_path, {**data, "train": [tmp_path / "missing.jsonl"]})


def test_tokenizer_larger_than_the_embedding_is_refused(tmp_path, data):
    import shutil

    hf = tmp_path / "small"
    shutil.copytree(real_model_dir(), hf)
    cfg = json.loads((hf / "config.json").read_text())
    cfg["vocab_size"] = 100
    (hf / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="vocab_size=100"):
        _build(tmp_path, data, hf=hf)


def test_chat_template_that_fails_to_render_is_named(tmp_path, data):
    import shutil

    hf = tmp_path / "broken"
    shutil.copytree(real_model_dir(), hf)
    tc = json.loads((hf / "tokenizer_config.json").read_text())
    tc["chat_template"] = "{{ raise_exception('no user turns here') }}"
    (hf / "tokenizer_config.json").write_text(json.dumps(tc))
    with pytest.raises(ValueError, match="no user turns here"):
        _build(tmp_path, data, hf=hf)


SUM_TESTS = [{"stdin": "2 3\n", "expected": "5\n"}, {"stdin": "10 -4\n", "expected": "6\n"}]
PROGRAMS = {
    "right": "```python\na, b = map(int, input().split())\nprint(a + b)\n```",
    "hangs": "```python\nwhile True:\n    pass\n```",
    "crashes": "```python\nraise RuntimeError('boom')\n```",
    "no code": "the answer is 5",
}


def test_code_rows_are_judged_by_the_sandbox_and_failures_score_zero():
    """route_by_kind on a mixed batch: math rows through the rule verifier, code rows
    through a real sandbox service; a hanging and a crashing program give 0, the batch
    goes on, and the timeout is counted."""
    from k15_jax.data.loaders import Task
    from k15_jax.rewards.routing import code_cases, code_scorer, route_by_kind
    from k15_jax.rewards.score import RewardConfig, make_verifier

    code = Task(id="c:1", prompt="add", reference="", meta={"kind": "code", "tests": SUM_TESTS})
    code = code_cases([code], None, None)[0]  # inline tests need no case generation
    assert code.meta["cases"] == SUM_TESTS
    math = Task(id="m:1", prompt="2+3?", reference="5", meta={"kind": "math"})
    tasks = [code] * len(PROGRAMS) + [math, math]
    responses = [*PROGRAMS.values(), "so \\boxed{5}", "so \\boxed{6}"]
    scorer = code_scorer(RewardConfig(sandbox_workers=2))
    verify = route_by_kind(make_verifier(RewardConfig()), scorer, tasks)
    v, stats = verify([t.prompt for t in tasks], responses, [t.reference for t in tasks])
    np.testing.assert_array_equal(v, [1, 0, 0, 0, 1, 0])
    assert stats["code_rows"] == 4 and stats["code_timeouts"] == 1


def test_mixed_math_and_code_run_scores_code_inside_the_loop(tmp_path, data):
    code = tmp_path / "sums.jsonl"

    rows = [{"id": i, "prompt": f"Read two integers, print their sum ({i}).", "tests": SUM_TESTS}
            for i in range(8)]  # fmt: skip
    code.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train = ",".join([str(data["train"][0]), f"{{path:{code},weight:20}}"])
    run_dir = tmp_path / "mixed"
    _run(run_dir, data, f"data.train=[{train}]", "trainer.iterations=1", "reward.sandbox_workers=2")
    rl = [r for r in records(run_dir) if r["phase"] == "rl"]
    assert rl and rl[0]["reward/code_rows"] > 0
    assert "reward/code_timeouts" in rl[0]
