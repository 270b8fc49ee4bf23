"""Continuing a prefilled prompt with a partial response: prefill of the response only.

Letters: L layers, P prompt rows, M continued rows, G kv heads, R = H / G, C cache positions,
Dh head dim, Tr extension length (bucketed).

A continued trajectory (partial rollouts) needs the KV of prompt + partial response under
the current params. Its prompt's KV is shared by the group (`Prefix` rows from one prompt
prefill); only the response goes through the model here, attending to the prompt's cached
keys. This is `prefill_kv` split at the prompt boundary: the same projections, rope and MLP
(the model's functions); attention is the plain-jnp reference over the whole cache row
(`cached_attention_reference`; this runs once per refill, not per decode step).
"""

import jax.numpy as jnp

from k15_jax.kernels.reference import cached_attention_reference
from k15_jax.model.transformer import attn_out_and_mlp, embed_tokens, qkv_projections, rms_norm
from k15_jax.rollout.steps import Prefix, Static


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
    start = prefix.lengths[rows]
    M, Tr = tokens.shape
    C = prefix.v[0].shape[2]
    t = jnp.arange(Tr)[None, :]
    positions = start[:, None] + t  # [M, Tr]
    # padded tokens write nothing: their index is C, which the scatter drops
    write_at = jnp.where(t < n[:, None], positions, C)
    m_idx = jnp.arange(M)[:, None]
    x = embed_tokens(params, cfg, tokens)
    k_out, v_out = [], []
    for layer, pk, pv in zip(params["layers"], prefix.k, prefix.v, strict=True):
        ck, cv = pk[rows], pv[rows]  # keys [M, G, Dh, C], values [M, G, C, Dh]: the shared copy
        h = rms_norm(x, layer["attn_norm"], cfg.rms_norm_eps)
        q, kn, vn = qkv_projections(cfg, layer, h, positions)
        kn, vn = kn.astype(ck.dtype), vn.astype(cv.dtype)  # [M, Tr, G, Dh]
        # advanced indices (m, positions) around slices put their dims first: [M, Tr, G, Dh]
        ck = ck.at[m_idx, :, :, write_at].set(kn, mode="drop")
        cv = cv.at[m_idx, :, write_at].set(vn, mode="drop")
        # the reference's cache layout is [M, C, G, Dh]
        a = cached_attention_reference(
            q, ck.transpose(0, 3, 1, 2), cv.transpose(0, 2, 1, 3), positions
        )
        x = attn_out_and_mlp(cfg, layer, x, a)
        k_out.append(ck)
        v_out.append(cv)
    lengths = (start + n).astype(jnp.int32)
    return Prefix(tuple(k_out), tuple(v_out), lengths, last.astype(jnp.int32))
