"""Float64 numpy re-derivation of the clipped-ratio losses (GRPO, DAPO, GSPO, CISPO): value and
analytic gradient with respect to logp, written from the papers' formulas, not from the code."""

import numpy as np


def advantage(r, adv_norm, eps):
    centred = r - r.mean(-1, keepdims=True)
    if adv_norm == "group_mean":
        return centred
    return centred / (r.std(-1, keepdims=True) + eps)


def agg_coeff(mask, aggregation):
    """c[b,j,t] with loss = sum c * w * l, i.e. d loss / d l[b,j,t] / w[b,j,t]."""
    valid = mask > 0
    count = valid.sum(-1, keepdims=True)
    n_seq = max((count > 0).sum(), 1)
    if aggregation == "token_mean":
        c = np.full(mask.shape, 1.0 / max(valid.sum(), 1))
    elif aggregation == "seq_mean":
        c = np.broadcast_to(1.0 / (n_seq * np.maximum(count, 1)), mask.shape)
    else:  # seq_sum
        c = np.full(mask.shape, 1.0 / n_seq)
    return np.where(valid, c, 0.0)


def _ppo(ratio, A, lo, hi):
    """-min(ratio A, clip(ratio) A) and its derivative in the ratio."""
    clipped = np.clip(ratio, 1 - lo, 1 + hi)
    value = -np.minimum(ratio * A, clipped * A)
    inside = (ratio >= 1 - lo) & (ratio <= 1 + hi)
    takes_unclipped = inside | (ratio * A < clipped * A)
    return value, np.where(takes_unclipped, -A, 0.0)


def reference(
    name, logp, ref, r, mask, *, aggregation, clip_low, clip_high, adv_norm, adv_eps, kl_coef
):
    """(loss, grad [B, K, T]) of LOSSES[name] in float64."""
    valid = mask > 0
    w = np.where(valid, mask, 0.0)
    x = np.where(valid, np.where(valid, logp, 0) - np.where(valid, ref, 0), 0.0)
    A = advantage(r, adv_norm, adv_eps)[..., None]
    c = agg_coeff(mask, aggregation)
    if name in ("grpo", "dapo"):
        rho = np.exp(x)
        l, dl_drho = _ppo(rho, A, clip_low, clip_high)
        dl = dl_drho * rho
    elif name == "gspo":
        count = valid.sum(-1, keepdims=True)
        s = np.exp(x.sum(-1, keepdims=True) / np.maximum(count, 1))
        seq, dseq_ds = _ppo(s, A, clip_low, clip_high)
        l = np.broadcast_to(seq, mask.shape)
        # every token's l is L[b,j]; d L / d logp[t] = dL/ds * s / |y|, collected over the
        # response's tokens with weights c * w
        total = (c * w).sum(-1, keepdims=True)
        dl = None
        grad_seq = total * dseq_ds * s / np.maximum(count, 1)
    else:  # cispo
        rhat = np.clip(np.exp(x), 1 - clip_low, 1 + clip_high)
        l = -rhat * A * np.where(valid, logp, 0)
        dl = -rhat * A
    k3 = np.exp(-x) + x - 1
    l = l + kl_coef * np.where(valid, k3, 0.0)
    loss = (c * w * np.where(valid, l, 0.0)).sum()
    dkl = kl_coef * (1 - np.exp(-x))
    if name == "gspo":
        grad = np.where(valid, grad_seq + c * w * dkl, 0.0)
    else:
        grad = np.where(valid, c * w * (dl + dkl), 0.0)
    return loss, grad
