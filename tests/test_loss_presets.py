"""The GRPO, DAPO, GSPO and CISPO presets end to end: 2 RL iterations each on a tiny random
model (no SFT; a length penalty makes the groups mixed, so every update has a signal), with
partial rollouts and each algo.off_policy option in one of the four runs. ~25 s each."""

import json
import os
import subprocess
import sys

import pytest

from tests.loop_runs import ROOT

TINY_RANDOM = [
    "trainer.skip_sft=true",
    "trainer.iterations=2",
    "trainer.eval_every=2",
    "trainer.eval_per_band=1",
    "sampler.batch_prompts=2",
    "sampler.samples_per_prompt=4",
    "rollout.slots=8",
    "rollout.max_new_tokens=24",
    "reward.length_penalty_weight=1.0",
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.num_kv_heads=1",
    "model.head_dim=16",
]

RUNS = [  # (preset, off_policy, partial rollouts)
    ("grpo", "tis", True),
    ("dapo", "mask", True),
    ("gspo", "none", False),
    ("cispo", "exclude_old", True),
]


@pytest.mark.parametrize("preset,off_policy,partial", RUNS)
def test_preset_runs_two_iterations(tmp_path, preset, off_policy, partial):
    run_dir = tmp_path / preset
    cmd = [
        sys.executable,
        "-m",
        "experiments.run",
        f"+exp={preset}",
        *TINY_RANDOM,
        f"algo.off_policy={off_policy}",
        f"rollout.partial={str(partial).lower()}",
        "rollout.budget_tokens=12",
        f"trainer.run_dir={run_dir}",
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in records if r["phase"] == "rl"]
    assert [r["iteration"] for r in rl] == [0, 1]
    assert json.loads((run_dir / "summary.json").read_text())["experiment"] == preset
    updated = [r for r in rl if "train/loss" in r]
    assert updated, "no iteration reached the update"
    for r in updated:  # the clipped arms' own metrics reach the log
        assert {"train/clip_frac", "train/ratio_mean", "train/adv_abs_mean"} <= set(r)
    for r in rl:  # logged every iteration
        for key in ("weight_mean", "changed_frac", "old_frac"):
            assert f"offpolicy/{key}" in r
        assert {"rollout/logp_gap_mean", "rollout/logp_gap_max"} <= set(r)
        assert "rollout/logp_gap_age0_frac" in r
    if partial:  # the second iteration continues trajectories of the first
        assert rl[1]["rollout/spanning_frac"] > 0 and rl[1]["offpolicy/old_frac"] > 0
    if off_policy == "exclude_old" and partial:
        assert rl[1]["offpolicy/changed_frac"] == pytest.approx(rl[1]["offpolicy/old_frac"])
    if preset == "dapo":
        assert "reward/overlong_mean" in rl[0]
