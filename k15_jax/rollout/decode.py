"""The engine's decode step: the model's `decode_step` math on the engine's layouts.

Letters: L layers, S slots, C cache positions, G kv heads, R = H / G query heads per kv head,
Dh head dim, D model dim, V vocab.

Why not `model.decode_step`: on CPU its [L, S, C, G, Dh] cache, carried through the layer
scan, costs a transpose per layer for the attention dots and grows the step time with C
(about 2x at C = 1024 for the 28M bench model). Here params and cache are per layer
(`layout.py`: keys [S, G, Dh, C], values [S, G, C, Dh]) and the layer loop is unrolled, so
no layer's weights or cache are copied out of a stack; the new token attends to the cache
and to itself in one softmax (no per-layer cache copy), and the new keys/values are written
into the cache once per step, after the layers. Projections, MLP, norms and rope are the
model's own functions, so numerics match `forward` (tested against it).
"""

import jax.numpy as jnp

from k15_jax.kernels.reference import MASK_VALUE
from k15_jax.model.config import ModelConfig
from k15_jax.model.transformer import (
    attn_out_and_mlp,
    embed_tokens,
    logits_from_hidden,
    qkv_projections,
    rms_norm,
)


def attend(q, k_cache, v_cache, k_new, v_new, lengths):
    """Softmax attention of one query per slot over cache[:lengths] plus its own key.

    q [S, H, Dh]; k_cache [S, G, Dh, C]; v_cache [S, G, C, Dh]; k_new, v_new [S, G, Dh];
    lengths [S]. Returns [S, H, Dh] in q's dtype; scores and softmax in float32.

    `decode_attention_reference` (k15_jax.kernels.reference) fused with the append: the new
    key joins the softmax without being written into the cache first (see the module doc).
    """
    S, H, Dh = q.shape
    G, C = k_cache.shape[1], k_cache.shape[3]
    qg = q.reshape(S, G, H // G, Dh)
    scale = Dh**-0.5
    sc = jnp.einsum("sgrd,sgdc->sgrc", qg, k_cache, preferred_element_type=jnp.float32) * scale
    sn = jnp.einsum("sgrd,sgd->sgr", qg, k_new, preferred_element_type=jnp.float32)[..., None]
    sn = sn * scale
    mask = (jnp.arange(C)[None, :] < lengths[:, None])[:, None, None, :]
    sc = jnp.where(mask, sc, MASK_VALUE)
    m = jnp.maximum(jnp.max(sc, axis=-1, keepdims=True), sn)
    pc = jnp.where(mask, jnp.exp(sc - m), 0.0)
    pn = jnp.exp(sn - m)
    den = jnp.sum(pc, axis=-1, keepdims=True) + pn
    out = jnp.einsum(
        "sgrc,sgcd->sgrd", pc.astype(v_cache.dtype), v_cache, preferred_element_type=jnp.float32
    )
    out = (out + pn * v_new[:, :, None, :].astype(jnp.float32)) / den
    return out.reshape(S, H, Dh).astype(q.dtype)


def decode_layers(params: dict, cfg: ModelConfig, tokens, k, v, lengths, span=None):
    """One token per slot through all layers, without writing the cache.

    params: the engine's layout (`layers` a list); tokens [S] at positions lengths [S];
    k, v: tuples of L keys [S, G, Dh, C] and values [S, G, C, Dh] holding positions < lengths.
    span (static, optional): attend only to cache positions < span (needs lengths <= span);
    decode attention reads the whole cache, so short contexts in a long cache pay for it.
    Returns (logits [S, V] float32, k_new, v_new: tuples of L [S, G, Dh]) for `write_kv`.
    """
    positions = lengths[:, None]
    x = embed_tokens(params, cfg, tokens[:, None])
    k_new, v_new = [], []
    for layer, ck, cv in zip(params["layers"], k, v, strict=True):
        if span is not None:
            ck, cv = ck[..., :span], cv[:, :, :span]
        h = rms_norm(x, layer["attn_norm"], cfg.rms_norm_eps)
        q, kn, vn = qkv_projections(cfg, layer, h, positions)
        kn, vn = kn[:, 0].astype(ck.dtype), vn[:, 0].astype(cv.dtype)
        a = attend(q[:, 0], ck, cv, kn, vn, lengths)
        x = attn_out_and_mlp(cfg, layer, x, a[:, None])
        k_new.append(kn)
        v_new.append(vn)
    x = rms_norm(x[:, 0], params["final_norm"], cfg.rms_norm_eps)
    return logits_from_hidden(params, cfg, x), tuple(k_new), tuple(v_new)


def write_kv(k, v, k_new, v_new, positions):
    """Writes k_new, v_new (tuples of L [S, G, Dh]) at cache positions [S] of k, v (tuples
    of L keys [S, G, Dh, C] and values [S, G, C, Dh]).

    The engine defers the write to the start of the next step: XLA then updates the
    loop-carried cache in place instead of keeping the old cache alive for the layers.
    """
    slots = jnp.arange(positions.shape[0])
    # advanced indices (slots, positions) around a slice put their dim first: [S, G, Dh]
    k = tuple(c.at[slots, :, :, positions].set(n) for c, n in zip(k, k_new, strict=True))
    v = tuple(c.at[slots, :, positions].set(n) for c, n in zip(v, v_new, strict=True))
    return k, v
