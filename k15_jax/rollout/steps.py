"""The engine's jitted pure functions and their state: decode chunk, prefill, insert.

Letters: L layers, S slots (decode batch), C = max_prompt_len + max_new_tokens cache
positions, G kv heads, Dh head dim, P prefilled sequences, Tp prefill length, W repeat
window, KW key-data words, n decode steps per host sync.

A sequence s (prompt, or prompt + partial response when a trajectory is continued) is
prefilled without its last token; the last token is fed by the first decode step, which
returns the logits of the first new token. So every response token, the first included, is
sampled inside the decode chunk, from the same decode path. `engine.RolloutEngine` compiles
these with explicit shardings and drives them.
"""

import dataclasses

import flax
import jax
import jax.numpy as jnp

from k15_jax.model.config import ModelConfig
from k15_jax.model.transformer import forward_hidden
from k15_jax.rollout import repeat
from k15_jax.rollout.decode import decode_layers, write_kv
from k15_jax.rollout.sampling import SamplingParams, policy_logp, sample_tokens, step_keys
from k15_jax.rollout.types import (
    FINISH_BUDGET,
    FINISH_EOS,
    FINISH_LENGTH,
    FINISH_NONE,
    FINISH_REPEAT,
)

MIN_PREFILL_LEN = 16


@flax.struct.dataclass
class DecodeState:
    """Everything a decode step transforms, one row per slot."""

    k: tuple  # L keys [S, G, Dh, C] (layout.py)
    v: tuple  # L values [S, G, C, Dh]
    lengths: jax.Array  # [S] int32 cache positions filled
    token: jax.Array  # [S] int32 next token to feed (last token of the sequence so far)
    key: jax.Array  # [S, KW] uint32 base key data of the slot's trajectory (KW = key_width())
    pos: jax.Array  # [S] int32 response tokens so far
    stop_at: jax.Array  # [S] int32 response position where this call's budget ends
    max_len: jax.Array  # [S] int32 response length limit
    active: jax.Array  # [S] bool
    finish: jax.Array  # [S] int32 FINISH_* (FINISH_NONE while running)
    window: jax.Array  # [S, W] int32 recent response tokens for repeat detection


@flax.struct.dataclass
class Prefix:
    """Prefilled sequences: KV of all tokens but the last, and the last token."""

    k: tuple  # L keys [P, G, Dh, C] (zero beyond each row's length)
    v: tuple  # L values [P, G, C, Dh]
    lengths: jax.Array  # [P] int32 prefilled tokens (sequence length - 1)
    token: jax.Array  # [P] int32 last token of each sequence


@flax.struct.dataclass
class SlotInit:
    """Where each prefilled row goes and how it continues; M rows (a power of two >= the
    rows inserted, at most S), unused rows have slot = S (dropped by the scatter)."""

    slot: jax.Array  # [M] int32
    row: jax.Array  # [M] int32 row of the Prefix
    key: jax.Array  # [M, KW] uint32
    pos: jax.Array  # [M] int32 response tokens already generated
    stop_at: jax.Array  # [M] int32
    max_len: jax.Array  # [M] int32
    window: jax.Array  # [M, W] int32


@flax.struct.dataclass
class StepOutput:
    """Host-bound results of n decode steps."""

    tokens: jax.Array  # [n, S] int32 sampled tokens (0 where not valid)
    logp: jax.Array  # [n, S] float32 log pi(token), raw logits at temperature 1
    valid: jax.Array  # [n, S] bool the slot was active and produced this token
    finish: jax.Array  # [S] int32 finish code after the chunk
    steps: jax.Array  # [] int32 steps actually run (the chunk ends early when all idle)


@dataclasses.dataclass(frozen=True)
class Static:
    """Hashable options baked into the compiled step."""

    model: ModelConfig
    sampling: SamplingParams
    repeat: tuple[int, int] | None  # (ngram, min_repeats) or None


