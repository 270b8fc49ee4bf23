"""The rollout engine: jitted prefill / insert / generate over a slot-batched KV cache.

Letters: L layers, S slots (decode batch), C = max_prompt_len + max_new_tokens cache
positions, G kv heads, Dh head dim, P prefilled sequences, Tp prefill length, W repeat
window, n decode steps per host sync.

A sequence s (prompt, or prompt + partial response when a trajectory is continued) is
prefilled without its last token; the last token is fed by the first decode step, which
returns the logits of the first new token. So every response token, the first included, is
sampled inside `generate`, from the same decode path.

The KV cache lives on the same mesh as training, with slots split over the batch axes
(`data`, `fsdp`) and kv heads over `tensor` (`sharding.ROLLOUT_RULES`). All three hot paths
are jitted with explicit in/out shardings; `insert` and `generate` donate the decode state;
per host sync only the n x S sampled tokens, their log-probs and flags come back.

This module does not import JetStream: `jetstream_engine.py` adapts it to
`jetstream.engine.engine_api.Engine`.
"""

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from k15_jax.model.config import ModelConfig
from k15_jax.model.transformer import forward_hidden
from k15_jax.rollout import repeat
from k15_jax.rollout.decode import decode_layers, write_kv
from k15_jax.rollout.sampling import (
    SamplingParams,
    key_width,
    policy_logp,
    sample_tokens,
    step_keys,
)
from k15_jax.rollout.types import (
    FINISH_BUDGET,
    FINISH_EOS,
    FINISH_LENGTH,
    FINISH_NONE,
    FINISH_REPEAT,
    RolloutConfig,
    check_rollout_config,
)
from k15_jax.sharding import (
    ROLLOUT_RULES,
    MeshConfig,
    check_divisible,
    logical_to_spec,
    make_mesh,
    param_shardings,
)

# head-major cache (see decode.py); G over `tensor`, slots over the batch axes
CACHE_AXES = ("layers", "batch", "kv_heads", "cache_length", "head_dim")
MIN_PREFILL_LEN = 16
_JIT_CACHE: dict = {}


@flax.struct.dataclass
class DecodeState:
    """Everything a decode step transforms, one row per slot."""

    k: jax.Array  # [L, S, G, C, Dh]
    v: jax.Array  # [L, S, G, C, Dh]
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

    k: jax.Array  # [L, P, G, C, Dh] (zero beyond each row's length)
    v: jax.Array  # [L, P, G, C, Dh]
    lengths: jax.Array  # [P] int32 prefilled tokens (sequence length - 1)
    token: jax.Array  # [P] int32 last token of each sequence


@flax.struct.dataclass
class SlotInit:
    """Where each prefilled row goes and how it continues; M = S rows, unused rows have
    slot = S (dropped by the scatter)."""

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
class _Static:
    """Hashable options baked into the compiled step."""

    model: ModelConfig
    sampling: SamplingParams
    repeat: tuple[int, int] | None  # (ngram, min_repeats) or None


def _decode_chunk(st: _Static, n_steps: int, span, params, state: DecodeState, stop_ids):
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

    L, _, G, _, Dh = state.k.shape
    nothing = jnp.zeros((L, S, G, Dh), state.k.dtype)  # written at lengths: unused positions
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


def _prefill(st: _Static, cache_len: int, params, tokens, lengths, last):
    """tokens [P, Tp] right-padded, lengths [P] (may be 0), last [P] -> Prefix.

    KV come out head-major and zero-padded to the cache length C, so `insert` compiles
    once per P bucket rather than per (P, Tp).
    """
    _, (k, v) = forward_hidden(params, st.model, tokens, return_kv=True)
    pad = ((0, 0), (0, 0), (0, cache_len - tokens.shape[1]), (0, 0), (0, 0))
    k, v = jnp.pad(k, pad), jnp.pad(v, pad)
    k, v = k.transpose(0, 1, 3, 2, 4), v.transpose(0, 1, 3, 2, 4)  # head-major
    return Prefix(k, v, lengths.astype(jnp.int32), last.astype(jnp.int32))


