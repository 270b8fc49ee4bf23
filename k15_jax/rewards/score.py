"""The reward step of an RL iteration: verifier + length penalty + repeat penalty.

    r[b, j] = v[b, j]
            + w(it) * len_reward[b, j]            (sec. 2.3.3, with warm-up w)
            - repeat_penalty * [finish == repeat]  (sec. 2.6 repeat detection)
            + overlong[b, j]                       (DAPO's soft overlong punishment, if on)

v is the verifier selected by `reward.kind` (VERIFIERS): the rule-based math verifier
("rule"), or a learned reward model (sec. 2.3.5) read from `reward.rm_dir`: "classic_rm"
(value head, v = P(correct)) or "cot_rm" (generative check, v = its verdict, 0 when
malformed). With a reward model the rule verifier still runs beside it, for the agreement
metric only. A verifier exception scores that batch 0 and is counted; it never stops the run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from k15_jax.rewards.math import score_math
from k15_jax.rl.penalties import length_penalty, length_penalty_weight, overlong_penalty


@dataclasses.dataclass
class RewardConfig:
    kind: str = "rule"  # rule | classic_rm | cot_rm (VERIFIERS)
    rm_dir: str | None = None  # reward-model checkpoint dir (the RM experiment's <run_dir>/rm)
    rm_max_input: int = 92  # RM input tokens (question, reference, response tail)
    rm_max_check: int = 164  # CoT RM: tokens of its generated check
    rm_batch: int = 128  # classic RM forward rows / CoT RM engine slots
    length_penalty_weight: float = 0.0  # 0 disables it; the report adds it with weight 1
    length_penalty_warmup: int = 0  # iterations before the length penalty starts
    repeat_penalty: float = 0.5
    timeout_s: float = 5.0
    # DAPO's overlong reward shaping: a ramp to -1 over the last overlong_cache tokens before
    # overlong_max_len (set it to rollout.max_new_tokens); 0 disables it
    overlong_cache: int = 0
    overlong_max_len: int = 0
    # code tasks: "start" runs the sandbox service for the run (bubblewrap), or the URL of
    # a running one (python -m k15_jax.sandbox serve); sandbox_workers programs at once
    sandbox: str = "start"
    sandbox_workers: int = 4


# A verifier: (questions, responses, references) -> (v [N] float32 in [0, 1], stats).
Verifier = Callable[[list, list, list], tuple[np.ndarray, dict]]


def _rule(cfg: RewardConfig, mesh=None) -> Verifier:
    def verify(questions, responses, references):
        return score_math(responses, references, timeout_s=cfg.timeout_s)

    return verify


def _rm_inputs(cfg: RewardConfig, questions, responses, references) -> list[str]:
    from k15_jax.rewards.rm_data import rm_input

    if questions is None:
        raise ValueError("a reward model needs the questions: pass score(..., questions=...)")
    return [
        rm_input(q, r, y, cfg.rm_max_input - 1)  # - 1: the BOS token
        for q, r, y in zip(questions, references, responses, strict=True)
    ]


def _classic_rm(cfg: RewardConfig, mesh=None) -> Verifier:
    from k15_jax.model.tokenizer import CharTokenizer
    from k15_jax.rewards import rm_classic, rm_store

    params, model_cfg, _ = rm_store.load(cfg.rm_dir, "classic_rm")
    tok = CharTokenizer()

    def verify(questions, responses, references):
        texts = _rm_inputs(cfg, questions, responses, references)
        p = rm_classic.probabilities(params, model_cfg, tok, texts, cfg.rm_max_input, cfg.rm_batch)
        return p.astype(np.float32), {}

    return verify


def _cot_rm(cfg: RewardConfig, mesh=None) -> Verifier:
    from k15_jax.model.tokenizer import CharTokenizer
    from k15_jax.rewards import rm_cot, rm_store

    params, model_cfg, _ = rm_store.load(cfg.rm_dir, "cot_rm")
    tok = CharTokenizer()
    judge = rm_cot.make_judge(
        model_cfg,
        params,
        tok,
        max_input_tokens=cfg.rm_max_input,
        max_new_tokens=cfg.rm_max_check,
        slots=cfg.rm_batch,
        mesh=mesh,
    )

    def verify(questions, responses, references):
        texts = _rm_inputs(cfg, questions, responses, references)
        scores, malformed, _ = rm_cot.judge_scores(judge, texts)
        return scores, {"rm_malformed": malformed}

    return verify


VERIFIERS = {"rule": _rule, "classic_rm": _classic_rm, "cot_rm": _cot_rm}


def make_verifier(cfg: RewardConfig, mesh=None) -> Verifier:
    """The verifier of `reward.kind` (a reward model is loaded once, here)."""
    if cfg.kind not in VERIFIERS:
        raise ValueError(f"reward.kind={cfg.kind!r}; choose one of {sorted(VERIFIERS)}")
    return VERIFIERS[cfg.kind](cfg, mesh)


def score(
    responses: list[str],
    references: list[str],
    lengths: np.ndarray,
    repeated: np.ndarray,
    cfg: RewardConfig,
    iteration: int,
    *,
    questions: list[str] | None = None,
    verifier: Verifier | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Scores N = B*K responses (row-major groups of K).

    lengths, repeated: [B, K]. questions: the N problem texts (reward models read them).
    verifier: `make_verifier(cfg)` (built here for kind "rule" when None).
    Returns (rewards [B, K] float32, correct [B, K] in {0, 1} by the verifier, stats).
    """
    if verifier is None:
        if cfg.kind != "rule":
            raise ValueError(
                f"reward.kind={cfg.kind}: pass verifier=make_verifier(cfg) "
                "(it loads the reward model once)"
            )
        verifier = make_verifier(cfg)
    B, K = lengths.shape
    try:
        v, stats = verifier(questions, responses, references)
        v = np.asarray(v, np.float32)
    except Exception as e:  # a broken verifier must not stop the run
        v = np.zeros(len(responses), np.float32)
        stats = {"errors": len(responses), "exception": repr(e)}
    v = v.reshape(B, K)
    correct = (v >= 0.5).astype(np.float32)
    weight = float(
        length_penalty_weight(
            iteration, warmup_iterations=cfg.length_penalty_warmup, weight=cfg.length_penalty_weight
        )
    )
    len_reward = np.asarray(length_penalty(lengths, correct)) if weight else np.zeros((B, K))
    rewards = v + weight * len_reward - cfg.repeat_penalty * repeated.astype(np.float32)
    overlong = np.zeros((B, K), np.float32)
    if cfg.overlong_cache > 0:
        overlong = np.asarray(
            overlong_penalty(lengths, max_len=cfg.overlong_max_len, cache=cfg.overlong_cache)
        )
    rewards = rewards + overlong
    out = {
        "reward/verifier_errors": float(stats.get("errors", 0) + stats.get("timeouts", 0)),
        "reward/no_answer": float(stats.get("no_answer", 0)),
        "reward/length_penalty_weight": weight,
        "reward/len_reward_mean": float(len_reward.mean()),
        "reward/repeat_frac": float(repeated.mean()),
        "reward/overlong_mean": float(overlong.mean()),
    }
    if "code_rows" in stats:  # code tasks judged by the sandbox (rewards/routing.py)
        out["reward/code_rows"] = float(stats["code_rows"])
        out["reward/code_timeouts"] = float(stats["code_timeouts"])
    if cfg.kind != "rule":  # how often the reward model agrees with the rule verifier
        rule, _ = score_math(responses, references, timeout_s=cfg.timeout_s)
        rule = rule.reshape(B, K)
        out["reward/rm_agreement"] = float((correct == rule).mean())
        out["reward/rule_accuracy"] = float(rule.mean())
        out["reward/rm_malformed"] = float(stats.get("rm_malformed", 0))
    return rewards.astype(np.float32), correct, out
