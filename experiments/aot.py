"""Compile a run's TPU programs ahead of time, on this machine, for a pod slice it does not have.

    python -m experiments.aot model=qwen2_5_7b mesh=tpu_v5p_64 +exp=math [key=value ...]
    python -m experiments.aot ... aot.programs='[RL update,decode]'   (a subset)

Same overrides as experiments.run. The mesh preset names the slice (`topology.*`); libtpu
(requirements-test.txt) compiles for it on the CPU. Per program: compile time, per-chip
memory from the compiler beside the planner's figure and the chip's HBM, FLOPs, collectives.
Exits 1, naming the program and the fix, when one does not fit; 0 otherwise.
"""

import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from k15_jax import plan
from k15_jax.aot import check, programs, topology
from k15_jax.config import model_config, register, validate
from k15_jax.plan.device import GIB
from k15_jax.plan.fit import Workload

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHORT = {
    "all-gather": "AG",
    "reduce-scatter": "RS",
    "all-reduce": "AR",
    "all-to-all": "A2A",
    "collective-permute": "CP",
}


def _gib(n: float) -> str:
    return f"{n / GIB:.2f}"


def table(rows: list[check.Row]) -> str:
    """The per-program table (markdown, so docs/pods.md can hold it as printed)."""
    head = (
        "| program | compile s | compiled GiB/chip | planned GiB/chip | plan vs compiled "
        "| resident GiB | HBM GiB | fits | TFLOP/chip (XLA, loop bodies once) "
        "| TFLOP/chip (planned) | collectives per step: count, GiB/chip |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        coll = ", ".join(
            f"{SHORT[k]} {v['count per step']} {_gib(v['bytes per step'])}"
            for k, v in r.collectives.items()
            if v["count"]
        )
        lines.append(
            f"| {r.program} | {r.compile_s:.1f} | {'' if r.collectives else '>= '}"
            f"{_gib(r.compiled)} | {_gib(r.planned)} "
            f"| {100 * r.error:+.0f}% | {_gib(r.resident)} | {r.hbm / GIB:.0f} "
            f"| {'yes' if r.fits else 'NO'} | {r.flops_compiler / 1e12:.2f} "
            f"| {r.flops_planned / 1e12:.2f} | {coll or '-'} |"
        )
    return "\n".join(lines)


def collective_note() -> str:
    kinds = ", ".join(f"{v} {k}" for k, v in SHORT.items())
    return (
        f"collectives: {kinds}; per step = instructions x the trip counts of the loops "
        "around them; bytes = the larger side of each, per chip (k15_jax/aot/hlo.py)"
    )


def main(overrides: list[str]) -> int:
    t0 = time.perf_counter()
    register()
    with initialize_config_dir(str(CONFIGS), version_base=None):
        cfg = compose("config", overrides=overrides)
    model = model_config(cfg.model)  # the shape of the model preset, whatever the data
    validate(cfg, model=model)
    if cfg.device.memory_gib is None or not cfg.topology.name:
        raise SystemExit(
            "experiments.aot needs a TPU mesh preset (it names the slice and the chip's HBM): "
            "mesh=tpu_v5p_64, tpu_v5p_256, tpu_v5e_16, tpu_v6e_16, tpu_v5p_8 or tpu_v5e_16x2. "
            "GPU presets cannot be compiled without a GPU (docs/pods.md)"
        )
    shape = plan.mesh_shape(cfg.mesh, topology.chips(cfg.topology))
    mesh = topology.mesh(cfg.topology, shape)
    names = tuple(cfg.aot.programs) if cfg.aot.programs else programs.PROGRAMS
    print(
        f"{cfg.topology.name} x {cfg.topology.slices} slice(s), {mesh.devices.size} chips "
        f"({mesh.devices.flat[0].device_kind}), mesh "
        + " ".join(f"{k}={v}" for k, v in shape.items())
        + f"; model {model.num_params / 1e9:.2f}B params, remat {model.remat}, "
        f"attention {model.attention_impl}",
        flush=True,
    )
    rows = check.run(cfg, model, mesh, names, progress=lambda s: print(s, flush=True))
    print(table(rows))
    print(collective_note())
    work, d = Workload.from_config(cfg), cfg.device
    proj = check.projection(rows, cfg, model, shape)
    parts = ", ".join(f"{k} {v:.2f} s" for k, v in proj.items() if v is not None)
    print(
        f"projected RL iteration ({work.batch_prompts} prompts x {work.samples} samples, "
        f"{work.prompt_len}+{work.new_tokens} tokens, {work.updates} updates; MFU "
        f"{cfg.aot.mfu:.0%} of {d.peak_tflops} TFLOP/s, HBM {d.hbm_gbps} GB/s, ICI "
        f"{d.ici_gbps} GB/s per chip): {parts}; total "
        f"{sum(v for v in proj.values() if v is not None):.1f} s"
    )
    print(f"total {time.perf_counter() - t0:.1f} s")
    bad = check.refusals(rows, cfg, model, shape)
    for line in bad:
        print(line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
