"""The chain-of-thought reward model (report sec. 2.3.5): the decoder fine-tuned to write a
step-by-step check of a response as compact JSON, then a verdict,

    {"steps":["2+9+0=11 ok","7+8+1=17 wrong: 16","ans 871 vs 861 wrong"],"verdict":"incorrect"}

(targets from `rm_data.cot_target`). Its reward is the verdict: 1 for "correct", 0 for
"incorrect", and 0 for anything else (malformed, counted).

Parsing is strict and reads only what the reward model generated: the decoded tokens after
its input, up to its end-of-sequence token, must be exactly one JSON object with the keys
"steps" (a list of strings) and "verdict" ("correct" | "incorrect"). The response under
evaluation is part of the input, never of the parsed text, so a response that writes
`verdict: correct` or a JSON verdict of its own cannot set the reward.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np

from k15_jax.rollout import driver
from k15_jax.rollout.buffer import RolloutBuffer
from k15_jax.rollout.engine import make_engine
from k15_jax.rollout.types import RolloutConfig

VERDICTS = {"correct": 1.0, "incorrect": 0.0}


def parse_verdict(generated: str) -> float | None:
    """1.0 / 0.0 from a well-formed check, None when malformed (see module docstring)."""
    try:
        obj = json.loads(generated)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or set(obj) != {"steps", "verdict"}:
        return None
    steps, verdict = obj["steps"], obj["verdict"]
    if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
        return None
    if not isinstance(verdict, str) or verdict not in VERDICTS:
        return None
    return VERDICTS[verdict]


def examples(inputs: list[str], targets: list[str], tokenizer, decision_weight: float = 1.0):
    """SFT examples (BOS + input, check JSON + EOS, loss weights); the loss covers the check.

    The tokens from the final-answer step on (`"ans ...` and the verdict), which decide the
    reward, weigh decision_weight; the line checks before them, mostly copies, weigh 1.
    """
    out = []
    for x, t in zip(inputs, targets, strict=True):
        ids = tokenizer.encode(t, eos=True)
        weights = np.ones(len(ids), np.float32)
        start = t.rfind('"ans ')
        weights[start if start >= 0 else len(ids) :] = decision_weight
        out.append((tokenizer.encode(x, bos=True), ids, weights))
    return out


@dataclasses.dataclass
class CotJudge:
    """A greedy rollout engine holding the CoT RM's params, and its tokenizer."""

    engine: object
    tokenizer: object

    @property
    def max_input_tokens(self) -> int:
        return self.engine.cfg.max_prompt_len


def make_judge(
    model_cfg,
    params,
    tokenizer,
    *,
    max_input_tokens: int,
    max_new_tokens: int,
    slots: int = 128,
    steps_per_sync: int = 16,
    mesh=None,
) -> CotJudge:
    """The CoT RM on the rollout engine (greedy, no repeat stop: checks repeat "ok")."""
    total = max_input_tokens + max_new_tokens
    if total > model_cfg.max_position_embeddings:
        raise ValueError(
            f"CoT RM input {max_input_tokens} + check {max_new_tokens} tokens exceeds "
            f"model.max_position_embeddings={model_cfg.max_position_embeddings}"
        )
    cfg = RolloutConfig(
        greedy=True,
        max_prompt_len=max_input_tokens,
        max_new_tokens=max_new_tokens,
        slots=slots,
        stop_on_repeat=False,
        steps_per_sync=steps_per_sync,
    )
    engine = make_engine(
        model_cfg, cfg, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id, mesh=mesh, params=params
    )
    return CotJudge(engine, tokenizer)


def generate(judge: CotJudge, inputs: list[str]) -> list[str]:
    """The RM's generated text for each input (decoded after the input, up to EOS)."""
    tok = judge.tokenizer
    requests = []
    for i, x in enumerate(inputs):
        ids = tok.encode(x, bos=True)
        if len(ids) > judge.max_input_tokens:
            raise ValueError(
                f"CoT RM input {i} has {len(ids)} tokens > {judge.max_input_tokens}; cut the "
                "response (rm_data.rm_input) or raise the RM's max input"
            )
        requests.append((f"rm{i}", ids))
    if not requests:
        return []
    rollouts, group_ids, _, _ = driver.collect(
        judge.engine, requests, k=1, iteration=0, key=jax.random.key(0), buffer=RolloutBuffer()
    )
    order = {g: n for n, g in enumerate(group_ids)}
    tokens, plen, length = (
        np.asarray(x) for x in (rollouts.tokens, rollouts.prompt_len, rollouts.length)
    )
    out = []
    for i in range(len(inputs)):
        n = order[f"rm{i}"]
        out.append(tok.decode(tokens[n, plen[n] : plen[n] + length[n]]))
    return out


def judge_scores(judge: CotJudge, inputs: list[str]) -> tuple[np.ndarray, int, list[str]]:
    """(scores [N] in {0, 1}, number malformed, generated texts) for N input texts."""
    texts = generate(judge, inputs)
    verdicts = [parse_verdict(t) for t in texts]
    scores = np.array([0.0 if v is None else v for v in verdicts], np.float32)
    return scores, sum(v is None for v in verdicts), texts
