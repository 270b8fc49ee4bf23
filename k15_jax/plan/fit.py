"""Does a run fit? The plan of every phase, what to change when one does not, the report.

A run alternates phases on the same devices (report sec. 2.6.3, hybrid colocation):
  SFT step    the warm-up's training step
  RL update   the M policy updates of an iteration; the rollout engine keeps its copy of the
              params meanwhile
  rollout     decoding: both copies of the params, KV cache, prefill buffer
A run fits when the largest phase fits in (1 - device.headroom) x device memory.
"""

import dataclasses
import math

from k15_jax.model.config import ModelConfig
from k15_jax.plan import flops, memory
from k15_jax.plan.device import GIB, DeviceConfig, memory_bytes, resolve_platform


class DoesNotFit(ValueError):
    """A configuration whose plan exceeds device memory (the message says what to change)."""


@dataclasses.dataclass(frozen=True)
class Workload:
    """The sizes of a run that decide its memory (flattened from the run config).

    An RL update trains on batch_prompts x samples sequences of max_prompt_len +
    max_new_tokens tokens (with partial rollouts, buffered groups can add more; plan those
    with a larger sampler.batch_prompts).
    """

    sft_rows: int
    sft_len: int
    sft_microbatches: int
    skip_sft: bool
    batch_prompts: int
    samples: int
    prompt_len: int
    new_tokens: int
    microbatches: int
    updates: int
    slots: int
    steps_per_sync: int
    window: int
    partial: bool

    @property
    def sequences(self) -> int:
        return self.batch_prompts * self.samples

    def rl_flops(self, model: ModelConfig, attention: str) -> dict:
        """`flops.rl_iteration` of this workload (rollout, reference pass, M updates)."""
        return flops.rl_iteration(
            model,
            sequences=self.sequences,
            prompt_len=self.prompt_len,
            new_tokens=self.new_tokens,
            updates=self.updates,
            microbatches=self.microbatches,
            attention=attention,
        )

    def rollout_memory(self, model: ModelConfig, shape: dict, prefill_len: int, platform: str):
        """`memory.rollout` per device for this workload's engine (cache of T tokens)."""
        return memory.rollout(
            model,
            shape,
            slots=self.slots,
            cache_len=self.prompt_len + self.new_tokens,
            steps_per_sync=self.steps_per_sync,
            window=self.window,
            prefill_len=prefill_len,
            platform=platform,
        )

    @classmethod
    def from_config(cls, cfg) -> "Workload":
        r = cfg.rollout
        return cls(
            sft_rows=cfg.sft.rows,
            sft_len=cfg.sft.row_len,
            sft_microbatches=cfg.sft.microbatches,
            skip_sft=bool(cfg.trainer.skip_sft),
            batch_prompts=cfg.sampler.batch_prompts,
            samples=cfg.sampler.samples_per_prompt,
            prompt_len=r.max_prompt_len,
            new_tokens=r.max_new_tokens,
            microbatches=cfg.algo.microbatches,
            updates=cfg.algo.updates_per_iteration,
            slots=r.slots,
            steps_per_sync=r.steps_per_sync,
            window=r.repeat_window if r.stop_on_repeat else 1,
            partial=bool(r.partial),
        )


