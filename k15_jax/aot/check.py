"""Compile every program for the slice, read what the compiler says, hold the plan against it.

Per program: compile time, per-chip bytes from `memory_analysis()` (arguments + outputs -
aliased + temporaries) beside the planner's figure for the same program
(`plan.programs.planned`), what stays resident beside it, the chip's HBM, the FLOPs of
`cost_analysis()` (per chip; XLA counts a while loop's body once, so scanned layers count
once: the planner's analytic FLOPs are printed beside them) and the collectives
(`hlo.collectives`). A program fits when compiled + resident <= HBM.
"""

import dataclasses
import math
import re
import time

import jax

from k15_jax.aot import hlo, programs
from k15_jax.plan import flops, memory
from k15_jax.plan.device import GIB
from k15_jax.plan.fit import Workload
from k15_jax.plan.programs import planned


@dataclasses.dataclass
class Row:
    program: str
    compile_s: float
    compiled: int  # bytes per chip
    planned: int
    resident: int
    hbm: int
    flops_compiler: float  # per chip, loop bodies once
    flops_planned: float  # per chip, whole program
    collectives: dict

    @property
    def fits(self) -> bool:
        return self.compiled + self.resident <= self.hbm

    @property
    def error(self) -> float:
        """(planned - compiled) / compiled."""
        return (self.planned - self.compiled) / max(self.compiled, 1)


def _exhausted_bytes(message: str) -> int | None:
    """The temporaries XLA says a program needs when it refuses it for the HBM (a lower
    bound of its total), or None for any other error."""
    m = re.search(
        r"RESOURCE_EXHAUSTED: .*?required for HLO temporaries \(([\d.]+)([KMGT])\)", message
    )
    if m is None:
        return None
    return int(float(m.group(1)) * 1024 ** "KMGT".index(m.group(2)) * 1024)


def _argument_bytes(args) -> int:
    """Per-chip bytes of a program's (sharded, abstract) arguments."""
    return sum(
        math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(args)
    )


def compiled_bytes(compiled) -> int:
    m = compiled.memory_analysis()
    return (
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        - m.alias_size_in_bytes
        + m.temp_size_in_bytes
    )


def planned_flops(work: Workload, model, devices: int) -> dict:
    """Analytic FLOPs per chip of one call of each program (XLA attention: all T x T)."""
    T = work.prompt_len + work.new_tokens
    rl = work.rl_flops(model, "xla")
    decode = work.steps_per_sync * work.slots * flops.forward_per_token(model, T)
    prefill = work.slots * work.prompt_len * flops.forward_per_token(model, work.prompt_len)
    out = {
        "SFT step": flops.sft_step(model, work.sft_rows, work.sft_len, "xla"),
        "RL update": rl["update"],
        "prefill": prefill,
        "decode": decode,
        "hand-over": 0.0,
    }
    return {k: v / devices for k, v in out.items()}


def run(cfg, model, mesh, names=programs.PROGRAMS, progress=print) -> list[Row]:
    """Compiles the programs one by one (a progress line each) and returns their rows."""
    work = Workload.from_config(cfg)
    shape = dict(mesh.shape)
    plan = planned(work, model, shape, "tpu")
    fl = planned_flops(work, model, math.prod(shape.values()))
    hbm = int(cfg.device.memory_gib * GIB)
    rows = []
    for prog in programs.build(cfg, model, mesh, names):
        progress(f"compiling {prog.name} ...")
        t0 = time.perf_counter()
        try:
            compiled = prog.compile()
        except Exception as e:  # XLA refuses a program whose temporaries exceed the HBM
            need = _exhausted_bytes(str(e))
            if need is None:
                raise RuntimeError(f"{prog.name}: the TPU compiler refused it: {e}") from e
            need += _argument_bytes(prog.args)  # a lower bound: outputs not counted
            compiled = None
        seconds = time.perf_counter() - t0
        cost = {} if compiled is None else compiled.cost_analysis() or {}
        cost = cost[0] if isinstance(cost, list) else cost
        row = Row(
            prog.name,
            seconds,
            need if compiled is None else compiled_bytes(compiled),
            plan[prog.name]["total"],
            plan[prog.name]["resident"],
            hbm,
            float(cost.get("flops", 0.0)),
            fl[prog.name],
            {} if compiled is None else hlo.collectives(compiled.as_text()),
        )
        progress(
            f"  {prog.name}: compiled in {seconds:.1f} s, {row.compiled / GIB:.2f} GiB per chip "
            f"(planned {row.planned / GIB:.2f} GiB, {100 * row.error:+.0f}%)"
        )
        rows.append(row)
    return rows


