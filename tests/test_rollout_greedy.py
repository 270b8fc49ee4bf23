"""Acceptance 1 and 7: greedy rollouts equal step-by-step argmax over `forward`; bad input fails
clearly and never loses a request."""

import dataclasses

import jax
import numpy as np
import pytest

from k15_jax.rollout import (
    FINISH_EOS,
    FINISH_LENGTH,
    FINISH_REPEAT,
    RolloutConfig,
    collect,
    make_engine,
)
from tests.test_rollout_reference import TINY, greedy_reference, pick_stop_token, tiny_params

MAX_NEW, MAX_PROMPT = 12, 10
CFG = RolloutConfig(
    greedy=True,
    max_new_tokens=MAX_NEW,
    max_prompt_len=MAX_PROMPT,
    slots=4,
    steps_per_sync=3,
    stop_on_repeat=False,
)
FINISH = {"eos": FINISH_EOS, "length": FINISH_LENGTH, "repeat": FINISH_REPEAT}


@pytest.fixture(scope="module")
def setup():
    params = tiny_params()
    rng = np.random.default_rng(0)
    # 9 prompts of lengths 1..10 for 4 slots: continuous batching refills slots mid-run
    lens = [1, 10, 4, 7, 2, 9, 5, 3, 8]
    prompts = [rng.integers(3, TINY.vocab_size, n).tolist() for n in lens]
    free_run = greedy_reference(params, TINY, prompts, MAX_NEW)
    eos = pick_stop_token([r for r, _, _ in free_run])
    return params, prompts, eos


def check_against_reference(ro, ids, prompts, ref, k=1):
    assert ids == [f"p{i}" for i in range(len(prompts))]
    tokens, mask = np.asarray(ro.tokens), np.asarray(ro.response_mask)
    logp, plen, length = np.asarray(ro.logp), np.asarray(ro.prompt_len), np.asarray(ro.length)
    assert tokens.shape == (len(prompts) * k, MAX_PROMPT + MAX_NEW)
    for i, (prompt, (resp, ref_lp, finish)) in enumerate(zip(prompts, ref)):
        for j in range(k):
            r = i * k + j
            n, p = len(resp), len(prompt)
            assert plen[r] == p and length[r] == n
            assert tokens[r, :p].tolist() == prompt
            assert tokens[r, p : p + n].tolist() == resp, (i, j)
            assert np.all(tokens[r, p + n :] == 0)  # pad_id
            assert mask[r].tolist() == [0.0] * p + [1.0] * n + [0.0] * (mask.shape[1] - p - n)
            np.testing.assert_allclose(logp[r, p : p + n], ref_lp, atol=1e-5)
            assert np.all(logp[r, :p] == 0) and np.all(logp[r, p + n :] == 0)
            assert int(ro.finish[r]) == FINISH[finish]
            assert int(ro.group[r]) == i


def test_greedy_continuous_batching_matches_forward_argmax(setup):
    params, prompts, eos = setup
    ref = greedy_reference(params, TINY, prompts, MAX_NEW, stop_ids=(eos,))
    finishes = {f for _, _, f in ref}
    assert finishes == {"eos", "length"}, "the test needs both early and full-length stops"
    engine = make_engine(TINY, CFG, eos_id=eos, params=params)
    reqs = [(f"p{i}", p) for i, p in enumerate(prompts)]
    ro, ids, buf, stats = collect(engine, reqs, k=2, iteration=3, key=jax.random.key(0))
    check_against_reference(ro, ids, prompts, ref, k=2)
    assert buf.num_groups == 0
    assert np.all(np.asarray(ro.version)[np.asarray(ro.response_mask) > 0] == 3)
    assert stats["tokens_generated"] == 2 * sum(len(r) for r, _, _ in ref)
    # the 2 samples of a prompt share one prefill (9 prompts -> 9 prefilled sequences)
    assert stats["prefill_seqs"] == len(prompts)