def _insert(state: DecodeState, prefix: Prefix, ins: SlotInit) -> DecodeState:
    """Scatters prefix rows into slots and resets their per-slot state."""
    put = lambda dst, src: dst.at[ins.slot].set(src, mode="drop")
    return state.replace(
        k=state.k.at[:, ins.slot].set(prefix.k[:, ins.row], mode="drop"),
        v=state.v.at[:, ins.slot].set(prefix.v[:, ins.row], mode="drop"),
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


def _bucket(n: int, multiple: int, cap: int | None = None, floor: int = 1):
    """Smallest multiple * 2^j >= max(n, floor), capped at cap (rounded up to multiple)."""
    b = multiple
    while b < max(n, floor):
        b *= 2
    if cap is not None:
        b = min(b, -(-cap // multiple) * multiple)
    return b


def _length_bucket(n: int, floor: int, cap: int) -> int:
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


@dataclasses.dataclass
class RolloutEngine:
    """Compiled rollout functions for one (model, rollout config, mesh) and the params.

    `params` are in the engine's shardings (`param_shardings`); set them with
    `handover.handover(engine, params)`. Build with `make_engine`.
    """

    model_cfg: ModelConfig
    cfg: RolloutConfig
    mesh: Mesh
    params: Any
    stop_ids: tuple[int, ...]
    pad_id: int = 0

    def __post_init__(self):
        check_rollout_config(self.cfg)
        m, c = self.model_cfg, self.cfg
        nb = self.batch_shards
        if c.slots % nb:
            raise ValueError(
                f"rollout.slots={c.slots} is not divisible by the mesh's batch axes "
                f"(data x fsdp = {nb}); set rollout.slots to a multiple of {nb}"
            )
        check_divisible(
            (m.num_layers, c.slots, m.num_kv_heads, self.cache_len, m.head_dim),
            CACHE_AXES,
            self.mesh,
            ROLLOUT_RULES,
            "rollout KV cache",
        )
        self.param_shardings = param_shardings(m, self.mesh, ROLLOUT_RULES)
        rep = None
        if c.stop_on_repeat:
            rep = (c.repeat_ngram, c.repeat_min_repeats)
        self._static = _Static(m, SamplingParams.from_config(c), rep)
        self._stop_array = np.asarray(self.stop_ids or (-1,), np.int32)
        self.key_width = key_width()
        cache = self._sharding(CACHE_AXES)
        row, row2 = self._sharding(("batch",)), self._sharding(("batch", None))
        self.state_shardings = DecodeState(
            cache, cache, row, row, row2, row, row, row, row, row, row2
        )
        self.prefix_shardings = Prefix(cache, cache, row, row)
        self._replicated = NamedSharding(self.mesh, PartitionSpec())

    # ---- shapes and shardings ----
    @property
    def cache_len(self) -> int:
        return self.cfg.max_prompt_len + self.cfg.max_new_tokens

    @property
    def window_len(self) -> int:
        return self.cfg.repeat_window if self.cfg.stop_on_repeat else 1

    @property
    def batch_shards(self) -> int:
        return math.prod(self.mesh.shape[a] for a in ("data", "fsdp") if a in self.mesh.shape)

    def _sharding(self, axes) -> NamedSharding:
        return NamedSharding(self.mesh, logical_to_spec(axes, ROLLOUT_RULES))

    # ---- compiled functions ----
    def _jit(self, name: str, *extra):
        # shared by engines that agree on what the function bakes in (shapes are jit's job)
        baked = {
            "generate": (self._static,),
            "prefill": (self.model_cfg, self.cache_len),
            "insert": (),
            "init": (
                self.model_cfg,
                self.cfg.slots,
                self.cache_len,
                self.window_len,
                self.key_width,
            ),
        }[name]
        key = (name, *extra, *baked, self.mesh)
        if key not in _JIT_CACHE:
            _JIT_CACHE[key] = self._build(name, *extra)
        return _JIT_CACHE[key]

    def _build(self, name: str, *extra):
        st, ps, ss, rep = self._static, self.param_shardings, self.state_shardings, self._replicated
        if name == "generate":
            n_steps, span = extra
            per_step = NamedSharding(self.mesh, PartitionSpec(None, *ss.active.spec))
            out = StepOutput(per_step, per_step, per_step, ss.finish, rep)
            return jax.jit(
                lambda p, s, stop: _decode_chunk(st, n_steps, span, p, s, stop),
                in_shardings=(ps, ss, rep),
                out_shardings=(ss, out),
                donate_argnums=(1,),
            )
        if name == "prefill":
            fs, row = self.prefix_shardings, self.prefix_shardings.lengths
            tok = self._sharding(("batch", None))
            return jax.jit(
                lambda p, t, n, last: _prefill(st, self.cache_len, p, t, n, last),
                in_shardings=(ps, tok, row, row),
                out_shardings=fs,
            )
        if name == "insert":
            return jax.jit(
                _insert,
                in_shardings=(ss, self.prefix_shardings, rep),
                out_shardings=ss,
                donate_argnums=(0,),
            )
        if name == "init":
            m, S = self.model_cfg, self.cfg.slots

            def init():
                shape = (m.num_layers, S, m.num_kv_heads, self.cache_len, m.head_dim)
                z = lambda dt: jnp.zeros((S,), dt)
                return DecodeState(
                    k=jnp.zeros(shape, jnp.dtype(m.dtype)),
                    v=jnp.zeros(shape, jnp.dtype(m.dtype)),
                    lengths=z(jnp.int32),
                    token=z(jnp.int32),
                    key=jnp.zeros((S, self.key_width), jnp.uint32),
                    pos=z(jnp.int32),
                    stop_at=z(jnp.int32),
                    max_len=z(jnp.int32),
                    active=z(bool),
                    finish=jnp.full((S,), FINISH_NONE, jnp.int32),
                    window=jnp.full((S, self.window_len), repeat.EMPTY, jnp.int32),
                )

            return jax.jit(init, out_shardings=ss)
        raise KeyError(name)

    # ---- host API ----
    def init_decode_state(self) -> DecodeState:
        """Empty slots (all inactive)."""
        return self._jit("init")()

    def prefill(self, params, sequences: Sequence[Sequence[int]]) -> Prefix:
        """Prefills host token lists (each 1..C tokens) in one bucketed call -> Prefix.

        Rows beyond len(sequences) are padding. Bucketing: P to batch_shards * 2^j (capped at
        the slot count; the driver calls it with `prefill_chunks` sizes, so nothing is
        padded), Tp to `prefill_bucket`, so few shapes ever compile.
        """
        C = self.cache_len
        for i, s in enumerate(sequences):
            if not 1 <= len(s) <= C:
                raise ValueError(
                    f"prefill sequence {i} has {len(s)} tokens; it needs 1..{C} "
                    "(rollout.max_prompt_len + rollout.max_new_tokens)"
                )
        P = _bucket(len(sequences), self.batch_shards, self.cfg.slots)
        Tp = max(self.prefill_bucket(len(s)) for s in sequences)
        tokens = np.full((P, Tp), self.pad_id, np.int32)
        lengths = np.zeros((P,), np.int32)
        last = np.full((P,), self.pad_id, np.int32)
        for i, s in enumerate(sequences):
            tokens[i, : len(s) - 1] = s[:-1]
            lengths[i] = len(s) - 1
            last[i] = s[-1]
        return self._jit("prefill")(params, tokens, lengths, last)

    def prefill_bucket(self, length: int) -> int:
        """Padded prefill length of a sequence of `length` tokens (its last token is fed by
        the first decode step). Prefill sequences of one bucket together: mixing a short
        prompt with a long continuation pads the short one to the long one."""
        return _length_bucket(length - 1, MIN_PREFILL_LEN, self.cache_len)

    def insert(self, prefix: Prefix, state: DecodeState, inserts: Sequence[dict]) -> DecodeState:
        """Puts prefix rows into slots. inserts: dicts with slot, row and optionally key
        ([KW] uint32 key data), pos, stop_at, max_len, window ([W] int32). Donates `state`."""
        S, W = self.cfg.slots, self.window_len
        if len(inserts) > S:
            raise ValueError(f"{len(inserts)} inserts for {S} slots")
        slot = np.full((S,), S, np.int32)  # S = dropped
        row = np.zeros((S,), np.int32)
        key = np.zeros((S, self.key_width), np.uint32)
        pos = np.zeros((S,), np.int32)
        max_len = np.full((S,), self.cfg.max_new_tokens, np.int32)
        stop_at = np.full((S,), self.cfg.max_new_tokens, np.int32)
        window = np.full((S, W), repeat.EMPTY, np.int32)
        for i, d in enumerate(inserts):
            slot[i], row[i] = d["slot"], d["row"]
            if "key" in d:
                key[i] = d["key"]
            pos[i] = d.get("pos", 0)
            max_len[i] = d.get("max_len", self.cfg.max_new_tokens)
            stop_at[i] = d.get("stop_at", max_len[i])
            if "window" in d:
                window[i] = d["window"]
        ins = SlotInit(slot, row, key, pos, stop_at, max_len, window)
        return self._jit("insert")(state, prefix, ins)

    def generate(
        self, params, state: DecodeState, n_steps: int = 1, max_context: int | None = None
    ):
        """Runs up to n_steps decode steps of every slot. Donates `state`.

        max_context (optional): an upper bound on the sequence length (prompt + response) of
        every active slot during these steps, i.e. the current longest + n_steps; attention
        then reads only the first `attention_span(max_context)` cache positions.
        Returns (state, StepOutput) with device arrays; `jax.device_get` the output.
        """
        span = None if max_context is None else self.attention_span(max_context)
        return self._jit("generate", int(n_steps), span)(params, state, self._stop_array)

    def attention_span(self, max_context: int) -> int | None:
        """Cache positions decode attention reads: a power of two >= max_context (at least
        64, so few spans compile), or None (all C) when that reaches the cache length."""
        span = _bucket(max_context, 1, floor=64)
        return None if span >= self.cache_len else span


def make_engine(
    model_cfg: ModelConfig,
    cfg: RolloutConfig,
    *,
    eos_id: int | Sequence[int] | None = None,
    pad_id: int = 0,
    mesh: Mesh | None = None,
    params=None,
) -> RolloutEngine:
    """An engine on `mesh` (default: all devices, slots split over them).

    eos_id: stop token id(s); default model_cfg.eos_token_id. params (optional): any
    sharding; they are resharded onto the engine's layout (see `handover`).
    """
    if eos_id is None:
        eos_id = model_cfg.eos_token_id
    if eos_id is None:
        raise ValueError(
            "no stop token: pass eos_id= to make_engine or set model.eos_token_id "
            "(use eos_id=() to decode to max_new_tokens)"
        )
    stop_ids = (int(eos_id),) if isinstance(eos_id, int | np.integer) else tuple(map(int, eos_id))
    mesh = make_mesh(MeshConfig()) if mesh is None else mesh
    engine = RolloutEngine(model_cfg, cfg, mesh, None, stop_ids, int(pad_id))
    if params is not None:
        from k15_jax.rollout.handover import handover

        engine = handover(engine, params)
    return engine
