"""Helpers shared by the loss tables (k15_jax/rl/losses.py, clipped.py, off_policy.py)."""

import jax.numpy as jnp


def choice(table: dict, key: str, option: str, group: str = "algo.loss"):
    """Looks up a named variant; a bad name raises an error that says which option to fix."""
    if key not in table:
        raise ValueError(
            f"unknown {option}={key!r}; set {group}.{option} to one of {sorted(table)}"
        )
    return table[key]


def zero_advantage_fraction(rewards):
    """Fraction of prompts whose K rewards are all equal (they carry no learning signal). -> []"""
    same = jnp.all(rewards == rewards[..., :1], axis=-1)
    return jnp.mean(same.astype(jnp.float32))


def clean_log_ratio(logp, ref_logp, mask):
    """log(pi / pi_ref) on counted tokens, 0 elsewhere. [..., T].

    Both inputs are cleaned before the subtraction, so NaN or inf at a masked slot (and
    inf - inf) never reach the value or the gradient.
    """
    valid = mask > 0
    return jnp.where(valid, logp, 0) - jnp.where(valid, ref_logp, 0)
