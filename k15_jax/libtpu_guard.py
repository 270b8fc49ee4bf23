"""Keeps JAX off libtpu on machines with no TPU, so plain CPU runs stay as they are.

libtpu is in the test requirements: with it the TPU compiler runs on a CPU machine and
`k15_jax.aot` compiles pod programs here. But JAX probes every installed backend when it
starts, and an importable libtpu means loading it (hundreds of MB, a TPU-metadata lookup,
error lines on stderr) in every run. `keep_libtpu_unloaded` (called when k15_jax is
imported) restricts JAX to the CPU where libtpu is importable, no TPU chip is attached,
no GPU plugin is installed and the user named no platforms (JAX_PLATFORMS / jax_platforms:
setting either is how to ask for anything else). `k15_jax.aot` loads libtpu on request,
which this does not prevent.
"""

import glob
import importlib.util
import os

GPU_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin")


def tpu_attached() -> bool:
    """TPU chips on this host (their device files: /dev/accel* on v4/v5p, vfio on v5e/v6e)."""
    return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def keep_libtpu_unloaded() -> bool:
    """Sets jax_platforms to "cpu" when libtpu would otherwise be loaded for nothing;
    returns whether it did."""
    if os.environ.get("JAX_PLATFORMS") or importlib.util.find_spec("libtpu") is None:
        return False
    if tpu_attached() or any(importlib.util.find_spec(p) for p in GPU_PLUGINS):
        return False
    import jax

    if jax.config.jax_platforms:
        return False
    jax.config.update("jax_platforms", "cpu")
    return True
