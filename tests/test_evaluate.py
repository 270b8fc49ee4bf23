"""The evaluation command: pass@k and its interval against independent references, scripted
policies that answer the data files' references (100%) or perturbed ones (0%), kill and
resume without re-scoring, run folders (orbax and final/hf) and the settings' errors. A HF
policy folder (chat template, end to end with the rollout engine): tests/test_evaluate_hf.py."""

import hashlib
import itertools
import json
import math
import re
import types
from pathlib import Path

import jax
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments import evaluate as cmd
from k15_jax.data.synthetic import SyntheticSuite
from k15_jax.data.templates import template
from k15_jax.eval.checkpoint import load_run_policy, resolve_checkpoint
from k15_jax.eval.generation import Sample
from k15_jax.eval.metrics import mean_ci, pass_at_k

ROOT = Path(__file__).resolve().parents[1]
PROBLEMS = ROOT / "k15_jax" / "sandbox" / "problems"


def _cfg(*overrides) -> cmd.EvaluateConfig:
    with initialize_config_dir(str(ROOT / "configs"), version_base=None):
        return OmegaConf.to_object(compose("evaluate", overrides=list(overrides)))


def _data_args(shared_data: Path) -> list[str]:
    return [
        f"data.{n}_path={shared_data / n / 'test.jsonl'}" for n in ("math500", "aime24", "gsm8k")
    ]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


# ------------------------------------------------------------------ estimators


def test_pass_at_k_equals_the_share_of_k_subsets_with_a_right_answer():
    for n in range(1, 8):
        for c in range(n + 1):
            right = [1] * c + [0] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(right, k))
                expected = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)
    assert pass_at_k(200, 3, 100) == pytest.approx(1 - math.comb(197, 100) / math.comb(200, 100))
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)


def test_pass1_interval_covers_the_population_mean_95_percent_of_the_time():
    # prompts of random difficulty p ~ Beta(0.6, 0.9) (mean 0.4), K = 4 Bernoulli(p) answers
    rng = np.random.default_rng(0)
    n_sims, B, K, covered = 2000, 120, 4, 0
    p = rng.beta(0.6, 0.9, size=(n_sims, B))
    c = rng.binomial(K, p)
    for sim in range(n_sims):
        _, _, (lo, hi) = mean_ci(c[sim] / K)
        covered += lo <= 0.4 <= hi
    assert 0.93 <= covered / n_sims <= 0.97
    assert mean_ci([0.5])[1:] == (None, None)  # one prompt: no interval


# ------------------------------------------------------------------ scripted policies


def _bump(answer: str) -> str:
    """A wrong answer near the reference: its first integer plus one, else '+1' appended."""
    m = re.search(r"\d+", answer)
    if m is None:
        return answer + "+1"
    return answer[: m.start()] + str(int(m.group()) + 1) + answer[m.end() :]


def _file_answers(shared_data: Path) -> dict[str, str]:
    """problem text -> final answer, straight from the data files (not our loaders)."""
    out = {}
    for r in _jsonl(shared_data / "math500" / "test.jsonl"):
        out[r["problem"]] = r["answer"]
    for r in _jsonl(shared_data / "aime24" / "test.jsonl"):
        out[r["problem"]] = r["answer"]
    for r in _jsonl(shared_data / "gsm8k" / "test.jsonl"):
        out[r["question"]] = r["answer"].split("####")[-1].strip()
    return out


class Stub:
    """A policy that answers each prompt from a table of problem text -> answer.

    right(i, j): whether sample j of the i-th prompt asked is right (else the answer is
    bumped). fail_after: raise after that many generate calls, as a killed run would.
    """

    def __init__(self, answers, right=lambda i, j: True, fail_after=None, fmt=None):
        self.answers, self.right, self.fail_after = answers, right, fail_after
        self.problems = sorted(answers, key=len, reverse=True)  # the longest match wins
        self.fmt = fmt or (lambda a: f"Let me work it out.\nSo the answer is \\boxed{{{a}}}.")
        self.max_prompt_len, self.asked, self.inputs = 10**6, [], []

    def n_tokens(self, text: str) -> int:
        return len(text)

    def generate(self, requests, k, *, key):
        if self.fail_after is not None and len(self.asked) >= self.fail_after:
            raise RuntimeError("killed")
        self.asked.append([rid for rid, _ in requests])
        out = []
        for _, text in requests:
            self.inputs.append(text)
            i = len(self.inputs) - 1
            a = self.answers[next(p for p in self.problems if p in text)]
            texts = [self.fmt(a if self.right(i, j) else _bump(a)) for j in range(k)]
            out.append([Sample(t, len(t), "eos") for t in texts])
        return out


