"""Params hand-over into the engine; engine log-probs against the trainer's forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from k15_jax.model import forward
from k15_jax.rollout import RolloutConfig, collect, handover, make_engine
from tests.test_rollout_reference import TINY, tiny_params

CFG = RolloutConfig(
    temperature=1.0, max_new_tokens=8, max_prompt_len=6, slots=4, stop_on_repeat=False
)
REQS = [("a", [5, 6, 7]), ("b", [9]), ("c", [3, 3, 4, 10, 11])]


def full_forward_logp(params, tokens):
    """log p(token t | tokens < t) from one full forward pass; [N, T] with column 0 zero."""
    logp = jax.nn.log_softmax(forward(params, TINY, tokens)[:, :-1])
    picked = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    return np.pad(np.asarray(picked), ((0, 0), (1, 0)))


def test_engine_logprobs_equal_the_full_forward_and_move_after_an_update():
    """float32: the engine's log-probs (decode path, KV cache) are the trainer's full forward
    under the same params (the gap train.rl_step.logprob_gap logs), not under new ones."""
    p0 = tiny_params(seed=6)
    engine = make_engine(TINY, CFG, eos_id=(), params=p0)
    ro = collect(engine, REQS, k=2, iteration=0, key=jax.random.key(0))[0]
    mask = np.asarray(ro.response_mask) > 0
    assert mask.sum() == 6 * 8
    gap = np.abs(np.asarray(ro.logp) - full_forward_logp(p0, ro.tokens))[mask]
    assert gap.max() < 1e-5
    p1 = jax.tree.map(lambda x: x * 1.05, p0)
    moved = np.abs(np.asarray(ro.logp) - full_forward_logp(p1, ro.tokens))[mask]
    assert moved.mean() > 1e-3


def test_handover_replaces_params_without_aliasing():
    p0, p1 = tiny_params(seed=6), tiny_params(seed=7)
    engine = make_engine(TINY, CFG, eos_id=(), params=p0)
    first = collect(engine, REQS, k=1, iteration=0, key=jax.random.key(0))[0]
    same_engine = handover(engine, p1)
    assert same_engine is engine
    # the engine's layout: layer i of every stacked weight as its own array
    assert len(engine.params["layers"]) == TINY.num_layers
    for name, w in p1["layers"].items():
        for i, layer in enumerate(engine.params["layers"]):
            np.testing.assert_array_equal(layer[name], np.asarray(w)[i])
    for name in set(p1) - {"layers"}:
        np.testing.assert_array_equal(engine.params[name], p1[name])
    theirs = {x.unsafe_buffer_pointer() for x in jax.tree.leaves(p1)}
    assert not theirs & {x.unsafe_buffer_pointer() for x in jax.tree.leaves(engine.params)}
    second = collect(engine, REQS, k=1, iteration=1, key=jax.random.key(0))[0]
    fresh = make_engine(TINY, CFG, eos_id=(), params=p1)
    want = collect(fresh, REQS, k=1, iteration=1, key=jax.random.key(0))[0]
    np.testing.assert_array_equal(second.tokens, want.tokens)
    assert not np.array_equal(np.asarray(first.tokens), np.asarray(second.tokens))
    with pytest.raises(ValueError, match="does not match the engine's model config"):
        handover(engine, {"embed": p1["embed"]})


def test_engine_calls_refuse_the_trainers_stacked_params():
    p0 = tiny_params(seed=6)
    engine = make_engine(TINY, CFG, eos_id=(), params=p0)
    with pytest.raises(ValueError, match="pass engine.params"):
        engine.prefill(p0, [[5, 6, 7]])
    with pytest.raises(ValueError, match="stacked layers"):
        engine.generate(p0, engine.init_decode_state(), 1)
