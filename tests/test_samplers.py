"""Prompt samplers against their definitions (report sec. 2.3.4)."""

import numpy as np
import pytest

from k15_jax.rl import samplers
from k15_jax.rl.samplers import SamplerConfig

BANDS = np.array(["add1"] * 40 + ["add2"] * 40 + ["add3"] * 20)


def test_update_counts_attempts_and_successes():
    state = samplers.init_state(len(BANDS))
    idx = np.array([3, 3, 7])
    correct = np.array([[1, 0, 1, 1], [0, 0, 0, 1], [1, 1, 1, 1]])
    new = samplers.update(state, idx, correct)
    assert new["attempts"][3] == 8 and new["successes"][3] == 4
    assert new["attempts"][7] == 4 and new["successes"][7] == 4
    assert new["attempts"].sum() == 12 and state["attempts"].sum() == 0  # pure


def test_prioritized_frequencies_follow_one_minus_success_with_floor():
    state = samplers.init_state(len(BANDS))
    rate = np.linspace(0, 1, len(BANDS))  # prompt i solved at rate[i]
    state["attempts"][:] = 100
    state["successes"][:] = np.round(rate * 100).astype(int)
    cfg = SamplerConfig(name="prioritized", floor=0.05)
    rng = np.random.default_rng(0)
    draws = samplers.draw(state, BANDS, 200_000, rng, cfg, iteration=0)
    freq = np.bincount(draws, minlength=len(BANDS)) / len(draws)
    weight = np.maximum(1 - state["successes"] / 100, 0.05)
    np.testing.assert_allclose(freq, weight / weight.sum(), atol=2e-3)


def test_curriculum_warmup_then_mostly_hard():
    cfg = SamplerConfig(name="curriculum", warmup_iterations=3, easy_fraction=0.25)
    state = samplers.init_state(len(BANDS))
    rng = np.random.default_rng(1)
    warm = samplers.draw(state, BANDS, 4000, rng, cfg, iteration=2)
    assert abs(np.mean(BANDS[warm] == "add3") - 0.2) < 0.03  # whole pool
    late = samplers.draw(state, BANDS, 4000, rng, cfg, iteration=3)
    # 75% from the hardest band, 25% from the whole pool (of which 20% is add3)
    assert abs(np.mean(BANDS[late] == "add3") - (0.75 + 0.25 * 0.2)) < 0.03
    cfg.hard_bands = ["add2", "add3"]
    both = samplers.draw(state, BANDS, 4000, rng, cfg, iteration=5)
    assert abs(np.mean(BANDS[both] == "add1") - 0.25 * 0.4) < 0.03


def binomial_ok(hits, n, p, z=4.5):
    """|hits - n p| within z standard deviations of Binomial(n, p)."""
    return abs(hits - n * p) <= z * np.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("hard_bands", [[], ["add3"], ["add2", "add3"]])
def test_hard_only_after_warmup(hard_bands):
    """easy_fraction=0 (the report's sec. 2.3.4: after warm-up, train solely on hard
    problems): every draw of every post-warm-up batch is from the hard bands, and they are
    all reached; warm-up batches still see the whole pool."""
    cfg = SamplerConfig(name="curriculum", warmup_iterations=2, easy_fraction=0.0)
    cfg.hard_bands = hard_bands
    hard = set(hard_bands or ["add3"])  # [] = the last band
    state, rng = samplers.init_state(len(BANDS)), np.random.default_rng(4)
    assert set(BANDS[samplers.draw(state, BANDS, 400, rng, cfg, iteration=1)]) == set(BANDS)
    drawn = np.concatenate([samplers.draw(state, BANDS, 16, rng, cfg, it) for it in range(2, 60)])
    assert set(BANDS[drawn]) == hard
    assert set(drawn) == set(np.flatnonzero(np.isin(BANDS, list(hard))))


@pytest.mark.parametrize("easy_fraction", [0.25, 0.5])
def test_mixed_share_matches_easy_fraction(easy_fraction):
    """Mixed mode: a batch of n holds round(f n) whole-pool draws and n - round(f n) hard
    ones, so the non-hard share is f * (share of non-hard prompts in the pool), within a
    binomial tolerance; each batch also holds at least n - round(f n) hard draws."""
    cfg = SamplerConfig(name="curriculum", warmup_iterations=0, easy_fraction=easy_fraction)
    state, rng = samplers.init_state(len(BANDS)), np.random.default_rng(5)
    n, iters = 32, 300
    batches = [samplers.draw(state, BANDS, n, rng, cfg, it) for it in range(iters)]
    n_easy = int(round(easy_fraction * n))
    assert all(np.sum(BANDS[b] == "add3") >= n - n_easy for b in batches)
    not_hard = sum(int(np.sum(BANDS[b] != "add3")) for b in batches)
    assert binomial_ok(not_hard, n_easy * iters, np.mean(BANDS != "add3"))


def test_staged_opens_bands_easy_to_hard():
    cfg = SamplerConfig(name="curriculum", mode="staged", stage_iterations=10)
    state = samplers.init_state(len(BANDS))
    rng = np.random.default_rng(2)
    assert set(BANDS[samplers.draw(state, BANDS, 500, rng, cfg, 0)]) == {"add1"}
    assert set(BANDS[samplers.draw(state, BANDS, 500, rng, cfg, 10)]) == {"add1", "add2"}
    assert set(BANDS[samplers.draw(state, BANDS, 500, rng, cfg, 99)]) == set(BANDS)


def test_uniform_and_errors():
    state = samplers.init_state(len(BANDS))
    rng = np.random.default_rng(3)
    draws = samplers.draw(state, BANDS, 100_000, rng, SamplerConfig(name="uniform"), 0)
    freq = np.bincount(draws, minlength=len(BANDS)) / len(draws)
    np.testing.assert_allclose(freq, 1 / len(BANDS), atol=2e-3)
    with pytest.raises(ValueError, match="sampler.name='bogus'"):
        samplers.draw(state, BANDS, 4, rng, SamplerConfig(name="bogus"), 0)
    with pytest.raises(ValueError, match="sampler.mode='hard'"):
        samplers.draw(state, BANDS, 4, rng, SamplerConfig(name="curriculum", mode="hard"), 0)
    with pytest.raises(ValueError, match="hard_bands"):
        cfg = SamplerConfig(name="curriculum", hard_bands=["add9"], warmup_iterations=0)
        samplers.draw(state, BANDS, 4, rng, cfg, 1)


def test_source_weights_set_each_sources_share_and_none_leaves_draws_unchanged():
    """Mixed sources (sizes 10 and 90, weights 3:1, base = weight / size): source A gets
    3/4 of the draws whatever its size; without weights the draws are numpy's plain ones."""
    from k15_jax.rl.samplers import SamplerConfig, draw, init_state

    bands = np.array(["a"] * 10 + ["b"] * 90)
    base = np.concatenate([np.full(10, 3 / 10), np.full(90, 1 / 90)])
    cfg = SamplerConfig(name="uniform")
    got = draw(init_state(100), bands, 20000, np.random.default_rng(0), cfg, 0, base)
    share = np.mean(got < 10)
    assert abs(share - 0.75) < 0.02, share
    plain = draw(init_state(100), bands, 50, np.random.default_rng(1), cfg, 0)
    want = np.random.default_rng(1).choice(np.arange(100), size=50, replace=False)
    np.testing.assert_array_equal(plain, want)
