"""The evaluation command on a HF policy folder (a tiny random char-level model): the
tokenizer's chat template wraps the problem, and end to end with the rollout engine on the
three math sets, killed and resumed. Helpers and the scripted policy: tests/test_evaluate.py."""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import evaluate as cmd
from k15_jax.data.templates import LONG_COT_FORMAT, template
from k15_jax.eval.checkpoint import resolve_checkpoint
from k15_jax.rewards.math import math_reward
from tests.test_evaluate import ROOT, Stub, _cfg, _data_args, _jsonl


@pytest.mark.slow
def test_chat_template_wraps_the_problem_and_the_prefix_follows(tmp_path, shared_data, tiny_hf):
    import shutil

    hf = tmp_path / "chat"
    shutil.copytree(tiny_hf, hf)
    tc = json.loads((hf / "tokenizer_config.json").read_text())
    tc["chat_template"] = (
        "{{ bos_token }}{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n"
        "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    (hf / "tokenizer_config.json").write_text(json.dumps(tc))
    gsm = _jsonl(shared_data / "gsm8k" / "test.jsonl")[:2]
    stub = Stub(
        {r["question"]: r["answer"].split("####")[-1].strip() for r in gsm}, fmt=lambda a: f"{a}}}"
    )
    cfg = _cfg(
        *_data_args(shared_data),
        f"checkpoint={hf}",
        "chat=true",
        "benchmarks=[gsm8k]",
        "templates.gsm8k=direct",
        "limit=2",
        "samples=1",
        f"output_dir={tmp_path / 'o'}",
    )
    b = json.loads(cmd.run(cfg, policy=stub).read_text())["benchmarks"]["gsm8k"]
    direct = template("direct")
    assert stub.inputs == [
        "<bos><user>" + direct.format.replace("{prompt}", r["question"]) + "\n<assistant>\\boxed{"
        for r in gsm
    ]
    assert b["pass@1"] == 1.0  # "18}" after the prefilled "\boxed{" is the answer 18
    # the engine policy tokenizes the wrapped text without a second BOS
    policy = cmd.build_policy(cfg, resolve_checkpoint(str(hf)), bos=False)
    ids = policy.tok.encode(stub.inputs[0], bos=policy.bos)
    assert ids[0] == policy.tok.bos_id and ids[1] != policy.tok.bos_id


# ------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    """A random tiny char-level policy saved as a HF folder (config, safetensors, tokenizer)."""
    from k15_jax.model import export_hf, init_params
    from k15_jax.model.config import ModelConfig
    from k15_jax.model.tokenizer import CharTokenizer

    d = tmp_path_factory.mktemp("hf")
    tok = CharTokenizer()
    model = ModelConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_id,
        eos_token_id=tok.eos_id,
    )
    export_hf(init_params(model, jax.random.key(3)), model, d)
    tok.save_hf(d)
    return d


def _complete_lines(path: Path) -> list[str]:
    return path.read_text().split("\n")[:-1] if path.is_file() else []


def test_command_killed_then_resumed_on_three_math_sets_with_tiny_random_hf_model(
    tmp_path, shared_data, tiny_hf
):
    out = tmp_path / "e2e"
    args = [
        f"checkpoint={tiny_hf}",
        "benchmarks=[math500,aime24,gsm8k]",
        "limit=3",
        "samples=2",
        "max_new_tokens=16",
        "seed=7",
        "batch_prompts=1",
        f"output_dir={out}",
        *_data_args(shared_data),
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-m", "experiments.evaluate", *args]

    # killed once MATH-500 has a row (AIME and GSM8K still need their engines compiled)
    first = out / "math500" / "results.jsonl"
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not _complete_lines(first):
        assert proc.poll() is None and time.monotonic() < deadline, "no row before the kill"
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    before = {n: _complete_lines(out / n / "results.jsonl") for n in ("math500", "aime24", "gsm8k")}
    assert 1 <= sum(map(len, before.values())) < 9

    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().splitlines()[-1] == str(out / "eval.json")
    for name, lines in before.items():
        assert f"{name}: {len(lines)} of 3 prompts already scored" in proc.stderr
    report = json.loads((out / "eval.json").read_text())

    math500 = _jsonl(shared_data / "math500" / "test.jsonl")[:3]
    aime = _jsonl(shared_data / "aime24" / "test.jsonl")[:3]
    gsm = _jsonl(shared_data / "gsm8k" / "test.jsonl")[:3]
    expected = {
        "math500": [
            (r.get("unique_id") or f"math500/{i + 1}", r["answer"]) for i, r in enumerate(math500)
        ],
        "aime24": [(f"aime24/{r['id']}", str(int(r["answer"]))) for r in aime],
        "gsm8k": [
            (f"gsm8k/test/{i + 1}", r["answer"].split("####")[-1].strip())
            for i, r in enumerate(gsm)
        ],
    }
    for name, want in expected.items():
        lines = (out / name / "results.jsonl").read_text().splitlines()
        assert lines[: len(before[name])] == before[name]  # rows of the killed run kept
        rows = [json.loads(x) for x in lines]
        assert [(r["id"], r["reference"]) for r in rows] == want  # each prompt once, in order
        for r in rows:
            assert len(r["responses"]) == 2 and len(set(r["responses"])) == 2
            assert r["correct"] == [int(math_reward(x, r["reference"])) for x in r["responses"]]
            assert all(1 <= t <= 16 for t in r["tokens"])
            assert all(t == 16 for t, f in zip(r["tokens"], r["finish"]) if f == "length")
        b = report["benchmarks"][name]
        lengths = [t for r in rows for t in r["tokens"]]
        assert b["pass@1"] == pytest.approx(np.mean([np.mean(r["correct"]) for r in rows]))
        assert b["response_tokens_mean"] == pytest.approx(np.mean(lengths))
        assert b["response_tokens_p90"] == pytest.approx(np.percentile(lengths, 90))
        assert b["truncated"] == sum(f == "length" for r in rows for f in r["finish"])
        assert report["templates"][name]["format"] == LONG_COT_FORMAT
    assert set(report["benchmarks"]["math500"]["by_band"]) == {
        f"level{r['level']}" for r in math500
    }
    sha = hashlib.sha256((tiny_hf / "model.safetensors").read_bytes()).hexdigest()
    assert report["checkpoint"]["files"] == {"model.safetensors": sha}
    assert report["seed"] == 7 and report["sampling"]["temperature"] == 1.0
    assert report["versions"]["jax"] == jax.__version__
    md = (out / "eval.md").read_text()
    assert all(f"| {name} | 3 |" in md for name in expected)
