"""long2short RL (report sec. 2.4): the second RL phase runs with the length penalty on from
its first iteration and the reduced maximum rollout length; the rewards it computes are the
verifier's plus the sec. 2.3.3 penalty, re-derived here in numpy. Also the option checks."""

import copy

import numpy as np
import pytest
from omegaconf import OmegaConf

from k15_jax.train import iteration
from k15_jax.train.long2short import rl as long2short_rl
from k15_jax.train.long2short.config import check, plan
from tests.long2short_policy import boxed_correct, compose_cfg, mixed_policy


def np_length_penalty(lengths, correct):
    """len_reward of sec. 2.3.3 per group, straight from the formula."""
    out = np.zeros(lengths.shape)
    for b in range(lengths.shape[0]):
        lo, hi = lengths[b].min(), lengths[b].max()
        if hi == lo:
            continue
        lam = 0.5 - (lengths[b] - lo) / (hi - lo)
        out[b] = np.where(correct[b], lam, np.minimum(0.0, lam))
    return out


def test_phase_runs_with_penalty_and_reduced_length(monkeypatch):
    s, params = mixed_policy()
    main_max = s.cfg.rollout.max_new_tokens
    c = s.cfg.long2short.rl
    main_reward = dict(s.cfg.reward)
    assert c.max_new_tokens < main_max and main_reward["length_penalty_weight"] == 0
    assert main_reward["length_penalty_warmup"] > 0  # so that warm-up 0 is the phase's doing
    calls = []
    real_score = iteration.score_texts

    def spy(texts, refs, lengths, repeated, cfg, it, **kw):  # kw: questions, verifier
        out = real_score(texts, refs, lengths, repeated, cfg, it, **kw)
        calls.append((texts, refs, np.array(lengths), np.array(repeated), cfg, it, out))
        return out

    monkeypatch.setattr(iteration, "score_texts", spy)
    new, stats = long2short_rl.long2short_rl(s, params)
    assert stats["max_new_tokens"] == c.max_new_tokens
    assert stats["reward"]["length_penalty_weight"] == c.length_penalty_weight > 0
    assert stats["reward"]["length_penalty_warmup"] == 0
    assert [it for *_, it, _ in calls] == list(range(c.iterations))
    nonzero = 0
    for texts, refs, lengths, repeated, cfg, _, (rewards, correct, m) in calls:
        assert (
            cfg.length_penalty_weight == c.length_penalty_weight and cfg.length_penalty_warmup == 0
        )
        assert m["reward/length_penalty_weight"] == c.length_penalty_weight  # on at it = 0 too
        assert lengths.max() <= c.max_new_tokens  # rollouts obey the reduced limit
        ok = np.array([boxed_correct(t, r) for t, r in zip(texts, refs, strict=True)])
        ok = ok.reshape(lengths.shape)
        np.testing.assert_array_equal(correct > 0, ok)
        penalty = np_length_penalty(lengths.astype(float), ok)
        want = ok + c.length_penalty_weight * penalty - cfg.repeat_penalty * repeated
        np.testing.assert_allclose(rewards, want, rtol=1e-6, atol=1e-6)
        nonzero += int(np.count_nonzero(penalty))
    assert nonzero > 0  # the penalty did shape rewards
    # the main job's own config is left as it was
    assert s.cfg.rollout.max_new_tokens == main_max and dict(s.cfg.reward) == main_reward
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(
            *(map(np.asarray, __import__("jax").tree.leaves(p)) for p in (new, params)), strict=True
        )
    )


def test_options_are_checked_by_name(tmp_path):
    cfg = compose_cfg(tmp_path)
    c = copy.deepcopy(OmegaConf.to_object(cfg.long2short))
    check(c, 40)
    assert plan(c) == ["long", "short", "merge", "merge_rs", "dpo", "rl"]
    c.methods = ["dpo"]
    c.dpo.init = "long"
    assert plan(c) == ["long", "dpo"]
    c.rl.init = "rl"
    with pytest.raises(ValueError, match="long2short.rl.init='rl'"):
        check(c, 40)
    c.rl.init = "long"
    c.rl.max_new_tokens = 40
    with pytest.raises(ValueError, match="long2short.rl.max_new_tokens=40"):
        check(c, 40)
    c.rl.max_new_tokens = 20
    c.rl.length_penalty_weight = 0.0
    with pytest.raises(ValueError, match="length_penalty_weight"):
        check(c, 40)
    c.rl.length_penalty_weight = 1.0
    c.short.format = "tiny"
    with pytest.raises(ValueError, match="long2short.short.format='tiny'"):
        check(c, 40)