def decode_chunk(st: Static, n_steps: int, span, params, state: DecodeState, stop_ids):
    """Up to n_steps decode steps of all slots; stops early once no slot is active.

    span (static): attention reads cache positions < span only (None: all C); the caller
    guarantees every active slot's lengths stays <= span during the chunk.

    stop_ids [E] int32 (-1 entries never match) is an argument, not a constant, so engines
    that differ only in their stop tokens share compiled code.
    """
    S = state.token.shape[0]

    def step(carry):
        i, s, toks, lps, valid, pending = carry
        # write the previous step's keys/values first: the old cache is then dead and the
        # scatter happens in place (see decode.py)
        k, v = write_kv(s.k, s.v, *pending)
        logits, kn, vn = decode_layers(params, st.model, s.token, k, v, s.lengths, span)
        pending = (kn, vn, s.lengths)
        new = sample_tokens(logits, step_keys(s.key, s.pos), st.sampling)
        lp = policy_logp(logits, new)
        act = s.active
        pos = s.pos + act.astype(jnp.int32)
        window = s.window
        fin = jnp.full((S,), FINISH_NONE, jnp.int32)
        fin = jnp.where(pos >= s.stop_at, FINISH_BUDGET, fin)
        fin = jnp.where(pos >= s.max_len, FINISH_LENGTH, fin)
        if st.repeat is not None:
            window = repeat.push_window(window, new, act)
            rep = repeat.repeat_flags(window, *st.repeat)
            fin = jnp.where(rep, FINISH_REPEAT, fin)
        fin = jnp.where(jnp.any(new[:, None] == stop_ids[None, :], axis=1), FINISH_EOS, fin)
        s = s.replace(
            k=k,
            v=v,
            lengths=s.lengths + act.astype(jnp.int32),
            token=jnp.where(act, new, s.token),
            pos=pos,
            active=act & (fin == FINISH_NONE),
            finish=jnp.where(act, fin, s.finish),
            window=window,
        )
        toks = toks.at[i].set(jnp.where(act, new, 0))
        lps = lps.at[i].set(jnp.where(act, lp, 0.0))
        valid = valid.at[i].set(act)
        return i + 1, s, toks, lps, valid, pending

    def cond(carry):
        return (carry[0] < n_steps) & jnp.any(carry[1].active)

    # written at lengths, positions no slot has used yet
    nothing = tuple(jnp.zeros(c.shape[:2] + c.shape[3:], c.dtype) for c in state.v)
    init = (
        jnp.int32(0),
        state,
        jnp.zeros((n_steps, S), jnp.int32),
        jnp.zeros((n_steps, S), jnp.float32),
        jnp.zeros((n_steps, S), bool),
        (nothing, nothing, state.lengths),
    )
    steps, state, toks, lps, valid, pending = jax.lax.while_loop(cond, step, init)
    k, v = write_kv(state.k, state.v, *pending)
    state = state.replace(k=k, v=v)
    return state, StepOutput(toks, lps, valid, state.finish, steps)


def prefill_kv(st: Static, cache_len: int, params, tokens, lengths, last, images=None):
    """tokens [P, Tp] right-padded, lengths [P] (may be 0), last [P] -> Prefix.

    KV come out in the cache layout (`layout.py`) zero-padded to the cache length C, so
    `insert` compiles once per P bucket rather than per (P, Tp). images [P, M, Np, C]
    (model.vision): their features go in at the image placeholder tokens, so the K slots a
    prefix is inserted into share one image encoding.
    """
    _, kv = forward_hidden(params, st.model, tokens, return_kv=True, images=images)
    pad = ((0, 0), (0, cache_len - tokens.shape[1]), (0, 0), (0, 0))
    k = tuple(jnp.pad(k, pad).transpose(0, 2, 3, 1) for k, _ in kv)  # [P, Tp, G, Dh] -> keys
    v = tuple(jnp.pad(v, pad).transpose(0, 2, 1, 3) for _, v in kv)
    return Prefix(k, v, lengths.astype(jnp.int32), last.astype(jnp.int32))


def insert_rows(state: DecodeState, prefix: Prefix, ins: SlotInit) -> DecodeState:
    """Scatters prefix rows into slots and resets their per-slot state."""
    put = lambda dst, src: dst.at[ins.slot].set(src, mode="drop")
    return state.replace(
        k=tuple(put(c, p[ins.row]) for c, p in zip(state.k, prefix.k, strict=True)),
        v=tuple(put(c, p[ins.row]) for c, p in zip(state.v, prefix.v, strict=True)),
        lengths=put(state.lengths, prefix.lengths[ins.row]),
        token=put(state.token, prefix.token[ins.row]),
        key=put(state.key, ins.key),
        pos=put(state.pos, ins.pos),
        stop_at=put(state.stop_at, ins.stop_at),
        max_len=put(state.max_len, ins.max_len),
        active=put(state.active, jnp.ones_like(ins.pos, bool)),
        finish=put(state.finish, jnp.full_like(ins.pos, FINISH_NONE)),
        window=put(state.window, ins.window),
    )


def bucket(n: int, multiple: int, cap: int | None = None, floor: int = 1):
    """Smallest multiple * 2^j >= max(n, floor), capped at cap (rounded up to multiple)."""
    b = multiple
    while b < max(n, floor):
        b *= 2
    if cap is not None:
        b = min(b, -(-cap // multiple) * multiple)
    return b


def length_bucket(n: int, floor: int, cap: int) -> int:
    """Smallest of 2^j and 3 * 2^(j-1) (16, 24, 32, 48, 64, 96, ...) >= max(n, floor), capped
    at cap: at most 1/3 of a prefill is padding, with two compiles per octave."""
    b = floor
    while b < n:
        b = b * 3 // 2 if b & (b - 1) == 0 else b // 3 * 4
    return min(b, cap)


def prefill_chunks(n: int, multiple: int) -> list[int]:
    """Splits n sequences into prefill calls of multiple * 4^j rows (the base-4 digits of
    ceil(n / multiple)): at most multiple - 1 padded rows, and few distinct shapes to compile
    (a call's cost is about linear in its rows, so more calls cost little)."""
    units, out, size = -(-n // multiple), [], multiple
    while units:
        out += [size] * (units % 4)
        units, size = units // 4, size * 4
    return out[::-1]
