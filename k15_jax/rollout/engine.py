"""The rollout engine: jitted prefill / insert / generate over a slot-batched KV cache.

Letters: L layers, S slots (decode batch), C = max_prompt_len + max_new_tokens cache
positions, G kv heads, Dh head dim, P prefilled sequences, Tp prefill length, W repeat
window, n decode steps per host sync.

The pure functions it compiles (decode chunk, prefill, insert) and the decode state are in
`steps.py`.

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

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from k15_jax.model.config import ModelConfig
from k15_jax.rollout import repeat
from k15_jax.rollout.extend import extend_kv
from k15_jax.rollout.layout import (
    cache_shapes,
    cache_shardings,
    check_cache,
    engine_param_shardings,
)
from k15_jax.rollout.sampling import SamplingParams, key_width
from k15_jax.rollout.steps import (
    MIN_PREFILL_LEN,
    DecodeState,
    Prefix,
    SlotInit,
    Static,
    StepOutput,
    bucket,
    decode_chunk,
    insert_rows,
    length_bucket,
    prefill_kv,
)
from k15_jax.rollout.types import FINISH_NONE, RolloutConfig, check_rollout_config
from k15_jax.sharding import (
    ROLLOUT_RULES,
    MeshConfig,
    logical_to_spec,
    make_mesh,
    param_shardings,
)

_JIT_CACHE: dict = {}


@dataclasses.dataclass
class RolloutEngine:
    """Compiled rollout functions for one (model, rollout config, mesh) and the params.

    `params` are in the engine's layout and shardings (`layout.py`, `param_shardings`); set
    them with `handover.handover(engine, params)` from the trainer's. Build with
    `make_engine`.
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
        check_cache(m, c.slots, self.cache_len, self.mesh)
        # the trainer's layout, whole across the batch axes: what `handover` takes
        self.stacked_shardings = param_shardings(m, self.mesh, ROLLOUT_RULES)
        self.param_shardings = engine_param_shardings(m, self.mesh)
        rep = None
        if c.stop_on_repeat:
            rep = (c.repeat_ngram, c.repeat_min_repeats)
        self._static = Static(m, SamplingParams.from_config(c), rep)
        self._stop_array = np.asarray(self.stop_ids or (-1,), np.int32)
        self.key_width = key_width()
        ck, cv = cache_shardings(m, self.mesh)
        row, row2 = self._sharding(("batch",)), self._sharding(("batch", None))
        self.state_shardings = DecodeState(ck, cv, row, row, row2, row, row, row, row, row, row2)
        self.prefix_shardings = Prefix(ck, cv, row, row)
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
    def program(self, name: str, *extra):
        """The jitted function behind one of the host calls: "generate" (extra: n_steps,
        span), "prefill", "prefill_images", "extend", "insert" or "init". For ahead-of-time compiles
        (`k15_jax.aot`): lower it with abstract arguments in the engine's shardings."""
        return self._jit(name, *extra)

    def _jit(self, name: str, *extra):
        # shared by engines that agree on what the function bakes in (shapes are jit's job)
        baked = {
            "generate": (self._static,),
            "prefill": (self.model_cfg, self.cache_len),
            "prefill_images": (self.model_cfg, self.cache_len),
            "extend": (self.model_cfg,),
            "insert": (self.model_cfg.num_layers,),  # its shardings: one per layer
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
                lambda p, s, stop: decode_chunk(st, n_steps, span, p, s, stop),
                in_shardings=(ps, ss, rep),
                out_shardings=(ss, out),
                donate_argnums=(1,),
            )
        if name == "prefill":
            fs, row = self.prefix_shardings, self.prefix_shardings.lengths
            tok = self._sharding(("batch", None))
            return jax.jit(
                lambda p, t, n, last: prefill_kv(st, self.cache_len, p, t, n, last),
                in_shardings=(ps, tok, row, row),
                out_shardings=fs,
            )
        if name == "prefill_images":
            fs, row = self.prefix_shardings, self.prefix_shardings.lengths
            tok, img = self._sharding(("batch", None)), self._sharding(("batch", None, None, None))
            return jax.jit(
                lambda p, t, n, last, im: prefill_kv(st, self.cache_len, p, t, n, last, im),
                in_shardings=(ps, tok, row, row, img),
                out_shardings=fs,
            )
        if name == "extend":
            fs, row = self.prefix_shardings, self.prefix_shardings.lengths
            tok = self._sharding(("batch", None))
            return jax.jit(
                lambda p, pre, r, t, n, last: extend_kv(st, p, pre, r, t, n, last),
                in_shardings=(ps, fs, row, tok, row, row),
                out_shardings=fs,
            )
        if name == "insert":
            return jax.jit(
                insert_rows,
                in_shardings=(ss, self.prefix_shardings, rep),
                out_shardings=ss,
                donate_argnums=(0,),
            )
        if name == "init":
            m, S = self.model_cfg, self.cfg.slots

            def init():
                ks, vs = cache_shapes(m, S, self.cache_len)
                cache = lambda shape: tuple(
                    jnp.zeros(shape, jnp.dtype(m.dtype)) for _ in range(m.num_layers)
                )
                z = lambda dt: jnp.zeros((S,), dt)
                return DecodeState(
                    k=cache(ks),
                    v=cache(vs),
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

    def prefill(self, params, sequences: Sequence[Sequence[int]], images=None) -> Prefix:
        """Prefills host token lists (each 1..C tokens) in one bucketed call -> Prefix.

        Rows beyond len(sequences) are padding. Bucketing: P to batch_shards * 2^j (capped at
        the slot count; the driver calls it with `prefill_chunks` sizes, so nothing is
        padded), Tp to `prefill_bucket`, so few shapes ever compile.
        images (model.vision): per sequence None or patches [m, Np, C], m <= max_images,
        one image per m * Np placeholder tokens; None for all is the text-only path.
        """
        _check_layout(params, "prefill")
        C = self.cache_len
        for i, s in enumerate(sequences):
            if not 1 <= len(s) <= C:
                raise ValueError(
                    f"prefill sequence {i} has {len(s)} tokens; it needs 1..{C} "
                    "(rollout.max_prompt_len + rollout.max_new_tokens)"
                )
        P = bucket(len(sequences), self.batch_shards, self.cfg.slots)
        Tp = max(self.prefill_bucket(len(s)) for s in sequences)
        tokens = np.full((P, Tp), self.pad_id, np.int32)
        lengths = np.zeros((P,), np.int32)
        last = np.full((P,), self.pad_id, np.int32)
        for i, s in enumerate(sequences):
            tokens[i, : len(s) - 1] = s[:-1]
            lengths[i] = len(s) - 1
            last[i] = s[-1]
        if images is None or all(im is None for im in images):
            return self._jit("prefill")(params, tokens, lengths, last)
        from k15_jax.data.images import pad_images

        v = self.model_cfg.vision
        batch = pad_images(list(images) + [None] * (P - len(images)), v.max_images, v)
        return self._jit("prefill_images")(params, tokens, lengths, last, batch)

    def extend(self, params, prefix: Prefix, rows: Sequence[int], prompt_last, responses):
        """Continues prefix rows with partial responses (prompt KV shared, see extend.py).

        rows[i]: the prefix row (a prompt prefilled by `prefill`) of continued sequence i;
        prompt_last[i]: that prompt's last token; responses[i]: its partial response (>= 1
        tokens). Returns a Prefix of the sequences prompt + response, one row each. Rows are
        bucketed like `prefill`'s, the extension to `prefill_bucket(len(response))`.
        """
        _check_layout(params, "extend")
        M = bucket(len(rows), self.batch_shards, self.cfg.slots)
        Tr = max(self.prefill_bucket(len(r) + 1) for r in responses)
        tokens = np.full((M, Tr), self.pad_id, np.int32)
        n = np.ones((M,), np.int32)  # padded rows extend row 0 by one token, unused
        last = np.full((M,), self.pad_id, np.int32)
        idx = np.zeros((M,), np.int32)
        for i, (r, first, resp) in enumerate(zip(rows, prompt_last, responses)):
            tokens[i, 0], tokens[i, 1 : len(resp)] = first, resp[:-1]
            n[i], last[i], idx[i] = len(resp), resp[-1], r
        return self._jit("extend")(params, prefix, idx, tokens, n, last)

    def prefill_bucket(self, length: int) -> int:
        """Padded prefill length of a sequence of `length` tokens (its last token is fed by
        the first decode step). Prefill sequences of one bucket together: mixing a short
        prompt with a long continuation pads the short one to the long one."""
        return length_bucket(length - 1, MIN_PREFILL_LEN, self.cache_len)

    def insert(self, prefix: Prefix, state: DecodeState, inserts: Sequence[dict]) -> DecodeState:
        """Puts prefix rows into slots. inserts: dicts with slot, row and optionally key
        ([KW] uint32 key data), pos, stop_at, max_len, window ([W] int32). Donates `state`."""
        S, W = self.cfg.slots, self.window_len
        if len(inserts) > S:
            raise ValueError(f"{len(inserts)} inserts for {S} slots")
        # rows bucketed to a power of two, not S: each row moves a whole [L, G, C, Dh] KV
        # row, so a refill of a few slots must not gather and scatter S of them
        M = bucket(len(inserts), 1, S)
        slot = np.full((M,), S, np.int32)  # S = dropped
        row = np.zeros((M,), np.int32)
        key = np.zeros((M, self.key_width), np.uint32)
        pos = np.zeros((M,), np.int32)
        max_len = np.full((M,), self.cfg.max_new_tokens, np.int32)
        stop_at = np.full((M,), self.cfg.max_new_tokens, np.int32)
        window = np.full((M, W), repeat.EMPTY, np.int32)
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
        _check_layout(params, "generate")
        span = None if max_context is None else self.attention_span(max_context)
        return self._jit("generate", int(n_steps), span)(params, state, self._stop_array)

    def attention_span(self, max_context: int) -> int | None:
        """Cache positions decode attention reads: a power of two >= max_context (at least
        64, so few spans compile), or None (all C) when that reaches the cache length."""
        span = bucket(max_context, 1, floor=64)
        return None if span >= self.cache_len else span


def _check_layout(params, call: str) -> None:
    if params is None or not isinstance(params.get("layers"), list):
        got = "None" if params is None else "stacked layers (the trainer's layout)"
        raise ValueError(
            f"engine.{call} got params with {got}; pass engine.params, which "
            "handover(engine, params) sets in the engine's layout (rollout/layout.py)"
        )


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
