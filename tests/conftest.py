"""Shared fixtures.

Fake multi-device tests run in a subprocess: XLA_FLAGS must be set before jax
initialises its backend, and the main pytest process already has one device.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import k15_jax  # noqa: F401 - its guard keeps JAX off libtpu (k15_jax/libtpu_guard.py)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def run_with_devices(code: str, n_devices: int = 8, timeout: int = 600) -> str:
    """Runs `code` in a fresh Python with `n_devices` fake CPU devices; returns stdout.

    Fails the calling test with the subprocess's stderr if it exits non-zero.
    """
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        pytest.fail(f"subprocess failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


@pytest.fixture
def fake_devices():
    """The `run_with_devices(code, n_devices=8)` helper as a fixture."""
    return run_with_devices


@pytest.fixture
def shared_data() -> Path:
    """../shared/data beside the checkout (real benchmark files, read-only)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(
            f"shared data not found at {SHARED_DATA}; tests expect the checkout beside shared/"
        )
    return SHARED_DATA