def fixes(program: str, cfg, model, shape: dict) -> list[str]:
    """Config changes that shrink `program`, most direct first."""
    work = Workload.from_config(cfg)
    out = []
    if program in ("SFT step", "RL update"):
        if model.remat != "full":
            out.append("model.remat=full (keep only each layer's input)")
        key, m, rows = {
            "SFT step": ("sft.microbatches", work.sft_microbatches, work.sft_rows),
            "RL update": ("algo.microbatches", work.microbatches, work.sequences),
        }[program]
        k = _fitting_microbatches(program, work, model, shape, int(cfg.device.memory_gib * GIB))
        if k is not None:
            out.append(f"{key}={k} (fewer rows per pass; the smallest the plan fits)")
        tp = _tensor_split(model, shape)
        if program == "RL update" and tp > 1:
            out.append(
                f"mesh.fsdp={shape['fsdp'] // tp} mesh.tensor={shape['tensor'] * tp} (XLA "
                "attention in the update runs on the rows of all fsdp chips; tensor "
                "parallelism splits its heads instead)"
            )
        out.append(
            f"more fsdp: a larger slice with mesh.fsdp={2 * shape['fsdp']}, or "
            f"mesh.data=1 mesh.fsdp={shape['data'] * shape['fsdp']} (params and Adam state "
            "split over more chips)"
        )
    else:
        shards = memory.batch_shards(shape)
        if program != "hand-over" and work.slots // 2 >= shards:
            out.append(f"a smaller KV budget: rollout.slots={work.slots // 2 // shards * shards}")
            out.append(f"rollout.max_new_tokens={work.new_tokens // 2} (a shorter cache)")
        tp = _tensor_split(model, shape)
        if tp > 1:
            out.append(
                f"mesh.fsdp={shape['fsdp'] // tp} mesh.tensor={shape['tensor'] * tp} (the "
                "engine keeps whole weights per tensor shard: tensor parallelism splits them)"
            )
    return out


def _fitting_microbatches(program: str, work: Workload, model, shape: dict, hbm: int):
    """The fewest micro-batches (doubling) under which the plan of `program` fits."""
    field, rows = {
        "SFT step": ("sft_microbatches", work.sft_rows),
        "RL update": ("microbatches", work.sequences),
    }[program]
    per_chip = memory.rows_per_device(rows, shape)
    k = 2 * getattr(work, field)
    while k <= per_chip and per_chip % k == 0 and rows % k == 0:
        p = planned(dataclasses.replace(work, **{field: k}), model, shape, "tpu")[program]
        if p["total"] + p["resident"] <= hbm:
            return k
        k *= 2
    return None


def _tensor_split(model, shape: dict) -> int:
    """The largest factor k (a power of 2) by which fsdp can turn into tensor parallelism:
    k divides mesh.fsdp, and tensor * k divides the kv heads."""
    k = 1
    while shape["fsdp"] % (2 * k) == 0 and model.num_kv_heads % (2 * k * shape["tensor"]) == 0:
        k *= 2
    return k


def refusals(rows: list[Row], cfg, model, shape: dict) -> list[str]:
    """One message per program that does not fit, naming it and what to change."""
    out = []
    for r in rows:
        if r.fits:
            continue
        out.append(
            f"{r.program} does not fit: {r.compiled / GIB:.2f} GiB per chip compiled + "
            f"{r.resident / GIB:.2f} GiB resident > {r.hbm / GIB:.0f} GiB HBM; try "
            + "; or ".join(fixes(r.program, cfg, model, shape))
        )
    return out


def projection(rows: list[Row], cfg, model, shape: dict) -> dict:
    """Seconds of one RL iteration on paper: FLOPs at aot.mfu of the chip's peak, decoding
    bound by the larger of that and reading the engine's weights and KV cache per step,
    collectives at the ICI bandwidth (not overlapped: an upper bound of their share)."""
    work = Workload.from_config(cfg)
    d, chips = cfg.device, math.prod(shape.values())
    rate = chips * d.peak_tflops * 1e12 * cfg.aot.mfu
    rl = work.rl_flops(model, "xla")
    ro = work.rollout_memory(model, shape, work.prompt_len, "tpu")
    steps = flops.decode_steps(work.sequences, work.new_tokens, work.slots)
    per_step = work.slots * flops.forward_per_token(model, work.prompt_len + work.new_tokens / 2)
    read = ro["engine params"] + ro["KV cache"] / 2  # the cache is half full on average
    decode = steps * max(per_step / rate, read / (d.hbm_gbps * 1e9))
    by_name = {r.program: r for r in rows}

    def comm(name):
        r = by_name.get(name)
        if r is None or not r.collectives or not d.ici_gbps:
            return None
        return sum(v["bytes per step"] for v in r.collectives.values()) / (d.ici_gbps * 1e9)

    return {
        "rollout": decode,
        "reference log-probs": rl["reference"] / rate,
        "update": rl["update"] / rate,
        "update collectives": comm("RL update"),
        "hand-over": comm("hand-over"),
    }
