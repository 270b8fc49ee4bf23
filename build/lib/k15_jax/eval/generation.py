"""Text in, text out through the rollout engine (evaluation and curation sample the same way).

`complete` samples K completions per (request id, model input) with `driver.collect`:
continuous batching over the engine's slots, one prefill per prompt shared by its K
samples, per-trajectory PRNG keys derived from (key, request id, sample index), so a
prompt's answers do not depend on the batch it came in (a resumed run equals an
uninterrupted one).

`EnginePolicy` is the harness's policy: one engine per prompt-length bucket (the KV cache
is max_prompt_len + max_new_tokens long, so a short synthetic prompt does not pay for the
longest MATH one), all sharing one set of params. A prompt's bucket depends only on its own
length, so again batching does not change its samples.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from k15_jax.rollout.types import FINISH_NAMES, RolloutConfig


@dataclasses.dataclass
class Sample:
    """One completion: decoded text (cut at EOS), response tokens (EOS included) and why
    it stopped ("eos", "length" = truncated at max_new_tokens, "repeat")."""

    text: str
    tokens: int
    finish: str


def rollout_config(temperature: float, **fields) -> RolloutConfig:
    """A RolloutConfig where temperature <= 0 means greedy decoding."""
    greedy = temperature <= 0
    return RolloutConfig(temperature=1.0 if greedy else temperature, greedy=greedy, **fields)


def complete(
    engine, tok, requests: list[tuple[str, str]], k: int, key, *, bos: bool, stats=None
) -> list[list[Sample]]:
    """K samples per request [(id, model input)], in request order.

    stats (optional Counter): adds the generated "tokens" and returned "sequences".
    """
    from k15_jax.rollout import driver

    encoded = [(rid, tok.encode(text, bos=bos)) for rid, text in requests]
    rollouts, group_ids, _, st = driver.collect(engine, encoded, k=k, iteration=0, key=key)
    if stats is not None:
        stats["tokens"] += int(st["tokens_generated"])
        stats["sequences"] += int(st["sequences_returned"])
    tokens, plen, length, finish = (
        np.asarray(x)
        for x in (rollouts.tokens, rollouts.prompt_len, rollouts.length, rollouts.finish)
    )
    first = {rid: g * k for g, rid in enumerate(group_ids)}
    return [
        [
            Sample(
                tok.decode(tokens[n, plen[n] : plen[n] + length[n]]),
                int(length[n]),
                FINISH_NAMES[int(finish[n])],
            )
            for n in range(first[rid], first[rid] + k)
        ]
        for rid, _ in requests
    ]


def _bucket(n: int, cap: int, floor: int = 16) -> int:
    """Smallest power of two >= n (at least `floor`), at most `cap`."""
    b = floor
    while b < n:
        b *= 2
    return min(b, cap)


class EnginePolicy:
    """generate(requests, k, key) -> [[Sample] * k] per request; n_tokens(text) -> model
    input length; max_prompt_len: the longest input it takes (longer ones are skipped).

    rollout: RolloutConfig fields besides temperature and max_prompt_len (max_new_tokens,
    top_p, top_k, slots, steps_per_sync, repeat options). bos: prepend the tokenizer's BOS
    (default: when it has one; False for chat templates that write it themselves).
    """

    def __init__(
        self,
        model,
        params,
        tok,
        *,
        temperature: float,
        rollout: dict,
        eos_ids,
        max_prompt_len: int | None = None,
        bos: bool | None = None,
    ):
        limit = model.max_position_embeddings - rollout["max_new_tokens"]
        if limit < 1 or (max_prompt_len is not None and max_prompt_len > limit):
            raise ValueError(
                f"max_new_tokens={rollout['max_new_tokens']} + generation.max_prompt_len="
                f"{max_prompt_len} exceed the model's max_position_embeddings="
                f"{model.max_position_embeddings}; lower max_new_tokens or "
                "generation.max_prompt_len"
            )
        self.model, self.params, self.tok = model, params, tok
        self.temperature, self.rollout, self.eos_ids = temperature, dict(rollout), eos_ids
        self.max_prompt_len = limit if max_prompt_len is None else max_prompt_len
        self.bos = tok.bos_id is not None if bos is None else bos
        self.engines: dict[int, object] = {}
        self.stats = collections.Counter()

    def n_tokens(self, text: str) -> int:
        return len(self.tok.encode(text, bos=self.bos))

    def engine(self, bucket: int):
        from k15_jax.rollout.engine import make_engine

        if bucket not in self.engines:
            cfg = rollout_config(self.temperature, max_prompt_len=bucket, **self.rollout)
            first = next(iter(self.engines.values()), None)
            engine = make_engine(
                self.model,
                cfg,
                eos_id=self.eos_ids,
                pad_id=self.tok.pad_id,
                params=None if first else self.params,
            )
            if first is not None:  # same weights and layout, other compiled cache length
                engine.params = first.params
            self.engines[bucket] = engine
        return self.engines[bucket]

    def generate(self, requests: list[tuple[str, str]], k: int, *, key) -> list[list[Sample]]:
        groups = collections.defaultdict(list)
        for rid, text in requests:
            groups[_bucket(self.n_tokens(text), self.max_prompt_len)].append((rid, text))
        out = {}
        for bucket, reqs in sorted(groups.items()):
            samples = complete(
                self.engine(bucket), self.tok, reqs, k, key, bos=self.bos, stats=self.stats
            )
            out.update(zip([rid for rid, _ in reqs], samples, strict=True))
        return [out[rid] for rid, _ in requests]
