"""Reward-model checkpoints: orbax params plus `rm.json` (kind, model config, input limits).

Layout: <rm_dir>/<kind>/{params/, rm.json}; `load` also accepts the kind's own directory.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from k15_jax.model.config import ModelConfig
from k15_jax.model.params import abstract_params
from k15_jax.rewards.rm_classic import head_specs

KINDS = ("classic_rm", "cot_rm")


def save(rm_dir, kind: str, params, model_cfg: ModelConfig, meta: dict) -> Path:
    out = Path(rm_dir).absolute() / kind
    out.mkdir(parents=True, exist_ok=True)
    if (out / "params").exists():
        import shutil

        shutil.rmtree(out / "params")
    with ocp.StandardCheckpointer() as ckpt:  # written under a temporary name, then renamed
        ckpt.save(out / "params", params)
    info = {"kind": kind, "model": dataclasses.asdict(model_cfg), **meta}
    (out / "rm.json").write_text(json.dumps(info, indent=2))
    return out


def locate(rm_dir, kind: str) -> Path:
    """The checkpoint directory of `kind` under rm_dir; a clear error when absent."""
    if kind not in KINDS:
        raise ValueError(f"reward.kind={kind!r} has no checkpoint; reward models: {KINDS}")
    hint = (
        "train one with `python -m experiments.run +exp=reward_models` and set "
        "reward.rm_dir=<its run dir>/rm"
    )
    if not rm_dir:
        raise ValueError(
            f"reward.kind={kind} needs reward.rm_dir (an RM checkpoint directory); " + hint
        )
    base = Path(rm_dir)
    for cand in (base / kind, base):
        meta = cand / "rm.json"
        if meta.is_file() and (cand / "params").is_dir():
            have = json.loads(meta.read_text()).get("kind")
            if have != kind:
                raise ValueError(
                    f"reward.rm_dir={rm_dir} holds a {have} checkpoint, but reward.kind={kind}"
                )
            return cand
    raise FileNotFoundError(
        f"reward.rm_dir={rm_dir}: no {kind} checkpoint ({base / kind}/rm.json and params/); " + hint
    )


def load(rm_dir, kind: str) -> tuple[dict, ModelConfig, dict]:
    """(params on the default device, model config, rm.json) of a saved reward model."""
    path = locate(rm_dir, kind)
    info = json.loads((path / "rm.json").read_text())
    kw = dict(info["model"])
    if kw.get("rope_scaling") is not None:
        kw["rope_scaling"] = tuple(kw["rope_scaling"])
    model_cfg = ModelConfig(**kw)
    target = abstract_params(model_cfg)
    if kind == "classic_rm":
        head = {
            k: jax.ShapeDtypeStruct(s.shape, "float32") for k, s in head_specs(model_cfg).items()
        }
        target = {"decoder": target, "head": head}
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), target)
    with ocp.StandardCheckpointer() as ckpt:
        params = ckpt.restore((path / "params").absolute(), target)
    return params, model_cfg, info
