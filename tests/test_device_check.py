"""experiments/device_check.sh: fails fast with one line where there is no GPU; its merge
step keeps the parts that finished."""

import json
import os
import subprocess
import time

from experiments.device_check_merge import main as merge
from tests.conftest import ROOT

SCRIPT = ROOT / "experiments" / "device_check.sh"


def run_script(tmp_path, path_prefix: str):
    env = dict(os.environ, PATH=path_prefix + os.pathsep + os.environ["PATH"])
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "out.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    return proc, time.perf_counter() - t0


def test_fails_fast_with_one_line_without_a_gpu(tmp_path):
    # a stand-in nvidia-smi that finds no GPU, so the test means the same on a GPU machine
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'No devices were found'\nexit 9\n")
    (fake / "nvidia-smi").chmod(0o755)
    proc, seconds = run_script(tmp_path, str(fake))
    assert proc.returncode != 0 and seconds < 10
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no NVIDIA GPU" in lines[0], proc.stderr
    assert proc.stdout == "" and not (tmp_path / "out.json").exists()


def test_merge_keeps_finished_parts_and_marks_timeouts(tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    files = {
        "attention": (0, 'log line\n{"bench": "attention", "copy_bandwidth_gbs": 3.0}\n'),
        "rollout": (124, "compiling...\n"),
        "kernels": (0, "....\n===== 21 passed in 30.0s =====\n"),
    }
    for name, (rc, out) in files.items():
        status = {"rc": rc, "seconds": 5, "timed_out": rc == 124}
        (parts / f"{name}.status").write_text(json.dumps(status))
        (parts / f"{name}.out").write_text(out)
        (parts / f"{name}.err").write_text("stderr text")
    merge(str(parts), str(tmp_path / "dc.json"))
    doc = json.loads((tmp_path / "dc.json").read_text())
    p = doc["parts"]
    assert p["attention"]["result"]["copy_bandwidth_gbs"] == 3.0
    assert p["rollout"]["timed_out"] and p["rollout"]["result"] is None
    assert p["rollout"]["stderr_tail"] == "stderr text"
    assert p["kernels"]["summary"] == "21 passed in 30.0s"
