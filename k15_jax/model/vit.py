"""The image encoder: a SigLIP-style ViT and the projector into the decoder's embedding space.

Letters: N images, P patches per image, C patch dim (patch_size^2 * channels, pixels in
(row, column, channel) order), E ViT width, H heads, K head dim (E / H), F ViT MLP dim,
D decoder width, L ViT layers (stacked and scanned like the decoder's).

    x = patches @ patch_embed + patch_bias + pos_embed          (SigLIP's stride-p conv)
    per layer: x += attn(LN1(x));  x += fc2(gelu_tanh(fc1(LN2(x))))   (pre-norm, no mask)
    features = LN_post(x);  projected = w2 @ gelu(w1 @ features)      [N, P, D]

Learned position embeddings, one per patch (SigLIP's, so a pretrained tower loads as is).
The parameters are declared with the decoder's in `params.vision_param_specs`.
"""

import jax
import jax.numpy as jnp

from k15_jax.model.config import VisionConfig


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + eps) * scale.astype(jnp.float32)
    return (y + bias.astype(jnp.float32)).astype(x.dtype)


def _vit_block(v: VisionConfig, x: jax.Array, layer: dict) -> jax.Array:
    """One pre-norm encoder layer. x: [N, P, E]."""
    h = layer_norm(x, layer["ln1_scale"], layer["ln1_bias"], v.layer_norm_eps)
    q = jnp.einsum("npe,ehk->nphk", h, layer["wq"].astype(h.dtype)) + layer["bq"].astype(h.dtype)
    k = jnp.einsum("npe,ehk->nphk", h, layer["wk"].astype(h.dtype)) + layer["bk"].astype(h.dtype)
    w = jnp.einsum("npe,ehk->nphk", h, layer["wv"].astype(h.dtype)) + layer["bv"].astype(h.dtype)
    # Unmasked bidirectional attention, kept apart from the decoder's masked reference
    # (kernels/reference.py): same values, but not the same ops, and the tower's numerics
    # are those checked against transformers' SigLIP.
    scale = q.shape[-1] ** -0.5
    scores = jnp.einsum("nqhk,nshk->nhqs", q, k, preferred_element_type=jnp.float32) * scale
    probs = jax.nn.softmax(scores, axis=-1).astype(w.dtype)
    a = jnp.einsum("nhqs,nshk->nqhk", probs, w)
    x = (
        x
        + jnp.einsum("nqhk,hke->nqe", a, layer["wo"].astype(a.dtype))
        + layer["bo"].astype(a.dtype)
    )
    h = layer_norm(x, layer["ln2_scale"], layer["ln2_bias"], v.layer_norm_eps)
    f = jnp.einsum("npe,ef->npf", h, layer["fc1"].astype(h.dtype)) + layer["fc1_bias"].astype(
        h.dtype
    )
    f = jax.nn.gelu(f, approximate=True)  # SigLIP's gelu_pytorch_tanh
    return (
        x
        + jnp.einsum("npf,fe->npe", f, layer["fc2"].astype(f.dtype))
        + layer["fc2_bias"].astype(f.dtype)
    )


def encode_patches(
    tower: dict, v: VisionConfig, patches: jax.Array, dtype=jnp.float32
) -> jax.Array:
    """SigLIP vision tower: patches [N, P, C] -> post-layernorm features [N, P, E]."""
    if patches.shape[-2:] != (v.num_patches, v.patch_dim):
        raise ValueError(
            f"image patches of shape {patches.shape[-2:]} do not match vision config "
            f"(num_patches={v.num_patches}, patch_dim={v.patch_dim}); preprocess images at "
            f"vision.image_size={v.image_size} with vision.patch_size={v.patch_size}"
        )
    x = jnp.einsum("npc,ce->npe", patches.astype(dtype), tower["patch_embed"].astype(dtype))
    x = x + tower["patch_bias"].astype(dtype) + tower["pos_embed"].astype(dtype)
    x, _ = jax.lax.scan(lambda x, layer: (_vit_block(v, x, layer), None), x, tower["layers"])
    return layer_norm(x, tower["post_norm_scale"], tower["post_norm_bias"], v.layer_norm_eps)


def project(projector: dict, features: jax.Array) -> jax.Array:
    """LLaVA's 2-layer GELU projector: features [..., E] -> decoder embeddings [..., D]."""
    h = jnp.einsum("...e,ed->...d", features, projector["w1"].astype(features.dtype))
    h = jax.nn.gelu(h + projector["b1"].astype(h.dtype), approximate=True)
    out = jnp.einsum("...d,dm->...m", h, projector["w2"].astype(h.dtype))
    return out + projector["b2"].astype(h.dtype)


def image_features(vision: dict, v: VisionConfig, patches: jax.Array, dtype=jnp.float32):
    """params["vision"], patches [N, P, C] -> projected features [N, P, D]."""
    tower = jax.lax.stop_gradient(vision["tower"]) if v.freeze_tower else vision["tower"]
    return project(vision["projector"], encode_patches(tower, v, patches, dtype))