@pytest.mark.parametrize("right", [True, False])
def test_reference_answers_score_100_and_perturbed_ones_0(tmp_path, shared_data, right):
    cfg = _cfg(*_data_args(shared_data), "samples=2", f"output_dir={tmp_path}")
    stub = Stub(_file_answers(shared_data), right=lambda i, j: right)
    report = json.loads(cmd.run(cfg, policy=stub).read_text())
    want = 1.0 if right else 0.0
    for name, n in (("math500", 500), ("aime24", 30), ("gsm8k", 1319)):
        b = report["benchmarks"][name]
        assert b["prompts"] == n and b["samples"] == 2
        assert b["pass@1"] == want and b["pass@k"] == {"1": want, "2": want}
        assert b["pass@1_ci95"] == [want, want]
        assert b["no_answer"] == b["verifier_timeouts"] == b["verifier_errors"] == 0
    math500 = _jsonl(shared_data / "math500" / "test.jsonl")
    b = report["benchmarks"]["math500"]
    assert set(b["by_band"]) == {f"level{r['level']}" for r in math500}
    assert set(b["by_domain"]) == {r["subject"] for r in math500}
    assert all(g["pass@1"] == want for g in [*b["by_band"].values(), *b["by_domain"].values()])
    assert report["benchmarks"]["gsm8k"]["by_band"] == {}
    assert sum(map(len, stub.asked)) == 500 + 30 + 1319  # every prompt asked once


def test_pass_at_k_and_interval_of_mixed_answers(tmp_path, shared_data):
    # prompt i gets i % 5 right answers of 4 (and 4 when i % 5 == 4)
    n_right = lambda i: min(i % 5, 4)
    stub = Stub(_file_answers(shared_data), right=lambda i, j: j < n_right(i))
    cfg = _cfg(
        *_data_args(shared_data),
        "benchmarks=[gsm8k]",
        "limit=23",
        "samples=4",
        "batch_prompts=5",
        f"output_dir={tmp_path}",
    )
    b = json.loads(cmd.run(cfg, policy=stub).read_text())["benchmarks"]["gsm8k"]
    c = np.array([n_right(i) for i in range(23)])
    assert b["pass@1"] == pytest.approx(c.mean() / 4)
    for k in (1, 2, 4):
        want = np.mean([1 - math.comb(4 - x, k) / math.comb(4, k) for x in c])
        assert b["pass@k"][str(k)] == pytest.approx(want)
    se = np.std(c / 4, ddof=1) / np.sqrt(23)
    assert b["pass@1_ci95"] == pytest.approx(
        [c.mean() / 4 - 1.96 * se, c.mean() / 4 + 1.96 * se], abs=1e-4
    )
    md = (tmp_path / "eval.md").read_text()
    assert f"| gsm8k | 23 | {100 * c.mean() / 4:.1f} (" in md


# ------------------------------------------------------------------ kill and resume


def test_killed_run_resumes_without_rescoring(tmp_path, shared_data, monkeypatch):
    answers = _file_answers(shared_data)
    right = lambda i, j: (i + j) % 3 != 0
    base = [
        *_data_args(shared_data),
        "benchmarks=[gsm8k,aime24]",
        "limit=10",
        "samples=2",
        "batch_prompts=3",
    ]
    full = cmd.run(_cfg(*base, f"output_dir={tmp_path / 'full'}"), policy=Stub(answers, right))

    scored = []
    make = cmd.math_scorer

    def recording(timeout_s):
        score = make(timeout_s)
        return lambda items: (scored.append(t.id) or r for (t, _), r in zip(items, score(items)))

    monkeypatch.setattr(cmd, "math_scorer", recording)
    out = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="killed"):
        cmd.run(_cfg(*base, f"output_dir={out}"), policy=Stub(answers, right, fail_after=2))
    results = out / "gsm8k" / "results.jsonl"
    before = results.read_text().splitlines()
    gsm_ids = [f"gsm8k/test/{i}" for i in range(1, 11)]
    assert [json.loads(x)["id"] for x in before] == gsm_ids[:6] == scored
    with results.open("a") as f:  # a line torn by the kill
        f.write('{"id": "gsm8k/test/7", "band"')

    scored.clear()
    stub = Stub(answers, lambda i, j: right(i + 6, j))  # the answers the full run gave
    resumed = cmd.run(_cfg(*base, f"output_dir={out}"), policy=stub)
    aime_ids = [f"aime24/{r['id']}" for r in _jsonl(shared_data / "aime24" / "test.jsonl")[:10]]
    assert [i for batch in stub.asked for i in batch] == gsm_ids[6:] + aime_ids
    assert scored == gsm_ids[6:] + aime_ids  # no prompt scored twice
    after = results.read_text().splitlines()
    assert after[:6] == before and len(after) == 10
    assert after == (tmp_path / "full" / "gsm8k" / "results.jsonl").read_text().splitlines()
    summary = lambda p: json.loads(p.read_text())["benchmarks"]
    assert summary(resumed) == summary(full)

    # all scored: a re-run needs no policy and scores nothing
    scored.clear()
    cmd.run(_cfg(*base, f"output_dir={out}"), policy=None)
    assert scored == [] and summary(resumed) == summary(full)
    # other sampling settings may not add rows to these
    with pytest.raises(ValueError, match=r"sampling\.samples: 2 -> 3"):
        cmd.run(_cfg(*base, "samples=3", f"output_dir={out}"), policy=stub)


# ------------------------------------------------------------------ run folders


