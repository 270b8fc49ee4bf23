"""K sampled responses per training prompt, verified: the raw material of shortest rejection
sampling and DPO long2short (report sec. 2.4). Letters: B prompts, K samples, T tokens."""

import dataclasses

import numpy as np

from k15_jax.rewards.math import score_math
from k15_jax.rollout import driver
from k15_jax.rollout.buffer import RolloutBuffer
from k15_jax.rollout.texts import request_rows, response_texts
from k15_jax.rollout.types import FINISH_EOS


@dataclasses.dataclass
class Groups:
    """Responses to B prompts, K each, in the order of `tasks`.

    tokens, response_mask: [B, K, T] (prompt + response, right-padded; mask on the response
    tokens, the stop token included); length, finish: [B, K] (response tokens, FINISH_*);
    correct: [B, K] bool, verifier-correct; texts: B lists of K response strings;
    prompts: B prompt token lists (BOS first).
    """

    tasks: list
    prompts: list
    tokens: np.ndarray
    response_mask: np.ndarray
    length: np.ndarray
    finish: np.ndarray
    correct: np.ndarray
    texts: list

    @property
    def complete(self) -> np.ndarray:
        """[B, K] bool: correct and ended by the stop token (a response cut by the length
        limit is no full demonstration even when its last \\boxed{} is right)."""
        return self.correct & (self.finish == FINISH_EOS)

    def response(self, b: int, j: int) -> list[int]:
        """Response token ids of sample j of prompt b (the stop token included)."""
        return self.tokens[b, j][self.response_mask[b, j] > 0].tolist()


def training_prompts(setup, n: int, seed: int) -> list:
    """n distinct tasks of the training pool (never held-out ones), deterministic in seed."""
    rng = np.random.default_rng([seed, 31])
    n = min(n, len(setup.pool))
    return [setup.pool[int(i)] for i in rng.choice(len(setup.pool), size=n, replace=False)]


def sample_groups(setup, engine, tasks: list, k: int, key) -> Groups:
    """K responses per task from the engine's policy (its sampling options), verified."""
    ids = [str(i) for i in range(len(tasks))]
    requests = [(rid, setup.prompts.prompt_ids(t)) for rid, t in zip(ids, tasks)]
    ro, group_ids, _, _ = driver.collect(
        engine, requests, k=k, iteration=0, key=key, buffer=RolloutBuffer()
    )
    rows = request_rows(group_ids, ids, k)
    B = len(tasks)
    tokens = np.asarray(ro.tokens)[rows]
    texts = response_texts(ro, rows, setup.tokenizer, setup.template)
    correct, _ = score_math(texts, [t.reference for t in tasks for _ in range(k)])
    T = tokens.shape[-1]
    return Groups(
        tasks=list(tasks),
        prompts=[list(p) for _, p in requests],
        tokens=tokens.reshape(B, k, T),
        response_mask=np.asarray(ro.response_mask)[rows].reshape(B, k, T),
        length=np.asarray(ro.length)[rows].reshape(B, k),
        finish=np.asarray(ro.finish)[rows].reshape(B, k),
        correct=np.asarray(correct).reshape(B, k) > 0,
        texts=[texts[b * k : (b + 1) * k] for b in range(B)],
    )