def test_greedy_with_repeat_detection_matches_reference_rule(setup):
    params, prompts, eos = setup
    rep = (2, 3, 8)  # aggressive thresholds so the random model's loops trigger it
    ref = greedy_reference(params, TINY, prompts, MAX_NEW, stop_ids=(eos,), repeat=rep)
    assert "repeat" in {f for _, _, f in ref}
    cfg = dataclasses.replace(
        CFG, stop_on_repeat=True, repeat_ngram=2, repeat_min_repeats=3, repeat_window=8
    )
    engine = make_engine(TINY, cfg, eos_id=eos, params=params)
    reqs = [(f"p{i}", p) for i, p in enumerate(prompts)]
    ro, ids, _, stats = collect(engine, reqs, k=1, iteration=0, key=jax.random.key(0))
    check_against_reference(ro, ids, prompts, ref)
    assert stats["finish_repeat"] == sum(f == "repeat" for _, _, f in ref)


def test_padding_groups_and_per_request_length(setup):
    params, prompts, eos = setup
    engine = make_engine(TINY, CFG, eos_id=(), params=params)
    reqs = [("a", prompts[0], 5), ("b", prompts[1])]
    ro, ids, _, _ = collect(engine, reqs, k=1, iteration=0, key=jax.random.key(0), pad_groups_to=4)
    assert ids == ["a", "b"] and ro.tokens.shape == (4, MAX_PROMPT + MAX_NEW)
    assert np.asarray(ro.length).tolist() == [5, MAX_NEW, 0, 0]
    assert np.asarray(ro.group).tolist() == [0, 1, -1, -1]
    assert np.asarray(ro.response_mask)[2:].sum() == 0
    ref = greedy_reference(params, TINY, [prompts[0]], 5)[0][0]
    assert np.asarray(ro.tokens)[0, 1:6].tolist() == ref


def test_bad_input_fails_clearly_and_loses_nothing(setup):
    params, prompts, eos = setup
    engine = make_engine(TINY, CFG, eos_id=eos, params=params)
    key = jax.random.key(0)
    good = [("ok", [5, 6])]
    with pytest.raises(ValueError, match="exceeds rollout.max_prompt_len=10"):
        collect(engine, good + [("long", [3] * 11)], k=1, iteration=0, key=key)
    with pytest.raises(ValueError, match="'empty' has an empty prompt"):
        collect(engine, good + [("empty", [])], k=1, iteration=0, key=key)
    with pytest.raises(ValueError, match="appears twice"):
        collect(engine, good + good, k=1, iteration=0, key=key)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 61\)"):
        collect(engine, [("bad", [5, 61])], k=1, iteration=0, key=key)
    with pytest.raises(ValueError, match="rollout.greedy=False differs"):
        collect(engine, good, k=1, cfg=dataclasses.replace(CFG, greedy=False), iteration=0, key=key)
    with pytest.raises(ValueError, match="rollout.temperature"):
        make_engine(TINY, dataclasses.replace(CFG, greedy=False, temperature=0.0), eos_id=eos)
    # more samples per prompt than slots: groups straddle refills, nothing goes missing
    reqs = [(f"p{i}", p) for i, p in enumerate(prompts[:3])]
    ro, ids, buf, stats = collect(engine, reqs, k=5, iteration=0, key=key)
    assert ids == ["p0", "p1", "p2"] and ro.tokens.shape[0] == 15
    assert np.all(np.asarray(ro.length) > 0) and buf.num_groups == 0
    assert stats["sequences_returned"] == 15


def test_long_responses_with_short_attention_spans(setup):
    """C = 4 + 76 = 80 > 64: early chunks attend over a 64-position span, later ones over
    the whole cache; tokens and log-probs still match the reference."""
    params, prompts, _ = setup
    cfg = dataclasses.replace(CFG, max_new_tokens=76, max_prompt_len=4, steps_per_sync=8)
    engine = make_engine(TINY, cfg, eos_id=(), params=params)
    assert engine.attention_span(4 + 8) == 64 and engine.attention_span(70) is None
    short = [p[:4] for p in prompts[:3]]
    ref = greedy_reference(params, TINY, short, 76)
    ro, _, _, _ = collect(
        engine, [(f"s{i}", p) for i, p in enumerate(short)], k=1, iteration=0, key=jax.random.key(0)
    )
    for i, (p, (resp, lps, _)) in enumerate(zip(short, ref)):
        n = len(p)
        assert np.asarray(ro.tokens)[i, n : n + 76].tolist() == resp
        np.testing.assert_allclose(np.asarray(ro.logp)[i, n : n + 76], lps, atol=1e-5)
