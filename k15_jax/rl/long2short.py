"""Long2short with DPO (report sec. 2.4): preference pairs from one group of samples, DPO loss.

Per prompt, the positive is the shortest correct response; negatives are responses LONGER than
it: incorrect ones, and correct ones at least `length_ratio` (1.5) times its length. Report
sec. 2.4: "the shortest correct solution as positive sample while longer responses are treated
as negative samples, including both wrong longer responses and correct longer responses (1.5
times longer than the chosen positive sample)". Of each kind the longest qualifying response is
the pair's negative (the strongest length contrast, one pair per kind so shapes stay fixed).
Shapes: B prompts, K samples per prompt, P pairs.
Everything is fixed-shape (invalid pairs are masked) so that it jits and shards.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp


@dataclasses.dataclass
class Long2ShortConfig:
    """DPO long2short options. beta: DPO temperature (the report gives none; 0.1 is common).
    length_ratio: a correct response is a negative if len >= length_ratio * positive's len."""

    beta: float = 0.1
    length_ratio: float = 1.5


class Long2ShortPairs(NamedTuple):
    """Indices into the K samples of each prompt.

    pos_idx [B] int32: shortest correct response (0 when the group has none; then all invalid).
    neg_idx [B, 2] int32: (longest incorrect, longest correct); a valid pair's negative is
        strictly longer than the positive.
    valid   [B, 2] bool: whether pair (pos_idx[b], neg_idx[b, m]) exists.
    """

    pos_idx: jax.Array
    neg_idx: jax.Array
    valid: jax.Array


def long2short_pairs(lengths, correct, *, length_ratio=1.5):
    """Builds the sec. 2.4 DPO pairs for each prompt; ties go to the lowest sample index.

    Pair (pos, longest incorrect) exists iff the group has a correct response and an incorrect
    one longer than pos: the longest incorrect qualifies iff any incorrect does, so taking it
    is taking the longest qualifying one. A shorter or equally long wrong answer is no
    long2short negative (it would teach "longer is better").
    Pair (pos, longest correct) exists iff len(longest correct) >= length_ratio * len(pos) and
    len(longest correct) > len(pos) (so it is a different, strictly longer sample). A group with
    no correct response has no pair.
    Args: lengths [B, K] (int or float); correct [B, K] (bool or nonzero = correct).
    Returns: Long2ShortPairs.
    """
    lengths = jnp.asarray(lengths).astype(jnp.float32)
    correct = jnp.asarray(correct).astype(bool)
    has_correct = jnp.any(correct, axis=-1)
    has_incorrect = jnp.any(~correct, axis=-1)
    pos_idx = jnp.argmin(jnp.where(correct, lengths, jnp.inf), axis=-1).astype(jnp.int32)
    long_wrong = jnp.argmax(jnp.where(correct, -jnp.inf, lengths), axis=-1).astype(jnp.int32)
    long_right = jnp.argmax(jnp.where(correct, lengths, -jnp.inf), axis=-1).astype(jnp.int32)
    pos_len = jnp.take_along_axis(lengths, pos_idx[:, None], axis=-1)[:, 0]
    right_len = jnp.take_along_axis(lengths, long_right[:, None], axis=-1)[:, 0]
    wrong_len = jnp.take_along_axis(lengths, long_wrong[:, None], axis=-1)[:, 0]
    # `> pos_len` too: equal lengths (e.g. both 0) are never a long2short pair.
    long_enough = (right_len >= length_ratio * pos_len) & (right_len > pos_len)
    wrong_longer = has_incorrect & (wrong_len > pos_len)
    valid = jnp.stack([has_correct & wrong_longer, has_correct & long_enough], axis=-1)
    return Long2ShortPairs(pos_idx, jnp.stack([long_wrong, long_right], axis=-1), valid)


def gather_pair_logps(seq_logp, pairs: Long2ShortPairs):
    """Sequence log-probs of each pair's two sides. seq_logp [B, K] -> (pos [B, 2], neg [B, 2])."""
    pos = jnp.take_along_axis(seq_logp, pairs.pos_idx[:, None], axis=-1)
    neg = jnp.take_along_axis(seq_logp, pairs.neg_idx, axis=-1)
    return jnp.broadcast_to(pos, neg.shape), neg


def dpo_loss(pos_logp, neg_logp, ref_pos_logp, ref_neg_logp, *, beta, mask=None):
    """DPO loss on sequence log-probs (Rafailov et al. 2023; used for long2short, sec. 2.4).

        m[p] = (pos_logp - ref_pos_logp) - (neg_logp - ref_neg_logp)
        L    = mean over valid p of  -log sigmoid(beta * m[p])

    Args: the four log-probs, any equal shape [P...]; mask of that shape (nonzero = valid pair,
      default all valid). Invalid pairs add no value or gradient, whatever they hold; with no
      valid pair the loss is 0. Reference log-probs get no gradient.
    Returns: (loss [], metrics) with pair_count, accuracy (fraction of valid pairs with m > 0),
      margin (mean beta*m over valid pairs).
    """
    valid = jnp.ones(jnp.shape(pos_logp), bool) if mask is None else jnp.asarray(mask) > 0
    ref_pos_logp = jax.lax.stop_gradient(ref_pos_logp)
    ref_neg_logp = jax.lax.stop_gradient(ref_neg_logp)
    clean = lambda x: jnp.where(valid, x, 0)
    margin = beta * (
        (clean(pos_logp) - clean(ref_pos_logp)) - (clean(neg_logp) - clean(ref_neg_logp))
    )
    count = jnp.sum(valid).astype(margin.dtype)
    denom = jnp.maximum(count, 1)
    loss = jnp.sum(jnp.where(valid, -jax.nn.log_sigmoid(margin), 0)) / denom
    margin_const = jax.lax.stop_gradient(margin)
    metrics = {
        "pair_count": count,
        "accuracy": jnp.sum(valid & (margin_const > 0)).astype(margin.dtype) / denom,
        "margin": jnp.sum(margin_const) / denom,
    }
    return loss, metrics
