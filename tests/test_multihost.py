"""Multi-host runs on one machine: 2 CPU processes joined by jax.distributed (gloo
collectives) against one process with the same global batch.

Default run: the SFT warm-up of the main job (setup.build / loop.run_sft) in 2 processes,
a collective orbax checkpoint, a restore of params and optimizer state onto the global mesh
and the finish from it: the same params as uninterrupted, and as one process.
Slow: the whole main job (SFT, RL iterations with rollouts on the global mesh), stopped by
`trainer.stop_after_iterations` and resumed, against one process.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from k15_jax.distributed import DistributedConfig, join_args
from tests.loop_runs import ROOT, TINY, records


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(cmd: list[str], processes: int, devices: int = 1, timeout: int = 900) -> list[str]:
    """Runs `cmd` as `processes` processes of `devices` CPU devices each, joined through
    the JAX_* variables; returns their stdouts."""
    port = _free_port()
    procs = []
    for i in range(processes):
        env = dict(
            os.environ,
            JAX_PLATFORMS="cpu",
            PYTHONPATH=str(ROOT),
            XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        )
        for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
            env.pop(var, None)
        if processes > 1:
            env.update(
                JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                JAX_NUM_PROCESSES=str(processes),
                JAX_PROCESS_ID=str(i),
            )
        procs.append(
            subprocess.Popen(
                cmd, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        )
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            if p.returncode != 0:
                raise AssertionError(f"process failed (rc={p.returncode}):\n{err[-6000:]}")
            outs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return outs


# ---- joining: config and environment ----


def test_join_args_from_environment_and_config():
    env = {
        "JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234",
        "JAX_NUM_PROCESSES": "4",
        "JAX_PROCESS_ID": "3",
    }
    kw = join_args(DistributedConfig(), env)
    assert (kw["coordinator_address"], kw["num_processes"], kw["process_id"]) == (
        "10.0.0.1:1234",
        4,
        3,
    )
    # config fields win over the environment
    kw = join_args(DistributedConfig(process_id=1), env)
    assert kw["process_id"] == 1
    # nothing given: one process, no join; mode=off never joins
    assert join_args(DistributedConfig(), {}) is None
    assert join_args(DistributedConfig(mode="off"), env) is None
    # mode=on leaves the unset fields to JAX's cluster detection
    assert join_args(DistributedConfig(mode="on"), {}) == {"initialization_timeout": 300}


def test_join_args_names_what_is_missing_or_wrong():
    with pytest.raises(ValueError, match="JAX_PROCESS_ID"):
        join_args(DistributedConfig(), {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2"})
    with pytest.raises(ValueError, match="process_id=2 is not in"):
        join_args(DistributedConfig(coordinator_address="h:1", num_processes=2, process_id=2))
    with pytest.raises(ValueError, match="not an integer"):
        join_args(DistributedConfig(coordinator_address="h:1"), {"JAX_NUM_PROCESSES": "two"})
    with pytest.raises(ValueError, match="distributed.mode"):
        join_args(DistributedConfig(mode="maybe"), {})


# ---- SFT + checkpoint + restore across processes (default run) ----

SFT_WORKER = """
import json, sys
from hydra import compose, initialize_config_dir
from k15_jax import distributed
from k15_jax.config import register
register()
with initialize_config_dir("{root}/configs", version_base=None):
    cfg = compose("config", overrides={overrides!r})
distributed.initialize(cfg.distributed)
import jax, numpy as np
from k15_jax.model.params import abstract_params
from k15_jax.rl import samplers
from k15_jax.train import loop, setup, sft
from k15_jax.train.state import Checkpoints, RunState

s = setup.build(cfg)
writer = distributed.metrics_writer(s.run_dir)
ckpt = Checkpoints(s.run_dir / "checkpoints", keep=3)
state = RunState(sampler=samplers.init_state(len(s.pool)))
final = loop.run_sft(s, setup.initial_params(s), None, state, ckpt, writer)
# as a killed run would: restore the mid-SFT checkpoint (params + Adam state), finish
abstract = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                        abstract_params(s.model), s.train_shardings)
opt = distributed.shard_like_params(
    jax.eval_shape(sft.make_optimizer(cfg.sft).init, abstract), abstract, s.mesh)
