"""Degenerate-repetition detection on the most recent response tokens.

Rule (thresholds in `RolloutConfig`): with n = repeat_ngram, R = repeat_min_repeats and
W = repeat_window, a response is repeating when its last n tokens occur at least R times
(overlapping occurrences count, the last one included) among its last W tokens. A loop of
period p <= (W - n) / (R - 1) is caught once n + (R - 1) p tokens of it exist; ordinary text
rarely repeats an exact n-gram R times within W tokens.

Two implementations of the same rule: `repeat_flags` runs on device inside the decode step
over a sliding window of recent tokens; `is_repeating` / `first_repeat` are the plain
numpy/Python reference used on the host and in tests.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

EMPTY = -1  # window entries before the first response token


def push_window(window: jax.Array, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """Appends tokens [S] to the sliding windows [S, W] of the rows where mask [S] is set."""
    shifted = jnp.concatenate([window[:, 1:], tokens[:, None].astype(window.dtype)], axis=1)
    return jnp.where(mask[:, None], shifted, window)


def repeat_flags(window: jax.Array, ngram: int, min_repeats: int) -> jax.Array:
    """Device detector. window [S, W] int32 (oldest first, EMPTY-padded on the left) -> [S] bool.

    Counts the offsets j in [0, W - n] with window[j:j+n] == window[W-n:]; EMPTY never equals
    a token, so only fully valid occurrences count.
    """
    S, W = window.shape
    n, J = ngram, W - ngram + 1
    last = window[:, W - n :]  # [S, n]
    # match[s, j] = all_i window[s, j + i] == last[s, i]: n static shifted compares (a
    # gather of [S, J, n] indices is much slower on CPU)
    match = jnp.ones((S, J), bool)
    for i in range(n):
        match = match & (window[:, i : i + J] == last[:, i : i + 1])
    count = jnp.sum(match, axis=-1)
    valid = jnp.all(last != EMPTY, axis=-1)
    return valid & (count >= min_repeats)


def window_from_response(response: Sequence[int], window: int) -> np.ndarray:
    """The device window [W] of a (partial) response: its last W tokens, EMPTY-padded left."""
    out = np.full((window,), EMPTY, np.int32)
    tail = np.asarray(response[-window:] if len(response) else [], np.int32)
    if tail.size:
        out[window - tail.size :] = tail
    return out


def is_repeating(tokens: Sequence[int], ngram: int, min_repeats: int, window: int) -> bool:
    """Reference rule on a whole response (list of ints): does it repeat at its end?"""
    tail = list(tokens[-window:])
    if len(tail) < ngram:
        return False
    last = tail[len(tail) - ngram :]
    count = sum(tail[j : j + ngram] == last for j in range(len(tail) - ngram + 1))
    return count >= min_repeats


def first_repeat(tokens: Sequence[int], ngram: int, min_repeats: int, window: int) -> int | None:
    """Length of the shortest prefix of `tokens` that is repeating (None if none is)."""
    for t in range(1, len(tokens) + 1):
        if is_repeating(tokens[:t], ngram, min_repeats, window):
            return t
    return None
