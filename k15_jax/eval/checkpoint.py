"""Which policy to evaluate: a local HF checkpoint, one of our training runs, or a random model.

`checkpoint=PATH` may be
- a Hugging Face directory: config.json + *.safetensors + tokenizer.json (any local Llama
  or Qwen2 checkpoint, or a run's `final/hf` export);
- a training run directory (`runs/<name>-seed<seed>`): its `final/hf` when the run has
  finished, else the newest complete orbax checkpoint under `checkpoints/` with the model
  config from the run's `config.yaml` and the character tokenizer the run trains with;
- None: a random character-level model from the `model` config (smoke tests).

`fingerprint` identifies the weights by content (sha256 of the safetensors files, or of
the orbax params item's files), without loading them, so a resumed evaluation can check
that it continues with the same weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import jax
import numpy as np


@dataclasses.dataclass
class CheckpointSource:
    """kind: "hf" | "orbax" | "random". hf_dir: the HF folder; run_dir: the training run
    (when the path is one); step_dir: the orbax step folder (kind "orbax")."""

    kind: str
    path: str | None
    hf_dir: Path | None = None
    run_dir: Path | None = None
    step_dir: Path | None = None


def _is_hf(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


@contextlib.contextmanager
def _quiet_absl():
    # orbax warns about every read-only manager option through absl
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def latest_step_dir(checkpoints: Path) -> Path | None:
    """The newest complete orbax step folder (orbax renames a step into place when done)."""
    import orbax.checkpoint as ocp

    if not checkpoints.is_dir():
        return None
    with _quiet_absl():
        manager = ocp.CheckpointManager(
            checkpoints.absolute(),
            item_names=("params", "state"),
            options=ocp.CheckpointManagerOptions(read_only=True),
        )
        step = manager.latest_step()
        manager.close()
    return None if step is None else checkpoints / str(step)


def resolve_checkpoint(path: str | None, *, config_key: str = "checkpoint") -> CheckpointSource:
    """Finds what `path` holds (see module docstring); raises naming `config_key`."""
    if path is None:
        return CheckpointSource("random", None)
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(
            f"{config_key}={path}: no such directory; point it at a HF checkpoint folder "
            "(config.json, *.safetensors, tokenizer.json) or a training run folder"
        )
    if _is_hf(p):
        run = p.parents[1] if p.name == "hf" and p.parent.name == "final" else None
        return CheckpointSource("hf", str(p), hf_dir=p, run_dir=run)
    if _is_hf(p / "final" / "hf"):
        return CheckpointSource("hf", str(p), hf_dir=p / "final" / "hf", run_dir=p)
    step = latest_step_dir(p / "checkpoints")
    if step is not None:
        if not (p / "config.yaml").is_file():
            raise FileNotFoundError(
                f"{config_key}={path} has orbax checkpoints but no config.yaml (the run's "
                "model config); point it at the run folder that `experiments.run` wrote"
            )
        return CheckpointSource("orbax", str(p), run_dir=p, step_dir=step)
    raise FileNotFoundError(
        f"{config_key}={path} holds neither a HF checkpoint (config.json + *.safetensors), "
        "nor a run's final/hf, nor complete orbax checkpoints under checkpoints/; set "
        f"{config_key} to one of those"
    )


def _sha256_files(root: Path, files: list[Path]) -> dict:
    """{"sha256": digest over (relative name, file digest) pairs, "files": {name: digest}}."""
    per = {}
    for f in sorted(files):
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 24), b""):
                h.update(chunk)
        per[str(f.relative_to(root))] = h.hexdigest()
    total = hashlib.sha256(json.dumps(per, sort_keys=True).encode()).hexdigest()
    return {"sha256": total, "files": per}


def fingerprint(src: CheckpointSource, seed: int = 0) -> dict:
    """Content hash of the weights: HF: each *.safetensors file; orbax: every file of the
    step's params item; random: the seed (the model config is recorded beside it)."""
    if src.kind == "hf":
        return _sha256_files(src.hf_dir, list(src.hf_dir.glob("*.safetensors")))
    if src.kind == "orbax":
        item = src.step_dir / "params"
        out = _sha256_files(item, [f for f in item.rglob("*") if f.is_file()])
        return {**out, "step": int(src.step_dir.name)}
    return {"sha256": None, "random_init_seed": seed}


def run_config(run_dir: Path):
    """The OmegaConf config a training run recorded (config.yaml)."""
    from omegaconf import OmegaConf

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no config.yaml in run folder {run_dir}")
    return OmegaConf.load(path)


# ----------------------------------------------------------------------------- loading


