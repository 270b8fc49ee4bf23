"""Continuing a prefilled prompt with a partial response: prefill of the response only.

Letters: L layers, P prompt rows, M continued rows, G kv heads, R = H / G, C cache positions,
Dh head dim, Tr extension length (bucketed).

A continued trajectory (partial rollouts) needs the KV of prompt + partial response under
the current params. Its prompt's KV is shared by the group (`Prefix` rows from one prompt
prefill); only the response goes through the model here, attending to the prompt's cached
keys. This is `prefill_kv` split at the prompt boundary: the same projections, rope and MLP
(the model's functions); attention is a masked softmax over the whole cache row.
"""

import jax
import jax.numpy as jnp

from k15_jax.kernels.reference import MASK_VALUE
from k15_jax.model.transformer import attn_out_and_mlp, embed_tokens, qkv_projections, rms_norm
from k15_jax.rollout.steps import Prefix, Static


def cached_attention(q, k_cache, v_cache, positions):
    """Causal attention of Tr queries per row over their row of the cache.

    q [M, Tr, H, Dh] at positions [M, Tr]; k_cache, v_cache [M, G, C, Dh] already hold the
    queries' own keys at their positions. Query t sees cache positions <= positions[t].
    Returns [M, Tr, H, Dh] in q's dtype; scores and softmax in float32.
    """
    M, Tr, H, Dh = q.shape
    G, C = k_cache.shape[1], k_cache.shape[2]
    qg = q.reshape(M, Tr, G, H // G, Dh)
    s = jnp.einsum("mtgrd,mgcd->mgrtc", qg, k_cache, preferred_element_type=jnp.float32)
    s = s * Dh**-0.5
    mask = jnp.arange(C)[None, None, :] <= positions[:, :, None]  # [M, Tr, C]
    s = jnp.where(mask[:, None, None], s, MASK_VALUE)
    p = jax.nn.softmax(s, axis=-1).astype(v_cache.dtype)
    out = jnp.einsum("mgrtc,mgcd->mtgrd", p, v_cache, preferred_element_type=jnp.float32)
    return out.reshape(M, Tr, H, Dh).astype(q.dtype)


def extend_kv(st: Static, params, prefix: Prefix, rows, tokens, n, last) -> Prefix:
    """Appends tokens to prefix rows -> a Prefix of M rows.

    prefix: P prefilled prompts (KV of all tokens but the last, lengths [P]); rows [M] int32:
    the prompt row each continued sequence starts from (rows repeat: K trajectories of one
    prompt share it). tokens [M, Tr]: the prompt's last token, then the response but its
    last token, right-padded; n [M] (>= 1) valid tokens; last [M] the response's last token.
    Positions beyond each row's new length hold what the prompt prefill left there (decode
    masks them); the extension's padded tokens write nothing.
    """
    cfg = st.model
    k, v = prefix.k[:, rows], prefix.v[:, rows]  # [L, M, G, C, Dh]: the shared copy
    start = prefix.lengths[rows]
    M, Tr = tokens.shape
    t = jnp.arange(Tr)[None, :]
    positions = start[:, None] + t  # [M, Tr]
    # padded tokens write nothing: their index is C, which the scatter drops
    write_at = jnp.where(t < n[:, None], positions, k.shape[3])
    m_idx = jnp.arange(M)[:, None]

    def block(x, xs):
        layer, ck, cv = xs  # ck [M, G, C, Dh]
        h = rms_norm(x, layer["attn_norm"], cfg.rms_norm_eps)
        q, kn, vn = qkv_projections(cfg, layer, h, positions)
        kn, vn = kn.astype(ck.dtype), vn.astype(cv.dtype)  # [M, Tr, G, Dh]
        # advanced indices (m, positions) around a slice put their dims first: [M, Tr, G, Dh]
        ck = ck.at[m_idx, :, write_at].set(kn, mode="drop")
        cv = cv.at[m_idx, :, write_at].set(vn, mode="drop")
        a = cached_attention(q, ck, cv, positions)
        return attn_out_and_mlp(cfg, layer, x, a), (ck, cv)

    x0 = embed_tokens(params, cfg, tokens)
    _, (k, v) = jax.lax.scan(block, x0, (params["layers"], k, v))
    return Prefix(k, v, (start + n).astype(jnp.int32), last.astype(jnp.int32))