def _train_cfg(tmp_path):
    from k15_jax.config import register

    register()
    with initialize_config_dir(str(ROOT / "configs"), version_base=None):
        return compose(
            "config",
            overrides=[
                "data.synthetic.bands=[add1,add2]",
                "data.synthetic.sft_band_weights=[1,1]",
                "sampler.hard_bands=[]",
                "trainer.eval_per_band=6",
                "model.hidden_size=32",
                "model.intermediate_size=64",
                "model.num_layers=1",
                f"trainer.run_dir={tmp_path}/run",
            ],
        )


def test_run_folder_orbax_checkpoint_then_final_hf(tmp_path):
    from k15_jax.config import model_config
    from k15_jax.eval.heldout import heldout
    from k15_jax.model.hf import export_hf
    from k15_jax.model.params import init_params
    from k15_jax.model.tokenizer import CharTokenizer
    from k15_jax.train.state import Checkpoints, RunState

    train = _train_cfg(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(OmegaConf.to_yaml(train, resolve=True))
    tok = CharTokenizer()
    model = model_config(train.model).replace(bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
    p_sft, p_rl = (init_params(model, jax.random.key(s)) for s in (1, 2))
    ckpt, state = Checkpoints(run / "checkpoints"), RunState()
    ckpt.save({"params": p_sft, "opt_state": {"mu": p_sft}}, state)  # mid-SFT layout
    state.phase = "rl"
    ckpt.save({"params": p_rl}, state)
    ckpt.close()

    src = resolve_checkpoint(str(run))
    assert src.kind == "orbax" and src.step_dir.name == "2"
    _, params, _ = load_run_policy(src)
    jax.tree.map(np.testing.assert_array_equal, params, p_rl)

    # the trainer's own held-out list (prompt as given to the model, reference, band)
    setup = types.SimpleNamespace(
        suite=SyntheticSuite(OmegaConf.to_object(train.data.synthetic)),
        template=template(train.data.template),
    )
    items = heldout(setup, 6)
    answers = {p: r for p, r, _ in items}
    add1 = lambda text: answers[text] and len(text.strip()) == 3  # "a+b": one-digit operands
    fmt = lambda a: f"1+2+0=03\n\\boxed{{{a}}}"

    def evaluate(out):
        stub = Stub(answers, fmt=fmt)
        stub.right = lambda i, j: add1(stub.inputs[i])  # right on add1 only
        cfg = _cfg(f"checkpoint={run}", "benchmarks=[synthetic]", "samples=1", f"output_dir={out}")
        report = json.loads(cmd.run(cfg, policy=stub).read_text())
        return stub.inputs, report

    inputs, report = evaluate(tmp_path / "orbax")
    assert inputs == [p for p, _, _ in items]  # the trained format, the trainer's prompts
    b = report["benchmarks"]["synthetic"]
    assert {k: v["pass@1"] for k, v in b["by_band"].items()} == {"add1": 1.0, "add2": 0.0}
    assert report["checkpoint"]["kind"] == "orbax" and report["checkpoint"]["step"] == 2

    # the finished run: final/hf and eval/heldout.jsonl, as train/outputs.py writes them
    export_hf(p_rl, model, run / "final" / "hf")
    tok.save_hf(run / "final" / "hf")
    (run / "eval").mkdir()
    with (run / "eval" / "heldout.jsonl").open("w") as f:
        for prompt, ref, band in items:
            f.write(json.dumps({"prompt": prompt, "reference": ref, "band": band}) + "\n")
    inputs_hf, report_hf = evaluate(tmp_path / "hf")
    assert inputs_hf == inputs
    assert report_hf["templates"]["synthetic"]["name"] == "raw"
    assert report_hf["benchmarks"] == report["benchmarks"]
    sha = hashlib.sha256((run / "final" / "hf" / "model.safetensors").read_bytes()).hexdigest()
    assert report_hf["checkpoint"]["files"] == {"model.safetensors": sha}


# ------------------------------------------------------------------ errors


def test_errors_name_the_setting(tmp_path, shared_data):
    with pytest.raises(FileNotFoundError, match="checkpoint=.*no such directory"):
        cmd.run(_cfg(f"checkpoint={tmp_path}/nothing", f"output_dir={tmp_path}/o"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds neither a HF checkpoint"):
        cmd.run(_cfg(f"checkpoint={tmp_path}/empty", f"output_dir={tmp_path}/o"))
    with pytest.raises(ValueError, match="benchmarks: unknown 'mmlu'"):
        cmd.run(_cfg("benchmarks=[mmlu]", f"output_dir={tmp_path}/o"))
    with pytest.raises(FileNotFoundError, match="set data.gsm8k_path"):
        cmd.run(
            _cfg(
                "benchmarks=[gsm8k]",
                f"data.gsm8k_path={tmp_path}/no.jsonl",
                f"output_dir={tmp_path}/o",
            )
        )
    with pytest.raises(ValueError, match="lower max_new_tokens"):
        cmd.run(
            _cfg(
                "benchmarks=[synthetic]",
                "limit=1",
                "model.max_position_embeddings=64",
                "max_new_tokens=80",
                f"output_dir={tmp_path}/o2",
            )
        )