def random_char_policy(model, seed: int):
    """(ModelConfig, params, CharTokenizer): a random character-level model."""
    from k15_jax.model.params import init_params
    from k15_jax.model.tokenizer import CharTokenizer

    tok = CharTokenizer()
    if model.vocab_size < tok.vocab_size:
        raise ValueError(
            f"model.vocab_size={model.vocab_size} < {tok.vocab_size} characters of the "
            f"char tokenizer; set model.vocab_size >= {tok.vocab_size}"
        )
    model = model.replace(bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
    return model, init_params(model, jax.random.key(seed)), tok


def load_hf_policy(
    model_path,
    tokenizer_path=None,
    *,
    path_key: str = "model_path",
    tokenizer_key: str = "tokenizer_path",
):
    """(ModelConfig, params, HFTokenizer) of a local HF checkpoint folder."""
    from k15_jax.model.hf import load_hf
    from k15_jax.model.tokenizer import HFTokenizer

    if not (Path(model_path) / "config.json").is_file():
        raise FileNotFoundError(
            f"no HF checkpoint (config.json) in {model_path}; set {path_key} to a folder "
            "such as runs/<name>-seed<seed>/final/hf"
        )
    tok_path = Path(tokenizer_path or model_path)
    tok_file = tok_path / "tokenizer.json" if tok_path.is_dir() else tok_path
    if not tok_file.is_file():
        raise FileNotFoundError(f"no tokenizer at {tok_file}; set {tokenizer_key}")
    model, params = load_hf(model_path)
    tok = HFTokenizer(tok_file)
    if tok.vocab_size > model.vocab_size:
        raise ValueError(
            f"tokenizer {tok_file} has {tok.vocab_size} tokens, the model {model.vocab_size}; "
            f"set {tokenizer_key} to the model's tokenizer"
        )
    return model, params, tok


def restore_orbax_params(step_dir: Path, model) -> dict:
    """The params of an orbax run checkpoint, on the default device.

    The "params" item holds {"params": params} (plus "opt_state" during SFT; older runs
    saved params alone); the whole item is restored from its own metadata, then the
    params are taken out and checked against `model`.
    """
    import orbax.checkpoint as ocp
    from jax.sharding import SingleDeviceSharding

    from k15_jax.model.params import check_params

    item = Path(step_dir).absolute() / "params"
    dev = SingleDeviceSharding(jax.devices()[0])
    with _quiet_absl(), ocp.StandardCheckpointer() as ckpt:
        meta = ckpt.metadata(item)
        tree = getattr(meta, "item_metadata", meta)
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=dev), tree)
        out = ckpt.restore(item, target)
    params = out["params"] if "params" in out else out
    check_params(params, model, source=str(item))
    return params


def load_run_policy(src: CheckpointSource):
    """(ModelConfig, params, CharTokenizer) of a run's newest orbax checkpoint."""
    from k15_jax.config import model_config
    from k15_jax.model.tokenizer import CharTokenizer

    tok = CharTokenizer()
    model = model_config(run_config(src.run_dir).model)
    model = model.replace(bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
    return model, restore_orbax_params(src.step_dir, model), tok


def eos_ids(model, tok, hf_dir: Path | None) -> tuple[int, ...]:
    """Stop tokens: the tokenizer's EOS, the model's, and generation_config.json's list
    (chat checkpoints end turns with a token other than the EOS, e.g. <|eot_id|>)."""
    ids = {x for x in (tok.eos_id, model.eos_token_id) if x is not None}
    ids |= set(getattr(tok, "stop_ids", ()))
    gen = None if hf_dir is None else Path(hf_dir) / "generation_config.json"
    if gen is not None and gen.is_file():
        e = json.loads(gen.read_text()).get("eos_token_id")
        ids |= set(e if isinstance(e, list) else [] if e is None else [e])
    if not ids:
        raise ValueError("the checkpoint names no EOS token (tokenizer_config.json, config.json)")
    return tuple(sorted(int(i) for i in ids))


def chat_wrapper(hf_dir: Path | None, tokenizer_path=None):
    """(wrap, bos): wrap(text) puts text in the tokenizer's chat template as one user turn
    with the assistant turn opened; bos False when the template writes BOS itself."""
    from k15_jax.model.tokenizer import HFTokenizer

    where = Path(tokenizer_path or hf_dir) if (tokenizer_path or hf_dir) else None
    if where is None:
        raise ValueError("chat=true needs a HF checkpoint with a chat template; set chat=false")
    tok = HFTokenizer(where)
    if not tok.chat_template:
        where = where.parent if where.is_file() else where
        raise ValueError(f"the tokenizer in {where} has no chat_template; set chat=false")

    def wrap(text: str) -> str:
        return tok.apply_chat_template([{"role": "user", "content": text}])

    bos = tok.special_tokens.get("bos_token")
    return wrap, not (bos and wrap("x").startswith(bos))


def param_count(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
