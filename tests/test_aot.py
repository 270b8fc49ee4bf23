"""Pod-slice programs compiled here (libtpu on the CPU) and the planner held against them.

The reference is the TPU compiler's own `memory_analysis()` of the programs the loop runs,
for a 2-layer slice of the Qwen2.5-7B shape on a v5p-8 (v5p:2x2x1, 4 chips); the planner
(k15_jax/plan) must come within 15% of it per program. Each compile runs in a subprocess
(`python -m experiments.aot`), so libtpu never enters the test process.
"""

import os
import re
import subprocess
import sys

import pytest

from k15_jax.config import model_config
from tests.conftest import ROOT

# a 2-layer Qwen2.5-7B (full width, vocab 152064) on 4 v5p chips, short rows: small programs
SMALL = [
    "model=qwen2_5_7b",
    "mesh=tpu_v5p_8",
    "+exp=math",
    "model.num_layers=2",
    "trainer.skip_sft=true",
    "sampler.batch_prompts=2",
    "sampler.samples_per_prompt=4",
    "rollout.slots=8",
    "algo.microbatches=2",
    "rollout.max_prompt_len=32",
    "rollout.max_new_tokens=96",
]


def aot(*overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    return subprocess.run(
        [sys.executable, "-m", "experiments.aot", *overrides],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=900,
    )


def rows(stdout: str) -> dict:
    """The printed table: {program: {column: cell}}."""
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return {
        cells[0]: dict(zip(head, cells))
        for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])
    }


def test_update_decode_handover_compile_and_the_plan_holds():
    proc = aot(*SMALL, "aot.programs=[RL update,decode,hand-over]")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = rows(proc.stdout)
    assert set(table) == {"RL update", "decode", "hand-over"}
    for name, row in table.items():
        compiled = float(row["compiled GiB/chip"])
        planned = float(row["planned GiB/chip"])
        assert compiled > 0, name
        assert abs(planned - compiled) <= 0.15 * compiled, (name, planned, compiled)
    # the hand-over gathers every weight whole onto each chip (ROLLOUT_RULES, tensor=1):
    # its all-gathers write the whole model, counted from the config's shapes
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "configs"), version_base=None):
        from k15_jax.config import register

        register()
        cfg = compose("config", overrides=SMALL)
    gib = model_config(cfg.model).num_params * 2 / 2**30  # bf16
    gathered = re.search(
        r"AG \d+ ([\d.]+)", table["hand-over"]["collectives per step: count, GiB/chip"]
    )
    assert gathered, table["hand-over"]
    assert float(gathered.group(1)) == pytest.approx(gib, abs=0.01)


def test_a_program_that_does_not_fit_is_refused_by_name():
    # the same decode on a chip of 2 GiB: the engine's whole weights alone take 2.9 GiB
    proc = aot(*SMALL, "aot.programs=[decode]", "device.memory_gib=2")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "decode does not fit" in proc.stdout
    assert "mesh.tensor=" in proc.stdout or "rollout.slots=" in proc.stdout


def _libtpu_mapped(code: str) -> bool:
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    probe = code + "\njax.devices()\nprint(any('libtpu' in l for l in open('/proc/self/maps')))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1] == "True"


def test_plain_runs_do_not_load_libtpu():
    import importlib.util

    if importlib.util.find_spec("libtpu") is None:
        pytest.fail("libtpu is not installed; install requirements-test.txt (jax[tpu])")
    from k15_jax.libtpu_guard import tpu_attached

    if tpu_attached():
        pytest.skip("a TPU is attached: JAX should load libtpu here")
    assert _libtpu_mapped("import jax")  # what JAX does alone with libtpu importable
    assert not _libtpu_mapped("import k15_jax, jax")


# A hand-written HLO module: an all-gather outside any loop, and inside a while loop of 6
# trips (its condition compares with 6) an all-reduce-start/-done pair and a reduce-scatter.
HLO = """
%cond (p: (s32[], f32[8])) -> pred[] {
  %i = s32[] get-tuple-element(%p), index=0
  %c = s32[] constant(6)
  ROOT %lt = pred[] compare(%i, %c), direction=LT
}

%body (p: (s32[], f32[8])) -> (s32[], f32[8]) {
  %ars = f32[1024,256]{1,0} all-reduce-start(f32[1024,256]{1,0} %x), replica_groups={}
  %ard = f32[1024,256]{1,0} all-reduce-done(%ars)
  %rs = bf16[128,64]{1,0} reduce-scatter(bf16[512,64]{1,0} %y), dimensions={0}
  ROOT %t = (s32[], f32[8]) tuple(%i, %v)
}

ENTRY %main (a: bf16[16,1024]) -> f32[8] {
  %ag = bf16[64,1024]{1,0} all-gather(bf16[16,1024]{1,0} %a), dimensions={0}
  %w = (s32[], f32[8]) while(%init), condition=%cond, body=%body
  ROOT %r = f32[8] get-tuple-element(%w), index=1
}
"""


def test_collectives_are_counted_per_step_with_their_loops():
    from k15_jax.aot.hlo import collectives

    c = collectives(HLO)
    assert c["all-gather"] == {
        "count": 1,
        "bytes": 64 * 1024 * 2,
        "count per step": 1,
        "bytes per step": 64 * 1024 * 2,
    }
    assert c["all-reduce"]["count"] == 1  # the -start, not the -done
    assert c["all-reduce"]["count per step"] == 6
    assert c["all-reduce"]["bytes per step"] == 6 * 1024 * 256 * 4
    assert c["reduce-scatter"]["bytes per step"] == 6 * 512 * 64 * 2  # the unscattered side
    assert c["all-to-all"]["count"] == 0
