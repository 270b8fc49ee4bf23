"""Synthetic suite: verifiable demonstrations, correct worked steps, disjoint eval split,
determinism across processes, length growing with band, SFT band mix."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from k15_jax.data import SyntheticConfig, SyntheticSuite, demonstration, render, template
from k15_jax.rewards import score_math

ROOT = Path(__file__).resolve().parents[1]
BANDS = [f"add{n}" for n in range(1, 6)] + ["mul1", "mul3", "mul5"]


@pytest.fixture(scope="module")
def suite():
    cfg = SyntheticConfig(bands=BANDS, sft_band_weights=[1.0] * len(BANDS), pool_per_band=300)
    return SyntheticSuite(cfg)


def _operands(prompt):
    m = re.fullmatch(r"(\d+)([+*])(\d+)", prompt)
    assert m, prompt
    return int(m[1]), m[2], int(m[3])


def test_demonstrations_verify_against_references(suite):
    tasks = [t for b in suite.bands for t in suite.train_pool([b]) + suite.eval_tasks(b)]
    demos = [suite.demonstration(t) for t in tasks]
    rewards, stats = score_math(demos, [t.reference for t in tasks])
    assert rewards.sum() == len(tasks), stats
    # and the references are the true results (python ints as the independent check)
    for t in tasks:
        a, op, b = _operands(t.prompt)
        assert int(t.reference) == (a + b if op == "+" else a * b)
        assert t.solution == demonstration(t)


def test_worked_steps_are_right(suite):
    """Re-derive each line: digit i (least significant first) of a, the other operand,
    the carry from the previous line's tens digit, and the two-digit result; the boxed
    answer must be the final carry followed by the result digits in reverse."""
    for band in suite.bands:
        for t in suite.train_pool([band])[:100]:
            a, op, b = _operands(t.prompt)
            *lines, last = t.solution.split("\n")
            n = int(band[3:])
            assert len(lines) == n
            carry, digits = 0, []
            for i, line in enumerate(lines):
                m = re.fullmatch(r"(\d)([+*])(\d)\+(\d)=(\d\d)", line)
                assert m, line
                x, y, c, s = int(m[1]), int(m[3]), int(m[4]), int(m[5])
                assert x == a // 10**i % 10 and c == carry
                assert y == (b // 10**i % 10 if op == "+" else b)
                assert s == (x + y + c if op == "+" else x * y + c)
                carry, digits = s // 10, digits + [s % 10]
            lead = str(carry) if carry else ""
            answer = (lead + "".join(map(str, reversed(digits)))).lstrip("0") or "0"
            assert last == f"\\boxed{{{answer}}}"


def test_eval_split_disjoint_from_training(suite):
    rng = np.random.default_rng(7)
    draws = {t.prompt for t in suite.train_tasks(20000, rng)}
    other_seed = SyntheticSuite(SyntheticConfig(bands=BANDS, sft_band_weights=[1] * 8, seed=5))
    for band in suite.bands:
        ev = {t.prompt for t in suite.eval_tasks(band)}
        assert ev, band
        pool = {t.prompt for t in suite.train_pool([band])}
        assert not ev & pool and not ev & draws
        assert not ev & {t.prompt for t in other_seed.train_pool([band])}
        # the eval list does not depend on the training seed
        assert [t.id for t in other_seed.eval_tasks(band)] == [t.id for t in suite.eval_tasks(band)]


def test_small_band_split_partitions_the_problem_space():
    cfg = SyntheticConfig(bands=["add1"], sft_band_weights=[1.0], pool_per_band=1000)
    s = SyntheticSuite(cfg)
    ev, pool = s.eval_tasks("add1"), s.train_pool()
    everything = {f"{a}+{b}" for a in range(10) for b in range(10)}
    assert {t.prompt for t in ev} | {t.prompt for t in pool} == everything
    assert len(ev) + len(pool) == 100 and 0 < len(ev) < 30


def test_sizes_and_ids(suite):
    for band in suite.bands:
        pool = suite.train_pool([band])
        ev = suite.eval_tasks(band)
        assert len({t.id for t in pool}) == len(pool) and len({t.id for t in ev}) == len(ev)
        if band not in ("add1", "mul1"):
            assert len(pool) == 300 and len(ev) == suite.cfg.eval_per_band
        assert all(t.band == band and t.id == f"{band}/{t.prompt}" for t in pool)


_DETERMINISM = """
import json, numpy as np
from k15_jax.data import SyntheticConfig, SyntheticSuite
s = SyntheticSuite(SyntheticConfig(seed=3, pool_per_band=50, eval_per_band=20))
out = {b: [t.id for t in s.eval_tasks(b)] for b in s.bands}
out["pool"] = [t.id for t in s.train_pool()]
out["sft"] = [t.id for t in s.sft_tasks(200, np.random.default_rng(11))]
out["solutions"] = [t.solution for t in s.train_pool()]
print(json.dumps(out))
"""


def test_deterministic_across_processes():
    runs = []
    for hashseed in ("1", "987"):
        env = dict(os.environ, PYTHONHASHSEED=hashseed, PYTHONPATH=str(ROOT))
        proc = subprocess.run(
            [sys.executable, "-c", _DETERMINISM], capture_output=True, text=True, env=env, cwd=ROOT
        )
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads(proc.stdout))
    assert runs[0] == runs[1]
    assert len(runs[0]["pool"]) == 50 * 5
    changed = SyntheticSuite(SyntheticConfig(seed=4, pool_per_band=50, eval_per_band=20))
    assert [t.id for t in changed.train_pool()] != runs[0]["pool"]


def test_length_grows_with_band_and_fits_context():
    s = SyntheticSuite(SyntheticConfig(pool_per_band=200))
    compact = template("compact")
    means, longest = [], 0
    for band in s.bands:
        tasks = s.train_pool([band])
        means.append(np.mean([len(t.solution) for t in tasks]))
        longest = max(longest, max(len(render(compact, t.prompt) + t.solution) for t in tasks))
    assert all(b > a + 5 for a, b in zip(means, means[1:], strict=False)), means
    assert longest + 2 <= 192  # + BOS and EOS tokens, character-level


def test_sft_band_mix_follows_weights():
    cfg = SyntheticConfig(sft_band_weights=[1.0, 1.0, 1.0, 1.0, 0.2])
    s = SyntheticSuite(cfg)
    tasks = s.sft_tasks(20000, np.random.default_rng(0))
    freq = np.array([sum(t.band == b for t in tasks) for b in s.bands]) / len(tasks)
    want = np.array(cfg.sft_band_weights) / sum(cfg.sft_band_weights)
    np.testing.assert_allclose(freq, want, atol=0.015)
    rl = s.train_tasks(20000, np.random.default_rng(1))
    freq = np.array([sum(t.band == b for t in rl) for b in s.bands]) / len(rl)
    np.testing.assert_allclose(freq, np.full(5, 0.2), atol=0.015)


def test_config_errors():
    with pytest.raises(ValueError, match="SyntheticConfig.bands"):
        SyntheticSuite(SyntheticConfig(bands=["sub3"], sft_band_weights=[1.0]))
    with pytest.raises(ValueError, match="sft_band_weights"):
        SyntheticSuite(SyntheticConfig(bands=["add1", "add2"]))  # 5 default weights
    with pytest.raises(ValueError, match="eval_fraction"):
        SyntheticSuite(SyntheticConfig(eval_fraction=0.0))
