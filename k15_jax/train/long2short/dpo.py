"""DPO long2short as a training stage (report sec. 2.4).

From K samples per prompt of the starting policy, the pairs of `rl.long2short.long2short_pairs`
(positive: shortest correct; negatives: the longest incorrect if longer than the positive,
and the longest correct if >= 1.5x longer) are trained with `rl.long2short.dpo_loss` against
the frozen starting policy.
Only a prompt's three rows that can be in a pair (positive, two negatives) are kept, so a
step runs the model on 3 sequences per prompt instead of K.

Letters: B prompts, K samples, b prompts per step, T tokens.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from k15_jax.distributed import replicate_scalars
from k15_jax.model.logprobs import token_logprobs
from k15_jax.rl.long2short import Long2ShortPairs, dpo_loss, gather_pair_logps, long2short_pairs
from k15_jax.rollout.handover import handover
from k15_jax.train.long2short.samples import Groups, sample_groups, training_prompts
from k15_jax.train.metrics import log, progress


def pair_rows(groups: Groups, length_ratio: float):
    """The DPO data of sampled groups.

    Returns (pairs, tokens [B', 3, T], mask [B', 3, T]) for the B' prompts with at least one
    valid pair: pairs are the prompts' `long2short_pairs` over their K samples (numpy), the
    rows are each prompt's (positive, longest incorrect, longest correct) samples; a row whose
    pair is invalid (e.g. no incorrect sample longer than the positive) is only masked.
    """
    p = long2short_pairs(groups.length, groups.correct, length_ratio=length_ratio)
    pos, neg, valid = (np.asarray(x) for x in p)
    keep = np.flatnonzero(valid.any(axis=1))
    rows = np.concatenate([pos[:, None], neg], axis=1)[keep]  # [B', 3]
    take = lambda x: np.take_along_axis(x[keep], rows[:, :, None], axis=1)
    pairs = Long2ShortPairs(pos[keep], neg[keep], valid[keep])
    return pairs, take(groups.tokens), take(groups.response_mask)


def _triplet_pairs(valid):
    """Pairs over a prompt's 3 kept rows: positive row 0, negatives rows 1 and 2."""
    b = valid.shape[0]
    return Long2ShortPairs(
        jnp.zeros((b,), jnp.int32), jnp.broadcast_to(jnp.array([1, 2], jnp.int32), (b, 2)), valid
    )


def sequence_logps(params, model_cfg, tokens, mask):
    """Sum of response-token log-probs. tokens, mask [N, T] -> [N] float32."""
    return jnp.sum(token_logprobs(params, model_cfg, tokens) * mask, axis=-1)


sequence_logps_jit = jax.jit(sequence_logps, static_argnums=1)


def dpo_objective(params, model_cfg, tokens, mask, ref_seq, valid, beta):
    """L_DPO of sec. 2.4 on a minibatch; returns (loss, metrics).

        L = mean over valid pairs of -log sigmoid(beta [(log pi(y+) - log pi_ref(y+))
                                                        - (log pi(y-) - log pi_ref(y-))])

    tokens, mask [b, 3, T]; ref_seq [b, 3] (frozen policy's sequence log-probs); valid [b, 2].
    """
    b, three, T = tokens.shape
    seq = sequence_logps(
        params, model_cfg, tokens.reshape(b * three, T), mask.reshape(b * three, T)
    ).reshape(b, three)
    pairs = _triplet_pairs(valid)
    pos, neg = gather_pair_logps(seq, pairs)
    ref_pos, ref_neg = gather_pair_logps(ref_seq, pairs)
    loss, m = dpo_loss(pos, neg, ref_pos, ref_neg, beta=beta, mask=valid)
    return loss, {f"dpo/{k}": v for k, v in m.items()} | {"dpo/loss": loss}