tree, restored = ckpt.restore(lambda st: {{"params": abstract, "opt_state": opt}})
step = restored.sft_step
resumed = loop.run_sft(s, tree["params"], tree["opt_state"], restored, ckpt, writer)
ckpt.close()
a, b = distributed.to_host(final), distributed.to_host(resumed)
if distributed.is_main():
    leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(a)]
    print(json.dumps({{
        "processes": jax.process_count(), "devices": jax.device_count(),
        "restored_step": step,
        "resume_diff": max(float(np.abs(x - y).max()) for x, y in
                           zip(jax.tree.leaves(a), jax.tree.leaves(b))),
        "sums": [float(x.sum()) for x in leaves],
        "nll": [r["sft/nll"] for r in writer.records()],
    }}))
"""


def _sft_run(run_dir, processes: int) -> dict:
    overrides = [
        "+exp=curriculum",
        "sft.steps=4",
        "sft.checkpoint_every=2",
        "sft.rows=8",
        "model.num_layers=1",
        "model.hidden_size=64",
        "model.intermediate_size=128",
        f"trainer.run_dir={run_dir}",
    ]
    code = textwrap.dedent(SFT_WORKER.format(root=ROOT, overrides=overrides))
    outs = _launch([sys.executable, "-c", code], processes)
    return json.loads(outs[0].strip().splitlines()[-1])


def test_sft_checkpoint_restore_on_two_processes_matches_one(tmp_path):
    two = _sft_run(tmp_path / "two", processes=2)
    one = _sft_run(tmp_path / "one", processes=1)
    assert (two["processes"], two["devices"]) == (2, 2) and one["processes"] == 1
    assert two["restored_step"] == one["restored_step"] == 2
    # restored params and Adam moments continue exactly where the saved run was
    assert two["resume_diff"] == 0.0 and one["resume_diff"] == 0.0
    # rows split over 2 devices in 2 processes: the same steps up to float summation order
    np.testing.assert_allclose(two["nll"], one["nll"], rtol=1e-5)
    np.testing.assert_allclose(two["sums"], one["sums"], rtol=1e-4, atol=1e-4)
    # only process 0 wrote files; both processes held a lock
    assert (tmp_path / "two" / ".lock.1").exists()
    assert len((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()) == 2


# ---- the whole main job (slow) ----


@pytest.mark.slow
def test_main_job_two_processes_killed_and_resumed_matches_one_process(tmp_path):
    """SFT, then 2 RL iterations (rollouts on the global mesh), stopped after the first
    iteration's checkpoint and resumed, in 2 processes of 1 device; against one uninterrupted
    process of 2 devices (the same mesh, so the rollout scheduling statistics, which depend
    on the batch shards, match too)."""
    common = [
        *TINY,
        "sft.steps=10",
        "sft.checkpoint_every=5",
        "trainer.iterations=2",
        "trainer.eval_every=2",
        "trainer.eval_per_band=2",
        "reward.length_penalty_weight=1.0",
    ]
    run = lambda d, *extra: [
        sys.executable,
        "-m",
        "experiments.run",
        *common,
        f"trainer.run_dir={d}",
        *extra,
    ]
    _launch(run(tmp_path / "two", "trainer.stop_after_iterations=1"), processes=2)
    resumed = _launch(run(tmp_path / "two"), processes=2)
    assert resumed[0].strip().splitlines()[-1] == str(tmp_path / "two")
    _launch(run(tmp_path / "one"), processes=1, devices=2)
    one, two = records(tmp_path / "one"), records(tmp_path / "two")
    assert [r["phase"] for r in two] == [r["phase"] for r in one]
    assert [r["phase"] for r in one].count("rl") == 2
    for a, b in zip(one, two):
        assert set(a) == set(b)
        for k, v in a.items():
            if k.startswith("train/") and k.endswith(("loss", "grad_norm", "loss_last")):
                np.testing.assert_allclose(b[k], v, rtol=1e-3, atol=1e-6, err_msg=k)
            elif isinstance(v, float):  # rollouts, rewards, evals: the same samples
                np.testing.assert_allclose(b[k], v, rtol=1e-4, atol=1e-5, err_msg=k)
            else:
                assert b[k] == v, k
    assert (tmp_path / "two" / "final" / "hf" / "model.safetensors").exists()
    assert (tmp_path / "two" / "summary.json").exists()