def mesh_shape(mesh_cfg, n_devices: int) -> dict:
    """The mesh's axis sizes, one -1 axis taking the devices the others leave (as
    `sharding.make_mesh`, without devices)."""
    sizes = {a: int(getattr(mesh_cfg, a)) for a in ("data", "fsdp", "tensor", "sequence")}
    fixed = math.prod(s for s in sizes.values() if s != -1)
    for a, s in sizes.items():
        if s == -1:
            sizes[a] = max(1, n_devices // fixed)
    return sizes


def plan(work: Workload, model: ModelConfig, shape: dict, device: DeviceConfig) -> dict:
    """Per-device bytes of every phase, FLOPs and rough times. Pure."""
    platform = resolve_platform(device)
    attention = memory.attention_path(model, platform)
    T = work.prompt_len + work.new_tokens
    devices = math.prod(shape.values())
    phases = {}
    if not work.skip_sft:
        phases["SFT step"] = memory.train_step(
            model,
            shape,
            work.sft_rows,
            work.sft_len,
            microbatches=work.sft_microbatches,
            platform=platform,
        )
    prefill = T if work.partial else work.prompt_len
    rollout = work.rollout_memory(model, shape, prefill, platform)
    update = memory.train_step(
        model,
        shape,
        work.sequences,
        T,
        microbatches=work.microbatches,
        platform=platform,
        kind="rl",
        updates=work.updates,
    )
    update["engine params (kept)"] = rollout["engine params"]
    update["peak"] += rollout["engine params"]
    phases["RL update"] = update
    phases["rollout"] = rollout
    rl = work.rl_flops(model, attention)
    steps = flops.decode_steps(work.sequences, work.new_tokens, work.slots)
    decode_time = flops.decode_seconds(
        flops_per_step=work.slots * flops.forward_per_token(model, T),
        bytes_per_step=rollout["engine params"] + rollout["KV cache"],
        steps=steps,
        devices=devices,
        peak_tflops=device.peak_tflops,
        hbm_gbps=device.hbm_gbps,
    )
    sft_flops = flops.sft_step(model, work.sft_rows, work.sft_len, attention)
    train = {k: rl[k] for k in ("reference", "update")}
    return {
        "model": model,
        "work": work,
        "shape": shape,
        "device": device,
        "devices": devices,
        "phases": phases,
        "flops": {"SFT step": sft_flops, **{f"RL {k}": v for k, v in rl.items()}},
        "seconds": {
            "SFT step": flops.seconds(sft_flops, devices, device.peak_tflops),
            "RL rollout": decode_time,
            **{f"RL {k}": flops.seconds(v, devices, device.peak_tflops) for k, v in train.items()},
        },
    }


def usable_bytes(device: DeviceConfig, total: int) -> int:
    if not 0 <= device.headroom < 1:
        raise ValueError(f"device.headroom={device.headroom} must be in [0, 1)")
    return int(total * (1 - device.headroom))


def _fits(p: dict, phase: str, usable: int) -> bool:
    return p["phases"][phase]["peak"] <= usable


def _meshes(model: ModelConfig, shape: dict) -> list[tuple[list[str], dict]]:
    """The mesh as is, with fsdp turned into tensor parallelism (which splits what fsdp
    cannot: the engine's weights and the KV heads), and with data turned into fsdp."""
    out = [([], shape)]
    tp = 2
    while shape["fsdp"] % tp == 0 and model.num_kv_heads % (tp * shape["tensor"]) == 0:
        s = {**shape, "fsdp": shape["fsdp"] // tp, "tensor": shape["tensor"] * tp}
        out.append(([f"mesh.fsdp={s['fsdp']}", f"mesh.tensor={s['tensor']}"], s))
        tp *= 2
    if shape["data"] > 1:  # params and optimizer state are split over fsdp only
        s = {**shape, "fsdp": shape["fsdp"] * shape["data"], "data": 1}
        out.append((["mesh.data=1", f"mesh.fsdp={s['fsdp']}"], s))
    return out


def _variants(p: dict):
    """(changes, model, shape) to try: the mesh variants x attention x remat policies."""
    model, device = p["model"], p["device"]
    impls = [model.attention_impl]
    if memory.attention_path(model, resolve_platform(device)) == "xla" and device.platform != "cpu":
        impls.append("pallas")  # flash attention: no [H, T, T] scores
    for mesh_change, shape in _meshes(model, p["shape"]):
        for i in impls:
            for r in dict.fromkeys([model.remat, "dots", "full"]):
                change = [f"model.attention_impl={i}"] * (i != model.attention_impl)
                change += [f"model.remat={r}"] * (r != model.remat)
                yield mesh_change + change, model.replace(attention_impl=i, remat=r), shape


def _first_fix(p: dict, phase: str, usable: int, model: ModelConfig, shape: dict):
    """The smallest workload change under which `phase` fits with this model and mesh."""
    for change, w in _workloads(p, phase, shape):
        if _fits(plan(w, model, shape, p["device"]), phase, usable):
            return change
    return None


def remedies(p: dict, usable: int, limit: int = 3) -> list[str]:
    """Config changes under which every phase fits, each checked by re-planning; fewest
    first. Micro-batches and slots only touch their own phase, so each phase's smallest
    change is found on its own and the changes are combined."""
    found = []
    for change, model, shape in _variants(p):
        fixes = [_first_fix(p, phase, usable, model, shape) for phase in p["phases"]]
        if all(f is not None for f in fixes):
            found.append(" ".join(change + [c for f in fixes for c in f]))
    found = sorted(dict.fromkeys(c for c in found if c), key=lambda c: c.count("="))
    return found[:limit]


def _workloads(p: dict, phase: str, shape: dict):
    """Workload changes to try for `phase`, smallest first: micro-batches for the training
    steps; slots and response length for the rollout."""
    work = p["work"]
    yield [], work
    if phase in ("SFT step", "RL update"):
        key, field, rows = {
            "SFT step": ("sft.microbatches", "sft_microbatches", work.sft_rows),
            "RL update": ("algo.microbatches", "microbatches", work.sequences),
        }[phase]
        per_device = memory.rows_per_device(rows, shape)
        k = 2 * getattr(work, field)
        while k <= per_device:
            if rows % k == 0 and per_device % k == 0:
                yield [f"{key}={k}"], dataclasses.replace(work, **{field: k})
            k *= 2
        return
    shards = memory.batch_shards(shape)
    slots = work.slots // 2 // shards * shards
    while slots >= shards:
        yield [f"rollout.slots={slots}"], dataclasses.replace(work, slots=slots)
        slots = slots // 2 // shards * shards
    for new in (work.new_tokens // 2, work.new_tokens // 4):
        if new >= 1:
            yield [f"rollout.max_new_tokens={new}"], dataclasses.replace(work, new_tokens=new)


def problems(p: dict, total: int) -> list[str]:
    """One message per phase that does not fit in `total` bytes per device, then (if any)
    the config changes under which all phases fit."""
    usable = usable_bytes(p["device"], total)
    out = []
    for phase, m in p["phases"].items():
        if m["peak"] <= usable:
            continue
        parts = ", ".join(
            f"{k} {_gib(v)}"
            for k, v in m.items()
            if isinstance(v, int) and k not in ("peak", "inputs", "beyond inputs", "kv per slot")
        )
        out.append(
            f"{phase} needs {_gib(m['peak'])} per device, more than the {_gib(usable)} usable "
            f"of {_gib(total)} (device.headroom={p['device'].headroom}): {parts}."
        )
    if out:
        fixes = remedies(p, usable)
        out.append(
            "All phases fit with: " + "; or ".join(fixes)
            if fixes
            else "No change of micro-batches, remat, attention, slots, response length or mesh "
            "layout makes it fit: use more devices (a larger mesh.fsdp) or a smaller model."
        )
    return out


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def report(p: dict, total: int | None) -> str:
    """A human-readable plan: per-phase bytes per device, FLOPs, times, verdict."""
    d, m, w = p["device"], p["model"], p["work"]
    shape = " ".join(f"{k}={v}" for k, v in p["shape"].items())
    mem = f"{_gib(total)}" if total else "memory unknown (set device.memory_gib)"
    lines = [
        f"device {d.name}: {p['devices']} x ({mem}, peak {d.peak_tflops or '?'} TFLOP/s, "
        f"{d.hbm_gbps or '?'} GB/s); mesh {shape}",
        f"model {m.num_params / 1e6:,.1f}M params, param_dtype {m.param_dtype}, dtype {m.dtype}, "
        f"remat {m.remat}, attention {m.attention_impl}",
        f"RL: {w.sequences} sequences x {w.prompt_len + w.new_tokens} tokens, "
        f"{w.updates} updates, {w.microbatches} micro-batch(es); rollout slots {w.slots}",
    ]
    for phase, parts in p["phases"].items():
        lines.append(f"{phase} (per device)")
        for k, v in parts.items():
            if isinstance(v, int) and k not in ("peak", "inputs", "beyond inputs", "kv per slot"):
                lines.append(f"  {k:34s} {_gib(v):>12s}")
        lines.append(f"  {'peak':34s} {_gib(parts['peak']):>12s}")
    for k, v in p["flops"].items():
        t = p["seconds"].get(k)
        time = f"  ~{t:.3g} s at peak" if t is not None else ""
        lines.append(f"FLOPs {k:18s} {v:10.3e}{time}")
    if total is None:
        lines.append("verdict: unknown (no device memory; pick a preset, e.g. mesh=h100_8)")
    else:
        bad = problems(p, total)
        peak = max(x["peak"] for x in p["phases"].values())
        usable = usable_bytes(d, total)
        lines.append(
            f"verdict: fits (peak {_gib(peak)} of {_gib(usable)} usable)"
            if not bad
            else "verdict: does NOT fit\n  " + "\n  ".join(bad)
        )
    return "\n".join(lines)


def plan_config(cfg, model: ModelConfig, shape: dict) -> dict:
    """`plan` of a run config (Hydra node or dataclass) on a mesh of the given shape."""
    return plan(Workload.from_config(cfg), model, shape, cfg.device)


def refuse_unfit(cfg, model: ModelConfig, mesh) -> dict | None:
    """The startup check: raises DoesNotFit (before anything compiles) when a phase does not
    fit; returns the plan, or None when the check is off or the memory is unknown."""
    from k15_jax.train.metrics import log

    device = cfg.device
    if not device.check:
        return None
    total = memory_bytes(device)
    if total is None:
        log.info("memory plan skipped: device memory unknown (set device.memory_gib)")
        return None
    p = plan_config(cfg, model, dict(mesh.shape))
    bad = problems(p, total)
    if bad:
        raise DoesNotFit(
            "this configuration does not fit in device memory (python -m experiments.plan "
            "shows the plan; device.check=false skips this check):\n" + "\n".join(bad)
        )
    peak = max(x["peak"] for x in p["phases"].values())
    log.info("memory plan: peak %s of %s per device", _gib(peak), _gib(total))
    return p
