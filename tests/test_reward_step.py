"""The reward step: verifier + length penalty (with warm-up) + repeat penalty."""

import numpy as np

from k15_jax.rewards import score as score_module
from k15_jax.rewards.score import RewardConfig, score


def _np_length_penalty(lengths, correct):
    out = np.zeros_like(lengths, dtype=np.float64)
    for b in range(lengths.shape[0]):
        lo, hi = lengths[b].min(), lengths[b].max()
        if hi == lo:
            continue
        lam = 0.5 - (lengths[b] - lo) / (hi - lo)
        out[b] = np.where(correct[b] > 0, lam, np.minimum(0, lam))
    return out


def test_rewards_combine_verifier_length_and_repeat_penalties():
    refs = ["12", "7"]
    responses = [
        "\\boxed{12}",
        "\\boxed{13}",
        "x \\boxed{12}",
        "no answer",
        "\\boxed{7}",
        "\\boxed{7}",
        "\\boxed{8}",
        "\\boxed{7.0}",
    ]
    lengths = np.array([[10, 20, 30, 40], [5, 5, 9, 12]])
    repeated = np.array([[0, 0, 1, 0], [0, 0, 0, 0]], bool)
    cfg = RewardConfig(length_penalty_weight=0.5, length_penalty_warmup=3, repeat_penalty=0.25)
    correct_ref = np.array([[1, 0, 1, 0], [1, 1, 0, 1]], np.float32)

    before, correct, stats = score(
        responses, [r for r in refs for _ in range(4)], lengths, repeated, cfg, iteration=2
    )
    np.testing.assert_array_equal(correct, correct_ref)
    np.testing.assert_allclose(before, correct_ref - 0.25 * repeated)
    assert stats["reward/length_penalty_weight"] == 0.0

    after, _, _ = score(
        responses, [r for r in refs for _ in range(4)], lengths, repeated, cfg, iteration=3
    )
    want = correct_ref + 0.5 * _np_length_penalty(lengths, correct_ref) - 0.25 * repeated
    np.testing.assert_allclose(after, want, atol=1e-6)


def test_verifier_exception_scores_zero_and_is_counted(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("verifier crashed")

    monkeypatch.setattr(score_module, "score_math", broken)
    rewards, correct, stats = score(
        ["\\boxed{1}"] * 2,
        ["1"] * 2,
        np.array([[3, 4]]),
        np.zeros((1, 2), bool),
        RewardConfig(),
        iteration=0,
    )
    assert rewards.tolist() == [[0.0, 0.0]] and stats["reward/verifier_errors"] == 2.0
