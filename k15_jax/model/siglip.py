"""Loading a SigLIP vision tower from a local Hugging Face checkpoint (safetensors).

Reads a `SiglipVisionModel` or `SiglipModel` directory (config.json + *.safetensors; any
name prefix before `embeddings.patch_embedding.weight`, e.g. `vision_model.` or
`vision_tower.vision_model.`) into params["vision"]["tower"] (model/vit.py). The attention
pooling head and the text tower are not used (the policy reads the patch features).

Layout changes: the stride-p conv [E, C, p, p] becomes a matmul over patches flattened in
(row, column, channel) order, [p*p*C, E]; nn.Linear [out, in] matrices are transposed and
split into heads.
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from k15_jax.model.config import VisionConfig
from k15_jax.model.hf import (
    QKV_HF_NAMES,
    SafetensorsDir,
    to_hf_layout,
)  # same layout moves as the decoder's

# our layer leaf -> (HF name within a layer, layout change)
_LAYER = {
    "ln1_scale": ("layer_norm1.weight", "copy"),
    "ln1_bias": ("layer_norm1.bias", "copy"),
    **QKV_HF_NAMES,
    "wo": ("self_attn.out_proj.weight", "out_heads"),
    "bo": ("self_attn.out_proj.bias", "copy"),
    "ln2_scale": ("layer_norm2.weight", "copy"),
    "ln2_bias": ("layer_norm2.bias", "copy"),
    "fc1": ("mlp.fc1.weight", "transpose"),
    "fc1_bias": ("mlp.fc1.bias", "copy"),
    "fc2": ("mlp.fc2.weight", "transpose"),
    "fc2_bias": ("mlp.fc2.bias", "copy"),
}


def read_siglip_config(path, **overrides) -> VisionConfig:
    """VisionConfig from a SigLIP config.json (its `vision_config` for a full SiglipModel)."""
    file = Path(path) / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"no config.json in {path}; set trainer.init_vision_from_hf")
    hf = json.loads(file.read_text())
    hf = hf.get("vision_config", hf)
    act = hf.get("hidden_act", "gelu_pytorch_tanh")
    if act != "gelu_pytorch_tanh":
        raise ValueError(f"{file}: hidden_act={act!r}; the ViT implements gelu_pytorch_tanh")
    fields = dict(
        image_size=hf["image_size"],
        patch_size=hf["patch_size"],
        num_channels=hf.get("num_channels", 3),
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        layer_norm_eps=hf.get("layer_norm_eps", 1e-6),
    )
    return VisionConfig(**{**fields, **overrides})


def _prefix(names) -> str:
    for n in names:
        if n.endswith("embeddings.patch_embedding.weight"):
            return n[: -len("embeddings.patch_embedding.weight")]
    raise ValueError("no `embeddings.patch_embedding.weight` tensor: not a SigLIP vision tower")


def _convert(x: np.ndarray, how: str, v: VisionConfig) -> np.ndarray:
    H, K = v.num_heads, v.hidden_size // v.num_heads
    if how == "copy":
        return x
    if how == "transpose":
        return x.T
    if how == "in_heads":  # [H*K, E] -> [E, H, K]
        return x.T.reshape(-1, H, K)
    if how == "out_heads":  # [E, H*K] -> [H, K, E]
        return x.T.reshape(H, K, -1)
    if how == "bias_heads":
        return x.reshape(H, K)
    raise ValueError(how)


def load_siglip(path, vision: VisionConfig | None = None) -> tuple[VisionConfig, dict]:
    """(VisionConfig, tower params) from a local SigLIP checkpoint.

    vision: the run's config; its architecture fields must match the checkpoint's (the
    error names the key), its other fields (image_token_id, max_images) are kept.
    """
    path = Path(path)
    ckpt_cfg = read_siglip_config(path)
    if vision is not None:
        for key in (
            "image_size",
            "patch_size",
            "num_channels",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
        ):
            if getattr(vision, key) != getattr(ckpt_cfg, key):
                raise ValueError(
                    f"vision.{key}={getattr(vision, key)} but the checkpoint {path} has "
                    f"{getattr(ckpt_cfg, key)}; set vision.{key}={getattr(ckpt_cfg, key)}"
                )
        v = vision.replace(layer_norm_eps=ckpt_cfg.layer_norm_eps)
    else:
        v = ckpt_cfg
    st = SafetensorsDir(path)
    pre = _prefix(st.entries)
    read = lambda name: np.asarray(st.read(pre + name), np.float32)
    conv = read("embeddings.patch_embedding.weight")  # [E, C, p, p]
    tower = {
        "patch_embed": conv.transpose(2, 3, 1, 0).reshape(-1, conv.shape[0]),
        "patch_bias": read("embeddings.patch_embedding.bias"),
        "pos_embed": read("embeddings.position_embedding.weight"),
        "post_norm_scale": read("post_layernorm.weight"),
        "post_norm_bias": read("post_layernorm.bias"),
        "layers": {
            key: np.stack(
                [_convert(read(f"encoder.layers.{i}.{name}"), how, v) for i in range(v.num_layers)]
            )
            for key, (name, how) in _LAYER.items()
        },
    }
    if tower["pos_embed"].shape[0] != v.num_patches:
        raise ValueError(
            f"{path}: {tower['pos_embed'].shape[0]} position embeddings for "
            f"{v.num_patches} patches; check image_size and patch_size"
        )
    return v, jax.tree.map(jnp.asarray, tower)


def export_siglip(vision: dict, v: VisionConfig, path) -> None:
    """Writes params["vision"] as a transformers `SiglipVisionModel` directory (config.json,
    model.safetensors) plus the projector (projector.safetensors, our layout), so a trained
    tower loads with `load_siglip` or `SiglipVisionModel.from_pretrained`."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tower = jax.tree.map(lambda x: np.asarray(jax.device_get(x), np.float32), vision["tower"])
    E, C, p = v.hidden_size, v.num_channels, v.patch_size
    pre = "vision_model."
    out = {
        pre + "embeddings.patch_embedding.weight": tower["patch_embed"]
        .reshape(p, p, C, E)
        .transpose(3, 2, 0, 1),
        pre + "embeddings.patch_embedding.bias": tower["patch_bias"],
        pre + "embeddings.position_embedding.weight": tower["pos_embed"],
        pre + "post_layernorm.weight": tower["post_norm_scale"],
        pre + "post_layernorm.bias": tower["post_norm_bias"],
    }
    for key, (name, how) in _LAYER.items():
        for i in range(v.num_layers):
            out[f"{pre}encoder.layers.{i}.{name}"] = to_hf_layout(tower["layers"][key][i], how)
    save_file(
        {k: np.ascontiguousarray(x) for k, x in out.items()},
        path / "model.safetensors",
        metadata={"format": "pt"},
    )
    proj = {
        f"projector.{k}": np.asarray(jax.device_get(x), np.float32)
        for k, x in vision["projector"].items()
    }
    save_file(proj, path / "projector.safetensors")
    config = {
        "architectures": ["SiglipVisionModel"],
        "model_type": "siglip_vision_model",
        "hidden_size": E,
        "intermediate_size": v.intermediate_size,
        "num_hidden_layers": v.num_layers,
        "num_attention_heads": v.num_heads,
        "num_channels": C,
        "image_size": v.image_size,
        "patch_size": p,
        "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": v.layer_norm_eps,
        "vision_use_head": False,
        "torch_dtype": "float32",
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))
