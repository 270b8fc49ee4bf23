"""Parameter declarations: every tensor's shape and logical axes, declared once.

Params are a plain nested dict. Layer weights are stacked on a leading "layers" axis so the
forward pass scans over them. Logical axis names are mapped to mesh axes by
`k15_jax.sharding`.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp

from k15_jax.model.config import ModelConfig, VisionConfig


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    shape: tuple[int, ...]
    axes: tuple[str | None, ...]
    init: str  # "normal" (fan-in scaled), "ones" or "zeros"
    fan_in: int = 1


def param_specs(cfg: ModelConfig) -> dict:
    """The params pytree structure as ParamSpec leaves."""
    L, D, F, V = cfg.num_layers, cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    H, G, Dh = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    layers = {
        "attn_norm": ParamSpec((L, D), ("layers", "embed"), "ones"),
        "wq": ParamSpec((L, D, H, Dh), ("layers", "embed", "q_heads", "head_dim"), "normal", D),
        "wk": ParamSpec((L, D, G, Dh), ("layers", "embed", "kv_heads", "head_dim"), "normal", D),
        "wv": ParamSpec((L, D, G, Dh), ("layers", "embed", "kv_heads", "head_dim"), "normal", D),
        "wo": ParamSpec(
            (L, H, Dh, D), ("layers", "q_heads", "head_dim", "embed"), "normal", H * Dh
        ),
        "mlp_norm": ParamSpec((L, D), ("layers", "embed"), "ones"),
        "w_gate": ParamSpec((L, D, F), ("layers", "embed", "mlp"), "normal", D),
        "w_up": ParamSpec((L, D, F), ("layers", "embed", "mlp"), "normal", D),
        "w_down": ParamSpec((L, F, D), ("layers", "mlp", "embed"), "normal", F),
    }
    if cfg.qkv_bias:
        layers["bq"] = ParamSpec((L, H, Dh), ("layers", "q_heads", "head_dim"), "zeros")
        layers["bk"] = ParamSpec((L, G, Dh), ("layers", "kv_heads", "head_dim"), "zeros")
        layers["bv"] = ParamSpec((L, G, Dh), ("layers", "kv_heads", "head_dim"), "zeros")
    specs = {
        "embed": ParamSpec((V, D), ("vocab", "embed"), "normal", D),
        "layers": layers,
        "final_norm": ParamSpec((D,), ("embed",), "ones"),
    }
    if not cfg.tie_embeddings:
        specs["lm_head"] = ParamSpec((D, V), ("embed", "vocab"), "normal", D)
    if cfg.vision is not None:  # the image encoder and projector (model/vit.py)
        specs["vision"] = vision_param_specs(cfg.vision, D)
    return specs


def vision_param_specs(v: VisionConfig, model_dim: int) -> dict:
    """params["vision"]: {"tower": SigLIP vision tower, "projector": 2-layer MLP to D}.

    Letters as in model/vit.py: L ViT layers, E width, F MLP dim, H heads, K head dim,
    C patch dim, P patches per image, D decoder width.
    """
    L, E, F, H = v.num_layers, v.hidden_size, v.intermediate_size, v.num_heads
    K, C, P, D = E // H, v.patch_dim, v.num_patches, model_dim
    vec = lambda init: ParamSpec((L, E), ("layers", "vit_embed"), init)
    layers = {
        "ln1_scale": vec("ones"),
        "ln1_bias": vec("zeros"),
        "wq": ParamSpec(
            (L, E, H, K), ("layers", "vit_embed", "vit_heads", "head_dim"), "normal", E
        ),
        "wk": ParamSpec(
            (L, E, H, K), ("layers", "vit_embed", "vit_heads", "head_dim"), "normal", E
        ),
        "wv": ParamSpec(
            (L, E, H, K), ("layers", "vit_embed", "vit_heads", "head_dim"), "normal", E
        ),
        "bq": ParamSpec((L, H, K), ("layers", "vit_heads", "head_dim"), "zeros"),
        "bk": ParamSpec((L, H, K), ("layers", "vit_heads", "head_dim"), "zeros"),
        "bv": ParamSpec((L, H, K), ("layers", "vit_heads", "head_dim"), "zeros"),
        "wo": ParamSpec(
            (L, H, K, E), ("layers", "vit_heads", "head_dim", "vit_embed"), "normal", E
        ),
        "bo": vec("zeros"),
        "ln2_scale": vec("ones"),
        "ln2_bias": vec("zeros"),
        "fc1": ParamSpec((L, E, F), ("layers", "vit_embed", "vit_mlp"), "normal", E),
        "fc1_bias": ParamSpec((L, F), ("layers", "vit_mlp"), "zeros"),
        "fc2": ParamSpec((L, F, E), ("layers", "vit_mlp", "vit_embed"), "normal", F),
        "fc2_bias": vec("zeros"),
    }
    tower = {
        "patch_embed": ParamSpec((C, E), ("vit_patch", "vit_embed"), "normal", C),
        "patch_bias": ParamSpec((E,), ("vit_embed",), "zeros"),
        "pos_embed": ParamSpec((P, E), ("vit_positions", "vit_embed"), "normal", E),
        "layers": layers,
        "post_norm_scale": ParamSpec((E,), ("vit_embed",), "ones"),
        "post_norm_bias": ParamSpec((E,), ("vit_embed",), "zeros"),
    }
    projector = {
        "w1": ParamSpec((E, D), ("vit_embed", "embed"), "normal", E),
        "b1": ParamSpec((D,), ("embed",), "zeros"),
        "w2": ParamSpec((D, D), ("embed", "embed"), "normal", D),
        "b2": ParamSpec((D,), ("embed",), "zeros"),
    }
    return {"tower": tower, "projector": projector}


def _is_spec(x) -> bool:
    return isinstance(x, ParamSpec)


def logical_axes(cfg: ModelConfig) -> dict:
    """Pytree of logical-axis tuples, same structure as params."""
    return jax.tree.map(lambda s: s.axes, param_specs(cfg), is_leaf=_is_spec)


def abstract_params(cfg: ModelConfig) -> dict:
    """Pytree of jax.ShapeDtypeStruct (no memory), same structure as params."""
    dtype = jnp.dtype(cfg.param_dtype)
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, dtype), param_specs(cfg), is_leaf=_is_spec
    )


def init_params(cfg: ModelConfig, key: jax.Array, shardings=None) -> dict:
    """Random params: normal(0, 1/sqrt(fan_in)) matrices, unit norms, zero biases.

    With `shardings` (a pytree of NamedSharding, see `k15_jax.sharding.param_shardings`)
    each tensor is created directly in its sharded layout.
    """
    specs = param_specs(cfg)
    leaves, treedef = jax.tree.flatten(specs, is_leaf=_is_spec)
    keys = jax.random.split(key, len(leaves))
    dtype = jnp.dtype(cfg.param_dtype)

    def make(spec, k):
        if spec.init == "ones":
            return jnp.ones(spec.shape, dtype)
        if spec.init == "zeros":
            return jnp.zeros(spec.shape, dtype)
        std = 1.0 / math.sqrt(spec.fan_in)
        return (std * jax.random.normal(k, spec.shape, jnp.float32)).astype(dtype)

    def init_all(keys):
        return treedef.unflatten([make(s, k) for s, k in zip(leaves, keys)])

    if shardings is None:
        return jax.jit(init_all)(keys)
    return jax.jit(init_all, out_shardings=shardings)(keys)


def check_params(params: dict, cfg: ModelConfig, source: str = "params") -> None:
    """Fails naming the tensor when params do not match the config's declared shapes."""
    want = jax.tree_util.tree_flatten_with_path(abstract_params(cfg))[0]
    have = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    want_d = dict(want)
    for path, spec in want:
        name = jax.tree_util.keystr(path)
        if path not in have:
            raise ValueError(f"{source}: missing tensor {name} (expected shape {spec.shape})")
        if tuple(have[path].shape) != tuple(spec.shape):
            raise ValueError(
                f"{source}: tensor {name} has shape {tuple(have[path].shape)}, "
                f"expected {spec.shape}"
            )
    extra = [jax.tree_util.keystr(p) for p in have if p not in want_d]
    if extra:
        raise ValueError(f"{source}: unexpected tensors {extra}")
