"""Short runs of the main job for tests: the real command line in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# about 1 minute on 2 cores: a few SFT steps, 3 RL iterations on a reduced batch
TINY = [
    "+exp=curriculum",
    "sft.steps=30",
    "sft.checkpoint_every=10",
    "trainer.iterations=3",
    "trainer.eval_every=3",
    "trainer.checkpoint_every=1",
    "trainer.eval_per_band=6",
    "sampler.batch_prompts=4",
    "sampler.samples_per_prompt=4",
    "sampler.warmup_iterations=1",
    "rollout.slots=16",
    "rollout.max_new_tokens=80",  # the long-CoT default (176) costs time and tests nothing more
    "rollout.repeat_window=80",
]


def run_main(
    run_dir,
    *overrides,
    devices: int = 1,
    timeout: int = 900,
    check: bool = True,
    popen: bool = False,
):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    cmd = [sys.executable, "-m", "experiments.run", *TINY, f"trainer.run_dir={run_dir}", *overrides]
    if popen:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def has_record(metrics, **want) -> bool:
    """Whether metrics.jsonl holds a record with these fields (e.g. phase="rl",
    iteration=1); robust to the keys a record gains (records are sorted by key)."""
    import json

    if not metrics.exists():
        return False
    for line in metrics.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:  # a line being written
            continue
        if all(r.get(k) == v for k, v in want.items()):
            return True
    return False


# metrics that depend on the machine's speed, left out when runs are compared
VOLATILE = ("time/", "rollout/time_s", "rollout/tokens_per_s")


def records(run_dir) -> list[dict]:
    """metrics.jsonl of a run without the timing fields (what two runs must share)."""
    import json

    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        out.append({k: v for k, v in r.items() if not k.startswith(VOLATILE)})
    return out
