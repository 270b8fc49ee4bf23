"""Acceptance 2: partial rollouts continued over iterations equal one uninterrupted run; the
per-token iteration tags are right; the buffer survives an orbax save/restore."""

import dataclasses

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from k15_jax.rollout import RolloutBuffer, RolloutConfig, collect, make_engine
from tests.test_rollout_reference import TINY, greedy_reference, pick_stop_token, tiny_params

MAX_NEW, BUDGET, K = 12, 4, 2
CFG = RolloutConfig(
    greedy=True,
    max_new_tokens=MAX_NEW,
    max_prompt_len=10,
    slots=4,
    steps_per_sync=3,
    stop_on_repeat=False,
    partial=True,
    budget_tokens=BUDGET,
)


def save_restore(buffer: RolloutBuffer, path) -> RolloutBuffer:
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(path, buffer.to_state())
    with ocp.StandardCheckpointer() as ckpt:
        return RolloutBuffer.from_state(ckpt.restore(path))


def run_iterations(engine, reqs, cfg, key, tmp_path=None, max_iters=10):
    """Calls collect until the buffer is empty; returns {request id: (rows, iteration)}."""
    buffer, out = None, {}
    for it in range(max_iters):
        ro, ids, buffer, stats = collect(
            engine, reqs if it == 0 else [], k=K, cfg=cfg, iteration=it, key=key, buffer=buffer
        )
        rows = jax.tree.map(np.asarray, ro)
        for g, rid in enumerate(ids):
            out[rid] = (jax.tree.map(lambda x, g=g: x[g * K : (g + 1) * K], rows), it)
        if tmp_path is not None:
            buffer = save_restore(buffer, tmp_path / f"buf{it}")
        if buffer.num_groups == 0:
            return out, it
    raise AssertionError("partial rollouts did not drain")


def test_partial_rollouts_equal_uninterrupted_greedy(tmp_path):
    params = tiny_params(seed=1)
    rng = np.random.default_rng(1)
    prompts = [rng.integers(3, TINY.vocab_size, n).tolist() for n in (3, 8, 1, 5, 10)]
    free_run = greedy_reference(params, TINY, prompts, MAX_NEW)
    eos = pick_stop_token([r for r, _, _ in free_run], min_step=BUDGET)
    ref = greedy_reference(params, TINY, prompts, MAX_NEW, stop_ids=(eos,))
    lengths = [len(r) for r, _, _ in ref]
    assert min(lengths) <= BUDGET < MAX_NEW == max(lengths), lengths  # short and long ones

    engine = make_engine(TINY, CFG, eos_id=eos, params=params)
    reqs = [(f"p{i}", p) for i, p in enumerate(prompts)]
    # first call by hand: long samples wait in the buffer with their finished siblings
    ro, ids, buffer, stats = collect(engine, reqs, k=K, iteration=0, key=jax.random.key(0))
    assert ids == [f"p{i}" for i, n in enumerate(lengths) if n <= BUDGET]
    assert buffer.request_ids == [f"p{i}" for i, n in enumerate(lengths) if n > BUDGET]
    for g in buffer.groups:
        assert [len(t.response) for t in g] == [BUDGET] * K
    assert stats["budget_stops"] == K * sum(n > BUDGET for n in lengths)

    out, last_it = run_iterations(engine, reqs, CFG, jax.random.key(0), tmp_path)
    assert last_it == -(-MAX_NEW // BUDGET) - 1  # 12 tokens at 4 per call: 3 calls
    assert sorted(out) == sorted(r for r, _ in reqs)
    for i, (prompt, (resp, ref_lp, _)) in enumerate(zip(prompts, ref)):
        rows, it = out[f"p{i}"]
        assert it == (len(resp) - 1) // BUDGET  # returned as soon as its last token exists
        p, n = len(prompt), len(resp)
        for j in range(K):
            assert rows.tokens[j, :p].tolist() == prompt
            assert rows.tokens[j, p : p + n].tolist() == resp
            assert rows.length[j] == n and rows.prompt_len[j] == p
            np.testing.assert_allclose(rows.logp[j, p : p + n], ref_lp, atol=1e-5)
            # token t was produced in call t // BUDGET
            assert rows.version[j, p : p + n].tolist() == [t // BUDGET for t in range(n)]
            assert np.all(rows.version[j, :p] == -1) and np.all(rows.version[j, p + n :] == -1)
            assert rows.response_mask[j].sum() == n


def test_sampled_partial_rollouts_reproduce_the_uninterrupted_samples(tmp_path):
    params = tiny_params(seed=2)
    cfg = dataclasses.replace(CFG, greedy=False, temperature=0.8, top_k=20)
    engine = make_engine(TINY, cfg, eos_id=(), params=params)
    reqs = [("a", [5, 6, 7]), ("b", [9]), ("c", [3, 3, 4, 10, 11])]
    key = jax.random.key(7)
    whole = collect(
        engine, reqs, k=K, cfg=dataclasses.replace(cfg, partial=False), iteration=0, key=key
    )[0]
    out, _ = run_iterations(engine, reqs, cfg, key, tmp_path)
    for g, (rid, _) in enumerate(reqs):
        rows = out[rid][0]
        np.testing.assert_array_equal(rows.tokens, np.asarray(whole.tokens)[g * K : g * K + K])
        np.testing.assert_allclose(rows.logp, np.asarray(whole.logp)[g * K : g * K + K], atol=1e-5)
    # the K samples of a request differ (per-sample keys), and so do requests
    toks = np.asarray(whole.tokens)
    assert not np.array_equal(toks[0], toks[1]) and not np.array_equal(toks[0], toks[2])


@pytest.mark.parametrize("empty", [True, False])
def test_buffer_state_round_trips(tmp_path, empty):
    params = tiny_params()
    engine = make_engine(TINY, CFG, eos_id=(), params=params)
    reqs = [] if empty else [("x", [4, 5]), ("é-unicode", [6])]
    _, _, buffer, _ = collect(engine, reqs, k=K, iteration=5, key=jax.random.key(0))
    assert buffer.num_groups == (0 if empty else 2)
    back = save_restore(buffer, tmp_path / "b")
    assert back.request_ids == buffer.request_ids
    for g0, g1 in zip(buffer.groups, back.groups):
        for t0, t1 in zip(g0, g1):
            for f in dataclasses.fields(t0):
                a, b = getattr(t0, f.name), getattr(t1, f.name)
                assert np.array_equal(np.asarray(a), np.asarray(b)), f.name
    if not empty:  # a restored buffer continues like the original
        a = collect(engine, [], k=K, iteration=6, key=jax.random.key(0), buffer=buffer)[0]
        b = collect(engine, [], k=K, iteration=6, key=jax.random.key(0), buffer=back)[0]
        jax.tree.map(np.testing.assert_array_equal, a, b)
        with pytest.raises(ValueError, match="has 2 samples but collect got k=3"):
            collect(engine, [], k=3, iteration=6, key=jax.random.key(0), buffer=back)
        with pytest.raises(ValueError, match="appears twice"):
            collect(engine, [("x", [1])], k=K, iteration=6, key=jax.random.key(0), buffer=back)
