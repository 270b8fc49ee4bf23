"""The accelerator a run is planned for: memory, peak FLOP/s and memory bandwidth per device.

Set by the mesh presets (`configs/mesh/*.yaml`, e.g. `mesh=h100_8`) or on the command line
(`device.memory_gib=40`). Unset memory is asked of the runtime at startup.
"""

import dataclasses

GIB = 1 << 30
PLATFORMS = ("auto", "tpu", "gpu", "cpu")


@dataclasses.dataclass
class DeviceConfig:
    """Per-device figures of the accelerator (the `device` config group).

    name: a label for reports. platform: "tpu" | "gpu" | "cpu" | "auto" (the running backend);
      it decides what model.attention_impl="auto" runs (flash kernels on tpu/gpu, XLA on cpu).
    memory_gib: memory per device; where the runtime reports a limit
      (`memory_stats()["bytes_limit"]`, TPU and GPU) the smaller of the two counts. None:
      the runtime's alone, and no startup check where it cannot tell (CPU).
    peak_tflops: dense bf16 peak per device; hbm_gbps: memory bandwidth per device (GB/s);
      ici_gbps: inter-chip interconnect bandwidth per chip (GB/s, TPU). They only feed the
      rough time estimates.
    headroom: share of memory kept free for what the plan does not count (XLA workspace,
      fragmentation, the runtime itself): a phase fits if it needs <= (1 - headroom) * memory.
    check: refuse to start (before compiling) a run whose plan does not fit.
    """

    name: str = "auto"
    platform: str = "auto"
    memory_gib: float | None = None
    peak_tflops: float | None = None
    hbm_gbps: float | None = None
    ici_gbps: float | None = None
    headroom: float = 0.1
    check: bool = True


def resolve_platform(device: DeviceConfig) -> str:
    if device.platform not in PLATFORMS:
        raise ValueError(f"device.platform={device.platform!r}; choose one of {PLATFORMS}")
    if device.platform != "auto":
        return device.platform
    import jax

    return jax.default_backend() if jax.default_backend() in PLATFORMS else "gpu"


def runtime_memory_bytes() -> int | None:
    """Memory of the first local device as the runtime reports it (None on CPU)."""
    import jax

    stats = jax.local_devices()[0].memory_stats() or {}
    return stats.get("bytes_limit")


def memory_bytes(device: DeviceConfig, runtime: bool = True) -> int | None:
    """Bytes per device the run may use: the smaller of device.memory_gib and what the
    runtime gives JAX (on GPU, XLA_PYTHON_CLIENT_MEM_FRACTION of the card: 75% by default);
    None when neither is known (CPU without a preset). runtime=False: the stated figure
    alone, or the runtime's when none is stated (planning for another machine)."""
    stated = None
    if device.memory_gib is not None:
        if device.memory_gib <= 0:
            raise ValueError(f"device.memory_gib={device.memory_gib} must be > 0")
        stated = int(device.memory_gib * GIB)
    if stated is not None and not runtime:
        return stated
    have = runtime_memory_bytes()
    if stated is None or have is None:
        return stated if have is None else have
    return min(stated, have)
