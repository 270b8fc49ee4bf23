"""Image features spliced into the token sequence (LLaVA / Qwen2-VL style).

A prompt holds `vision.image_token_id` once per image patch (P per image, images in
order). The decoder's input at the j-th placeholder of a row is the j-th projected
feature of that row's images; every other position keeps its token embedding. The
sequence length does not change, so packing, masks, positions and the KV cache work as
for text.

Letters: B rows, T tokens, M images per row (zero-padded; padding images are encoded but
never read), P patches per image, C patch dim, D decoder width.
"""

import jax
import jax.numpy as jnp

from k15_jax.model.config import ModelConfig
from k15_jax.model.vit import image_features


def splice(token_embeds: jax.Array, features: jax.Array, is_image: jax.Array) -> jax.Array:
    """token_embeds [B, T, D], features [B, M*P, D], is_image [B, T] -> [B, T, D].

    Row b's j-th placeholder (in token order) takes features[b, j]. A row with more
    placeholders than M*P features would read the last one again: the data pipeline
    guarantees placeholders == images * P (checked in `rollout.driver` and the trainer).
    """
    slot = jnp.cumsum(is_image.astype(jnp.int32), axis=1) - 1  # [B, T]
    slot = jnp.clip(slot, 0, features.shape[1] - 1)
    gathered = jnp.take_along_axis(features, slot[..., None], axis=1)  # [B, T, D]
    return jnp.where(is_image[..., None], gathered.astype(token_embeds.dtype), token_embeds)


def embed_with_images(
    params: dict, cfg: ModelConfig, tokens: jax.Array, token_embeds: jax.Array, images: jax.Array
) -> jax.Array:
    """tokens [B, T], token_embeds [B, T, D], images [B, M, P, C] -> decoder input [B, T, D]."""
    if cfg.vision is None:
        raise ValueError("images were given but model.vision is not configured; set vision.enabled")
    B, M, P, C = images.shape
    feats = image_features(
        params["vision"], cfg.vision, images.reshape(B * M, P, C), token_embeds.dtype
    )
    return splice(token_embeds, feats.reshape(B, M * P, -1), tokens == cfg.vision.image_token_id)
