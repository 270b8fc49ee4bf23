"""`python -m experiments.run +exp=long2short` end to end on tiny settings: the main job
hands its policy over, every method is built and evaluated, the plot, table and checkpoints
are written, and the merged checkpoint is the average of the long and short ones."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from k15_jax.model import load_hf
from tests.loop_runs import ROOT, TINY

QUICK = [
    "long2short.short.sft.steps=20",
    "long2short.shortest.prompts=16",
    "long2short.shortest.sft.steps=3",
    "long2short.dpo.prompts=16",
    "long2short.dpo.batch_prompts=4",
    "long2short.dpo.steps=3",
    "long2short.rl.iterations=1",
    "long2short.eval_per_band=4",
]
METHODS = ["long", "short", "merge", "merge_rs", "dpo", "rl"]


@pytest.mark.slow
def test_run_then_long2short(tmp_path):
    run_dir = tmp_path / "run"
    main_job = [x for x in TINY if not x.startswith("+exp=")]
    cmd = [
        sys.executable,
        "-m",
        "experiments.run",
        "+exp=long2short",
        *main_job,
        *QUICK,
        f"trainer.run_dir={run_dir}",
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert proc.stdout.strip().splitlines()[-1] == str(run_dir)
    out = run_dir / "long2short"
    results = json.loads((out / "results.json").read_text())
    assert list(results) == METHODS
    for r in results.values():
        assert set(r["accuracy"]) == {"add1", "add2", "add3", "add4"}
        assert all(0.0 <= a <= 1.0 for a in r["accuracy"].values())
        assert all(0.0 < n <= 80 for n in r["tokens"].values())
    assert results["rl"]["stats"]["max_new_tokens"] == 64
    assert results["rl"]["stats"]["reward"]["length_penalty_weight"] == 1.0
    assert (out / "long2short.png").stat().st_size > 1000
    table = (out / "long2short.md").read_text()
    for label in ("long-CoT", "merge", "merge + shortest RS", "DPO", "long2short RL"):
        assert f"| {label} |" in table
    # the long policy is the main job's final one; merge is the mean of long and short
    final = load_file(run_dir / "final" / "hf" / "model.safetensors")
    tensors = {m: load_file(out / m / "hf" / "model.safetensors") for m in METHODS}
    for name, x in final.items():
        np.testing.assert_array_equal(tensors["long"][name], x)
        a, b = tensors["long"][name].astype(np.float64), tensors["short"][name].astype(np.float64)
        np.testing.assert_allclose(
            tensors["merge"][name], (a + b) / 2, rtol=0, atol=2**-23 * (np.abs(a) + np.abs(b)).max()
        )
    assert not np.array_equal(tensors["short"]["model.norm.weight"], final["model.norm.weight"])
    for m in METHODS:
        load_hf(out / m / "hf")