def make_dpo_step(model_cfg, optimizer, beta: float):
    """Jitted (params, opt_state, tokens, mask, ref_seq, valid) -> (params, opt_state, m)."""

    @jax.jit
    def step(params, opt_state, tokens, mask, ref_seq, valid):
        (_, m), grads = jax.value_and_grad(dpo_objective, has_aux=True)(
            params, model_cfg, tokens, mask, ref_seq, valid, beta
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        m["dpo/grad_norm"] = optax.global_norm(grads)
        return optax.apply_updates(params, updates), opt_state, m

    return step


def reference_logps(params, model_cfg, tokens, mask, batch: int) -> np.ndarray:
    """Frozen-policy sequence log-probs of [B', 3, T] rows -> [B', 3], in fixed-size batches
    (the last one padded) so that it compiles once."""
    B, three, T = tokens.shape
    flat_t, flat_m = tokens.reshape(B * three, T), mask.reshape(B * three, T)
    n = batch * three
    pad = -len(flat_t) % n
    flat_t = np.concatenate([flat_t, np.zeros((pad, T), flat_t.dtype)])
    flat_m = np.concatenate([flat_m, np.zeros((pad, T), flat_m.dtype)])
    out = [
        np.asarray(sequence_logps_jit(params, model_cfg, flat_t[i : i + n], flat_m[i : i + n]))
        for i in range(0, len(flat_t), n)
    ]
    return np.concatenate(out)[: B * three].reshape(B, three)


def dpo_stage(setup, engine, params, cfg, key, writer=None, phase: str = "l2s/dpo"):
    """DPO long2short from `params` (also the frozen reference). cfg: long2short.dpo.

    Samples cfg.samples responses to cfg.prompts training prompts on the sampling `engine`,
    builds the pairs, then runs cfg.steps Adam steps. Returns (params, stats).
    """
    engine = handover(engine, params)
    tasks = training_prompts(setup, cfg.prompts, setup.cfg.trainer.seed + 1)
    groups = sample_groups(setup, engine, tasks, cfg.samples, key)
    pairs, tokens, mask = pair_rows(groups, cfg.loss.length_ratio)
    valid = np.asarray(pairs.valid)
    stats = {
        "sampled_accuracy": float(groups.correct.mean()),
        "sampled_len": float(groups.length.mean()),
        "prompts_with_pairs": int(len(valid)),
        "pairs_incorrect_negative": int(valid[:, 0].sum()),
        "pairs_long_correct_negative": int(valid[:, 1].sum()),
    }
    log.info(
        "%s: %d pairs (%d with an incorrect, %d with a long correct negative) from %d prompts",
        phase,
        valid.sum(),
        stats["pairs_incorrect_negative"],
        stats["pairs_long_correct_negative"],
        len(tasks),
    )
    if not len(valid):
        log.warning(
            "%s: no DPO pair (no prompt has a correct and a longer sample); params unchanged", phase
        )
        return params, stats
    b = cfg.batch_prompts
    ref_seq = reference_logps(params, setup.model, tokens, mask, b)
    optimizer = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.lr))
    opt_state = replicate_scalars(optimizer.init(params), setup.mesh)
    step_fn = make_dpo_step(setup.model, optimizer, cfg.loss.beta)
    bar = progress(cfg.steps, phase)
    for step in range(cfg.steps):
        rng = np.random.default_rng([setup.cfg.trainer.seed, 41, step])
        sel = rng.choice(len(valid), size=b, replace=len(valid) < b)
        params, opt_state, m = step_fn(
            params, opt_state, tokens[sel], mask[sel], ref_seq[sel], valid[sel]
        )
        bar.update(1)
        if writer is not None and (step % 10 == 0 or step + 1 == cfg.steps):
            m = {k: float(v) for k, v in m.items()}
            bar.set_postfix(loss=f"{m['dpo/loss']:.3f}", acc=f"{m['dpo/accuracy']:.2f}")
            writer.write({"phase": phase, "step": step + 1, **m}, step + 1)
            stats.update({k.replace("dpo/", "last_"): v for k, v in m.items()})
    bar.close()
    return params, stats
