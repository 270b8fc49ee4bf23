"""Prefix sharing (`RolloutConfig.share_prefix`): one prompt prefill per group, fresh and
continued (partial rollouts), with the same sampled tokens as one prefill per sample."""

import dataclasses

import jax
import numpy as np

from k15_jax.model import forward
from k15_jax.rollout import RolloutConfig, collect, make_engine
from k15_jax.rollout.steps import MIN_PREFILL_LEN
from tests.test_rollout_reference import TINY, tiny_params

K = 4
CFG = RolloutConfig(
    temperature=1.0,
    top_p=0.95,
    max_new_tokens=14,
    max_prompt_len=8,
    slots=6,  # fewer than the 12 trajectories: samples of one group span refills
    steps_per_sync=2,
    stop_on_repeat=False,
    partial=True,
    budget_tokens=3,
)
REQS = [("a", [5, 6, 7], 14), ("b", [9], 9), ("c", [3, 3, 4, 10, 11, 12, 13], 14)]


def run(engine, cfg, iterations=6):
    """collect over iterations until every group is back: request id -> (rows of the
    group's K samples: tokens, logp, version), and the summed stats."""
    buffer, out, totals = None, {}, {}
    for it in range(iterations):
        reqs = REQS if it == 0 else []
        ro, ids, buffer, stats = collect(
            engine, reqs, k=K, cfg=cfg, iteration=it, key=jax.random.key(7), buffer=buffer
        )
        for g, rid in enumerate(ids):
            rows = slice(g * K, (g + 1) * K)
            out[rid] = tuple(np.asarray(a)[rows] for a in (ro.tokens, ro.logp, ro.version))
        totals = {k: totals.get(k, 0.0) + v for k, v in stats.items()}
    assert buffer.num_groups == 0 and sorted(out) == ["a", "b", "c"]
    return out, totals


def test_sampled_tokens_identical_with_and_without_prefix_sharing():
    engine = make_engine(TINY, CFG, eos_id=4, params=tiny_params(seed=5))
    shared, s_stats = run(engine, CFG)
    alone, a_stats = run(engine, dataclasses.replace(CFG, share_prefix=False))
    for rid in shared:
        (tok, lp, ver), (tok2, lp2, ver2) = shared[rid], alone[rid]
        np.testing.assert_array_equal(tok, tok2, err_msg=rid)
        np.testing.assert_array_equal(ver, ver2, err_msg=rid)
        # prefill calls of other row counts round differently in the last bit (~1e-6)
        np.testing.assert_allclose(lp, lp2, atol=1e-5, err_msg=rid)
    versions = np.concatenate([v[2].ravel() for v in shared.values()])
    assert versions.max() >= 2, "the test needs trajectories continued over several calls"
    assert s_stats["trajectories_continued"] == a_stats["trajectories_continued"] > K
    # shared: one prompt prefill per group per call; alone: one per trajectory
    assert s_stats["prefill_seqs"] < a_stats["prefill_seqs"]
    assert a_stats["prefill_seqs"] == a_stats["trajectories_decoded"]
    saved = a_stats["prefill_tokens"] - s_stats["prefill_tokens"]
    assert saved > 0 and s_stats["extend_tokens"] == a_stats["extend_tokens"] > 0
    samples = [tuple(r) for v in shared.values() for r in v[0]]
    assert len(set(samples)) == len(samples)  # K distinct samples per prompt, not K copies


def test_extension_matches_one_prefill_of_prompt_and_response():
    """prefill(prompt) + extend(response) holds the KV of prefill(prompt + response), and the
    decode step from it gives forward's next-token logits."""
    params = tiny_params(seed=2)
    engine = make_engine(TINY, CFG, eos_id=4, params=params)
    prompts = [[5, 6, 7], [9], [3, 3, 4, 10, 11, 12, 13]]
    responses = [[8, 1, 2, 30, 31], [4, 17] * 10, [20]]  # 20 + 1 tokens: the cache is 22
    ep = engine.params
    pre = engine.prefill(ep, prompts)
    ext = engine.extend(ep, pre, [0, 1, 2], [p[-1] for p in prompts], responses)
    whole = engine.prefill(ep, [p + r for p, r in zip(prompts, responses)])
    n = [len(p) + len(r) - 1 for p, r in zip(prompts, responses)]
    np.testing.assert_array_equal(np.asarray(ext.lengths)[:3], n)
    np.testing.assert_array_equal(np.asarray(ext.token)[:3], [r[-1] for r in responses])
    for i, m in enumerate(n):
        for a, b in zip(ext.k, whole.k):  # keys [P, G, Dh, C] per layer
            np.testing.assert_allclose(a[i, ..., :m], b[i, ..., :m], atol=2e-5)
        for a, b in zip(ext.v, whole.v):  # values [P, G, C, Dh]
            np.testing.assert_allclose(a[i, :, :m], b[i, :, :m], atol=2e-5)
    assert max(n) > MIN_PREFILL_LEN  # past the smallest bucket
    state = engine.insert(
        ext, engine.init_decode_state(), [{"slot": i, "row": i} for i in range(3)]
    )
    _, out = engine.generate(ep, state, 1)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        want = forward(params, TINY, np.asarray([p + r], np.int32))[0, -1]
        got = np.asarray(out.logp)[0, i]
        tok = int(np.asarray(out.tokens)[0, i])
        np.testing.assert_allclose(got, jax.nn.log_softmax(want)[tok], atol=1e-4)
