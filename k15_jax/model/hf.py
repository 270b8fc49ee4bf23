"""Hugging Face checkpoint interop for LlamaForCausalLM and Qwen2ForCausalLM.

`load_hf` reads config.json and single or sharded *.safetensors (lazily, through a memory
map) and places every tensor directly with its sharding: each device's callback reads only
the layers of its own shard. `export_hf` writes the same format back.
"""

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from k15_jax.model.config import SUPPORTED_ARCHITECTURES, ModelConfig
from k15_jax.model.params import ParamSpec, check_params, param_specs

_ST_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "U8": np.uint8,
    "BOOL": np.bool_,
}

# HF's attention projections, named alike in the decoders and in SigLIP's tower
QKV_HF_NAMES = {
    "wq": ("self_attn.q_proj.weight", "in_heads"),
    "wk": ("self_attn.k_proj.weight", "in_heads"),
    "wv": ("self_attn.v_proj.weight", "in_heads"),
    "bq": ("self_attn.q_proj.bias", "bias_heads"),
    "bk": ("self_attn.k_proj.bias", "bias_heads"),
    "bv": ("self_attn.v_proj.bias", "bias_heads"),
}
# params leaf -> (HF name within a layer, how the HF matrix maps to ours)
_LAYER_NAMES = {
    "attn_norm": ("input_layernorm.weight", "copy"),
    **QKV_HF_NAMES,
    "wo": ("self_attn.o_proj.weight", "out_heads"),
    "mlp_norm": ("post_attention_layernorm.weight", "copy"),
    "w_gate": ("mlp.gate_proj.weight", "transpose"),
    "w_up": ("mlp.up_proj.weight", "transpose"),
    "w_down": ("mlp.down_proj.weight", "transpose"),
}
_TOP_NAMES = {
    "embed": ("model.embed_tokens.weight", "copy"),
    "final_norm": ("model.norm.weight", "copy"),
    "lm_head": ("lm_head.weight", "transpose"),
}


def _to_ours(x: np.ndarray, how: str, shape: tuple[int, ...]) -> np.ndarray:
    """HF layout -> ours. `shape` is our per-layer shape."""
    if how == "copy":
        return x
    if how == "transpose":
        return x.T
    if how == "in_heads":  # [n*Dh, D] -> [D, n, Dh]
        return x.T.reshape(shape)
    if how == "out_heads":  # [D, H*Dh] -> [H, Dh, D]
        return x.T.reshape(shape)
    if how == "bias_heads":  # [n*Dh] -> [n, Dh]
        return x.reshape(shape)
    raise ValueError(how)


def to_hf_layout(x: np.ndarray, how: str) -> np.ndarray:
    if how == "copy":
        return x
    if how == "transpose":
        return x.T
    if how == "in_heads":  # [D, n, Dh] -> [n*Dh, D]
        return x.reshape(x.shape[0], -1).T
    if how == "out_heads":  # [H, Dh, D] -> [D, H*Dh]
        return x.reshape(-1, x.shape[-1]).T
    if how == "bias_heads":
        return x.reshape(-1)
    raise ValueError(how)


def _hf_shape(our_shape: tuple[int, ...], how: str) -> tuple[int, ...]:
    return to_hf_layout(np.empty(our_shape, np.uint8), how).shape


class SafetensorsDir:
    """Lazy, memory-mapped access to the tensors of a checkpoint directory."""

    def __init__(self, path: Path):
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors files in {path}")
        self.entries: dict[str, tuple[Path, dict, int]] = {}
        for f in files:
            with open(f, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                header = json.loads(fh.read(n))
            header.pop("__metadata__", None)
            for name, meta in header.items():
                self.entries[name] = (f, meta, 8 + n)
        self._maps: dict[Path, np.memmap] = {}

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.entries[name][1]["shape"])

    def read(self, name: str) -> np.ndarray:
        f, meta, base = self.entries[name]
        if f not in self._maps:
            self._maps[f] = np.memmap(f, dtype=np.uint8, mode="r")
        begin, end = meta["data_offsets"]
        dtype = _ST_DTYPES[meta["dtype"]]
        raw = self._maps[f][base + begin : base + end]
        return raw.view(dtype).reshape(meta["shape"])


