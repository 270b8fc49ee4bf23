"""`jetstream.engine.engine_api.Engine` for the k15_jax model, over a `RolloutEngine`.

So JetStream-compatible servers (its orchestrator, in-process or behind gRPC) can serve the
policy. One sample per slot; prefill of one request at a time (JetStream's contract); every
generate call is one decode step. RL uses `driver.collect` instead (K samples per prompt,
log-probs, budgets, many steps per host sync).
"""

import jax
import jax.numpy as jnp
import numpy as np

from k15_jax.rollout import jetstream_compat
from k15_jax.rollout.engine import RolloutEngine
from k15_jax.rollout.sampling import as_typed_key

engine_api = jetstream_compat.engine_api()
tokenizer_api, tokenizer_pb2, token_utils = jetstream_compat.tokenizer_modules()

# token_utils.pad_tokens only accepts these as max_prefill_length
JETSTREAM_PREFILL_LENGTHS = tuple(2**i for i in range(4, 16))


class JetStreamTokenizer(tokenizer_api.Tokenizer):
    """Wraps a k15_jax tokenizer (CharTokenizer / HFTokenizer) in JetStream's interface."""

    def __init__(self, tokenizer):
        self.tok = tokenizer

    def encode(self, s: str, **kwargs):
        ids = np.asarray(self.tok.encode(s), np.int32)
        return token_utils.pad_tokens(
            ids,
            self.bos_id,
            self.pad_id,
            is_bos=kwargs.pop("is_bos", True),
            prefill_lengths=kwargs.pop("prefill_lengths", None),
            max_prefill_length=kwargs.pop("max_prefill_length", None),
            jax_padding=kwargs.pop("jax_padding", True),
        )

    def decode(self, token_ids, **kwargs) -> str:
        return self.tok.decode([int(t) for t in token_ids])

    @property
    def pad_id(self) -> int:
        return self.tok.pad_id

    @property
    def eos_id(self) -> int:
        return self.tok.eos_id

    @property
    def bos_id(self) -> int:
        return self.tok.bos_id


class JetStreamEngine(engine_api.Engine):
    """JetStream's Engine API over our slot-batched KV cache (same mesh and shardings)."""

    def __init__(self, engine: RolloutEngine, tokenizer, *, key=None):
        if engine.cfg.max_prompt_len not in JETSTREAM_PREFILL_LENGTHS:
            raise ValueError(
                f"rollout.max_prompt_len={engine.cfg.max_prompt_len}: JetStream pads prompts "
                f"to one of {JETSTREAM_PREFILL_LENGTHS}; set it to one of these to serve "
                "through JetStream"
            )
        self.engine = engine
        self.tokenizer = JetStreamTokenizer(tokenizer)
        self._key = as_typed_key(jax.random.key(0) if key is None else key)
        self._inserted = 0

    # ---- hot paths ----
    def prefill(self, *, params, existing_prefix=None, padded_tokens, true_length):
        if existing_prefix is not None:
            raise NotImplementedError("prefix caching (existing_prefix) is not supported")
        n = int(true_length)
        if not 1 <= n <= self.max_prefill_length:
            raise ValueError(
                f"prefill true_length={n} must be in [1, {self.max_prefill_length}] "
                "(rollout.max_prompt_len)"
            )
        tokens = np.asarray(padded_tokens, np.int32).reshape(-1)[:n]
        return self.engine.prefill(params, [tokens])

    def insert(self, prefix, decode_state, slot: int):
        key = jax.random.key_data(jax.random.fold_in(self._key, self._inserted))
        self._inserted += 1
        ins = {"slot": int(slot), "row": 0, "key": np.asarray(key)}
        return self.engine.insert(prefix, decode_state, [ins])

    def generate(self, params, decode_state):
        state, out = self.engine.generate(params, decode_state, 1)
        data = jnp.stack(
            [out.tokens[0], out.valid[0].astype(jnp.int32), state.pos.astype(jnp.int32)], axis=1
        )
        result = engine_api.ResultTokens(
            data=data, tokens_idx=(0, 1), valid_idx=(1, 2), length_idx=(2, 3), samples_per_slot=1
        )
        return state, result

    def init_decode_state(self, *args, **kwargs):
        return self.engine.init_decode_state()

    def load_params(self, *args, **kwargs):
        if self.engine.params is None:
            raise ValueError("the engine has no params; call handover(engine, params) first")
        return self.engine.params

    # ---- metadata ----
    def get_prefix_destination_sharding(self):
        return self.engine.prefix_shardings

    def get_tokenizer(self):
        return tokenizer_pb2.TokenizerParameters(path="k15_jax")

    def build_tokenizer(self, metadata):
        return self.tokenizer

    @property
    def max_concurrent_decodes(self) -> int:
        return self.engine.cfg.slots

    @property
    def samples_per_slot(self) -> int:
        return 1

    @property
    def max_prefill_length(self) -> int:
        return self.engine.cfg.max_prompt_len

    @property
    def mesh(self):
        return self.engine.mesh

    @property
    def colocated_cpus(self):
        return None
