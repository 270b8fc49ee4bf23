"""The decoder as pure functions over a params pytree: forward, prefill, decode_step.

Letters: B batch, T tokens, S cache positions, D model dim, H query heads, G kv heads,
Dh head dim, F mlp dim, V vocab, L layers. Layers are stacked and scanned.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from k15_jax.model.attention import attention, decode_attention
from k15_jax.model.config import ModelConfig
from k15_jax.model.swiglu import swiglu


def rope_inv_freq(cfg: ModelConfig) -> np.ndarray:
    """Rotary inverse frequencies [Dh/2], with the Llama-3 low/high-frequency rescaling."""
    dh = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (np.arange(0, dh, 2, dtype=np.float64) / dh))
    if cfg.rope_scaling is None:
        return inv.astype(np.float32)
    factor, low, high, orig = cfg.rope_scaling
    low_wavelen, high_wavelen = orig / low, orig / high
    wavelen = 2 * math.pi / inv
    scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (orig / wavelen - low) / (high - low)
    mid = (1 - smooth) * scaled / factor + smooth * scaled
    is_mid = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(is_mid, mid, scaled).astype(np.float32)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
    """Rotates halves of the head dim (the Hugging Face layout). x: [B, T, N, Dh]."""
    freqs = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, Dh/2]
    cos, sin = jnp.cos(freqs)[:, :, None, :], jnp.sin(freqs)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (x32 * weight.astype(jnp.float32)).astype(x.dtype)


def segment_positions(segment_ids: jax.Array) -> jax.Array:
    """Position of each token within its segment. segment_ids: [B, T] -> [B, T]."""
    T = segment_ids.shape[1]
    t = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), segment_ids.shape)
    starts = jnp.concatenate(
        [jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]], 1
    )
    return t - jax.lax.cummax(jnp.where(starts, t, 0), axis=1)


def qkv_projections(cfg: ModelConfig, layer: dict, h: jax.Array, positions: jax.Array):
    """Projections and rotary embedding. h: [B, T, D] -> q [B,T,H,Dh], k, v [B,T,G,Dh]."""
    q = jnp.einsum("btd,dhk->bthk", h, layer["wq"].astype(h.dtype))
    k = jnp.einsum("btd,dgk->btgk", h, layer["wk"].astype(h.dtype))
    v = jnp.einsum("btd,dgk->btgk", h, layer["wv"].astype(h.dtype))
    if cfg.qkv_bias:
        q = q + layer["bq"].astype(h.dtype)
        k = k + layer["bk"].astype(h.dtype)
        v = v + layer["bv"].astype(h.dtype)
    inv_freq = rope_inv_freq(cfg)
    return apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq), v


def attn_out_and_mlp(cfg: ModelConfig, layer: dict, x: jax.Array, attn: jax.Array):
    """Output projection, residual, SwiGLU MLP, residual. attn: [B, T, H, Dh]."""
    x = x + jnp.einsum("bthk,hkd->btd", attn, layer["wo"].astype(x.dtype))
    h = rms_norm(x, layer["mlp_norm"], cfg.rms_norm_eps)
    w = [layer[name].astype(h.dtype) for name in ("w_gate", "w_up", "w_down")]
    return x + swiglu(h, *w)


def embed_tokens(params: dict, cfg: ModelConfig, tokens: jax.Array) -> jax.Array:
    return params["embed"][tokens].astype(jnp.dtype(cfg.dtype))


def lm_head(params: dict, cfg: ModelConfig) -> jax.Array:
    """The output projection [D, V]."""
    return params["embed"].T if cfg.tie_embeddings else params["lm_head"]


# Logit of the image placeholder (model.vision): it is an input-only token, so the policy
# never emits it (exp underflows to 0 in float32) and a sampled token always means the same
# to the rollout and to the trainer's forward, which splices features at every placeholder.
# Finite, so masked differences of log-probs stay finite.
IMAGE_TOKEN_LOGIT = -1e4


def suppress_image_token(cfg: ModelConfig, logits: jax.Array) -> jax.Array:
    if cfg.vision is None:
        return logits
    return logits.at[..., cfg.vision.image_token_id].set(IMAGE_TOKEN_LOGIT)


def logits_from_hidden(params: dict, cfg: ModelConfig, h: jax.Array) -> jax.Array:
    """h [..., D] (final-normed) -> float32 logits [..., V]."""
    w = lm_head(params, cfg)
    logits = jnp.einsum("...d,dv->...v", h, w.astype(h.dtype), preferred_element_type=jnp.float32)
    return suppress_image_token(cfg, logits)


# What a layer keeps for the backward pass (model.remat); the forward values are the same.
#   none  everything autodiff needs: fastest, activations grow with layers x tokens
#   full  only the layer's input; the whole layer is recomputed in the backward pass
#   dots  the outputs of the weight matmuls (q/k/v/o projections, gate, up, down): norms,
#         rotary, attention scores and activations are recomputed from them
REMAT = {
    "none": lambda block: block,
    "full": jax.checkpoint,
    "dots": lambda block: jax.checkpoint(
        block, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable
    ),
}


def _default_positions(tokens, positions, segment_ids):
    if positions is not None:
        return positions.astype(jnp.int32)
    if segment_ids is not None:
        return segment_positions(segment_ids)
    return jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)


def forward_hidden(
    params: dict,
    cfg: ModelConfig,
    tokens: jax.Array,
    *,
    positions: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
    return_kv: bool = False,
    images: jax.Array | None = None,
):
    """Final-normed hidden states [B, T, D] (and per-layer k, v [L, B, T, G, Dh]).

    params["layers"] stacked ([L, ...] leaves) are scanned; a list of per-layer dicts (the
    rollout engine's layout) is unrolled and the kv come back as a list of L (k, v) pairs.

    segment_ids [B, T]: tokens attend only within their segment (packed rows); positions
    default to the index within each segment. images [B, M, P, C] (patches, model.vision):
    their projected features replace the embeddings of the image placeholder tokens.
    """
    positions = _default_positions(tokens, positions, segment_ids)
    x0 = embed_tokens(params, cfg, tokens)
    if images is not None:
        from k15_jax.model.multimodal import embed_with_images

        x0 = embed_with_images(params, cfg, tokens, x0, images)

    def block(x, layer):
        h = rms_norm(x, layer["attn_norm"], cfg.rms_norm_eps)
        q, k, v = qkv_projections(cfg, layer, h, positions)
        a = attention(
            q, k, v, causal=True, segment_ids=segment_ids, implementation=cfg.attention_impl
        )
        return attn_out_and_mlp(cfg, layer, x, a), (k, v) if return_kv else None

    layers = params["layers"]
    if isinstance(layers, list):  # the rollout engine's layout: see rollout/layout.py
        x, kv = x0, []
        for layer in layers:
            x, kv_l = block(x, layer)
            kv.append(kv_l)
    else:
        x, kv = jax.lax.scan(REMAT[cfg.remat](block), x0, layers)
    x = rms_norm(x, params["final_norm"], cfg.rms_norm_eps)
    return (x, kv) if return_kv else x


def forward(
    params: dict,
    cfg: ModelConfig,
    tokens: jax.Array,
    *,
    positions: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
) -> jax.Array:
    """Logits [B, T, V] float32 for int32 tokens [B, T] (causal, packing-aware)."""
    h = forward_hidden(params, cfg, tokens, positions=positions, segment_ids=segment_ids)
    return logits_from_hidden(params, cfg, h)


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype=None) -> dict:
    """An empty KV cache: k, v [L, B, S, G, Dh] and lengths [B] (valid positions)."""
    dtype = jnp.dtype(dtype or cfg.dtype)
    shape = (cfg.num_layers, batch, max_len, cfg.num_kv_heads, cfg.head_dim)
    return {
        "k": jnp.zeros(shape, dtype),
        "v": jnp.zeros(shape, dtype),
        "lengths": jnp.zeros((batch,), jnp.int32),
    }


def prefill(
    params: dict, cfg: ModelConfig, tokens: jax.Array, lengths: jax.Array, max_len: int
) -> tuple[jax.Array, dict]:
    """Runs right-padded prompts tokens [B, T] (true lengths [B]) and fills a new cache.

    Returns (logits of each prompt's last token [B, V] float32, cache with S = max_len).
    """
    B, T = tokens.shape
    if T > max_len:
        raise ValueError(f"prefill length {T} exceeds the cache size max_len={max_len}")
    h, (k, v) = forward_hidden(params, cfg, tokens, return_kv=True)
    last = jnp.take_along_axis(h, (lengths - 1)[:, None, None].astype(jnp.int32), axis=1)[:, 0]
    cache = init_cache(cfg, B, max_len, k.dtype)
    cache["k"] = cache["k"].at[:, :, :T].set(k)
    cache["v"] = cache["v"].at[:, :, :T].set(v)
    cache["lengths"] = lengths.astype(jnp.int32)
    return logits_from_hidden(params, cfg, last), cache


def decode_step(
    params: dict, cfg: ModelConfig, tokens: jax.Array, cache: dict
) -> tuple[jax.Array, dict]:
    """Appends one token per sequence. tokens [B] -> (logits [B, V] float32, new cache).

    The token of sequence b goes to cache position lengths[b] (its rotary position too).
    """
    positions = cache["lengths"][:, None]
    batch_idx = jnp.arange(tokens.shape[0])

    def block(carry, xs):
        x, ck, cv = carry
        layer, i = xs
        h = rms_norm(x, layer["attn_norm"], cfg.rms_norm_eps)
        q, k, v = qkv_projections(cfg, layer, h, positions)
        ck = ck.at[i, batch_idx, cache["lengths"]].set(k[:, 0].astype(ck.dtype))
        cv = cv.at[i, batch_idx, cache["lengths"]].set(v[:, 0].astype(cv.dtype))
        a = decode_attention(
            q[:, 0], ck[i], cv[i], cache["lengths"] + 1, implementation=cfg.attention_impl
        )
        return (attn_out_and_mlp(cfg, layer, x, a[:, None]), ck, cv), None

    x0 = embed_tokens(params, cfg, tokens[:, None])
    xs = (params["layers"], jnp.arange(cfg.num_layers))
    (x, ck, cv), _ = jax.lax.scan(block, (x0, cache["k"], cache["v"]), xs)
    x = rms_norm(x[:, 0], params["final_norm"], cfg.rms_norm_eps)
    new_cache = {"k": ck, "v": cv, "lengths": cache["lengths"] + 1}
    return logits_from_hidden(params, cfg, x), new_cache