def config_from_hf(hf: dict, **overrides) -> ModelConfig:
    """ModelConfig from a Hugging Face config.json dict."""
    arch = (hf.get("architectures") or ["?"])[0]
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"architecture {arch!r} in config.json is not supported; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    for key in ("mlp_bias", "use_sliding_window"):
        if hf.get(key):
            raise ValueError(f"config.json sets {key}=true, which k15_jax does not implement")
    rope = dict(hf.get("rope_parameters") or {})
    scaling = hf.get("rope_scaling") or (rope if rope.get("rope_type") == "llama3" else None)
    rope_type = (scaling or {}).get("rope_type", (scaling or {}).get("type"))
    if scaling and rope_type not in ("llama3", "default", None):
        raise ValueError(f"rope scaling type {rope_type!r} is not supported (only 'llama3')")
    rope_scaling = None
    if scaling and rope_type == "llama3":
        rope_scaling = (
            float(scaling["factor"]),
            float(scaling["low_freq_factor"]),
            float(scaling["high_freq_factor"]),
            int(scaling["original_max_position_embeddings"]),
        )
    heads = hf["num_attention_heads"]
    kw = dict(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
        rope_theta=float(hf.get("rope_theta", rope.get("rope_theta", 10000.0))),
        rope_scaling=rope_scaling,
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        qkv_bias=arch == "Qwen2ForCausalLM" or bool(hf.get("attention_bias", False)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        max_position_embeddings=hf.get("max_position_embeddings", 2048),
        architecture=arch,
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=_first(hf.get("eos_token_id")),
    )
    kw.update(overrides)
    return ModelConfig(**kw)


def _first(x):
    return x[0] if isinstance(x, list) and x else x


def read_hf_config(path, **overrides) -> ModelConfig:
    """The ModelConfig of a local HF checkpoint directory (reads config.json only)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} has no config.json; point trainer.init_from_hf at a HF checkpoint directory"
        )
    return config_from_hf(json.loads((path / "config.json").read_text()), **overrides)


def load_hf(path, *, shardings=None, **config_overrides) -> tuple[ModelConfig, dict]:
    """Loads a local HF checkpoint directory -> (config, params).

    shardings: optional pytree of NamedSharding (see `k15_jax.sharding.param_shardings`);
    each tensor is then assembled per device shard, never whole on one device.
    Fails naming the tensor on a missing, extra or mis-shaped tensor.
    """
    path = Path(path)
    cfg = read_hf_config(path, **config_overrides)
    st = SafetensorsDir(path)
    specs = param_specs(cfg)
    dtype = jnp.dtype(cfg.param_dtype)
    used = set()

    def hf_name(key: str, layer: int | None) -> tuple[str, str]:
        if layer is None:
            name, how = _TOP_NAMES[key]
            if key == "embed" and name not in st.entries and cfg.tie_embeddings:
                name = "lm_head.weight"
            return name, how
        name, how = _LAYER_NAMES[key]
        return f"model.layers.{layer}.{name}", how

    def check(name: str, want: tuple[int, ...]):
        if name not in st.entries:
            raise ValueError(f"checkpoint {path}: missing tensor {name} (expected {want})")
        if st.shape(name) != want:
            raise ValueError(
                f"checkpoint {path}: tensor {name} has shape {st.shape(name)}, expected {want}"
            )
        used.add(name)

    def load_leaf(key: str, spec: ParamSpec, stacked: bool, sharding):
        per_layer = spec.shape[1:] if stacked else spec.shape
        layers = range(spec.shape[0]) if stacked else [None]
        for layer in layers:
            name, how = hf_name(key, layer)
            check(name, _hf_shape(per_layer, how))

        def read(layer):
            name, how = hf_name(key, layer)
            return _to_ours(st.read(name), how, per_layer)

        def callback(index):
            if not stacked:
                return np.asarray(read(None)[index], dtype)
            sel = range(spec.shape[0])[index[0]]
            return np.stack([np.asarray(read(i)[index[1:]], dtype) for i in sel])

        if sharding is None:
            return jnp.asarray(callback((slice(None),) * len(spec.shape)))
        return jax.make_array_from_callback(spec.shape, sharding, callback)

    def build(tree, shard_tree, stacked):
        return {
            k: build(v, None if shard_tree is None else shard_tree[k], True)
            if isinstance(v, dict)
            else load_leaf(k, v, stacked, None if shard_tree is None else shard_tree[k])
            for k, v in tree.items()
        }

    params = build(specs, shardings, False)
    tied_head = {"lm_head.weight"} if cfg.tie_embeddings else set()
    extra = sorted(set(st.entries) - used - tied_head)
    extra = [e for e in extra if not e.endswith("rotary_emb.inv_freq")]
    if extra:
        raise ValueError(f"checkpoint {path}: unexpected tensors {extra[:5]} ({len(extra)})")
    return cfg, params


def hf_config_dict(cfg: ModelConfig) -> dict:
    """A config.json for transformers from our config."""
    model_type = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}[cfg.architecture]
    out = {
        "architectures": [cfg.architecture],
        "model_type": model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "rope_theta": cfg.rope_theta,
        "rms_norm_eps": cfg.rms_norm_eps,
        "tie_word_embeddings": cfg.tie_embeddings,
        "max_position_embeddings": cfg.max_position_embeddings,
        "hidden_act": "silu",
        "torch_dtype": cfg.param_dtype,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
    }
    rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling is not None:
        f, lo, hi, orig = cfg.rope_scaling
        scaling = {
            "rope_type": "llama3",
            "factor": f,
            "low_freq_factor": lo,
            "high_freq_factor": hi,
            "original_max_position_embeddings": orig,
        }
        out["rope_scaling"] = scaling
        rope.update(scaling)
    out["rope_parameters"] = rope
    if cfg.architecture == "LlamaForCausalLM":
        out["attention_bias"] = cfg.qkv_bias
    elif not cfg.qkv_bias:
        raise ValueError("Qwen2ForCausalLM always has q/k/v biases; set model.qkv_bias=true")
    return out


def export_hf(params: dict, cfg: ModelConfig, path, *, max_shard_bytes: int = 2 << 30) -> None:
    """Writes config.json and *.safetensors (sharded with an index above max_shard_bytes)."""
    from safetensors.flax import save_file  # the numpy writer cannot store bfloat16

    check_params(params, cfg)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    for key, (name, how) in _TOP_NAMES.items():
        if key in params:
            tensors[name] = to_hf_layout(np.asarray(jax.device_get(params[key])), how)
    for key, (name, how) in _LAYER_NAMES.items():
        if key in params["layers"]:
            stacked = np.asarray(jax.device_get(params["layers"][key]))
            for i in range(cfg.num_layers):
                tensors[f"model.layers.{i}.{name}"] = to_hf_layout(stacked[i], how)
    cpu = jax.devices("cpu")[0]
    tensors = {k: jnp.asarray(np.ascontiguousarray(v), device=cpu) for k, v in tensors.items()}
    shards, current, size = [], {}, 0
    for name, t in tensors.items():
        if current and size + t.nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = t
        size += t.nbytes
    shards.append(current)
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(path / "model.safetensors"), metadata=meta)
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(path / fname), metadata=meta)
            weight_map.update({name: fname for name in shard})
        total = sum(t.nbytes for t in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (path / "config.json").write_text(json.dumps(hf_config_dict(cfg), indent=2))


def num_bytes(params) -> int:
    return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(params))
