"""Acceptance 3: repeat detection stops a looping sequence and leaves a normal one alone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from k15_jax.model import ModelConfig
from k15_jax.rollout import FINISH_EOS, FINISH_REPEAT, RolloutConfig, collect, make_engine
from k15_jax.rollout.repeat import first_repeat, is_repeating, repeat_flags, window_from_response


@pytest.mark.parametrize("ngram,repeats,window", [(1, 4, 8), (3, 2, 12), (4, 3, 40)])
def test_device_detector_matches_reference_rule(ngram, repeats, window):
    rng = np.random.default_rng(ngram)
    seqs = []
    for i in range(300):
        n = int(rng.integers(0, 2 * window))
        if i % 3 == 0:  # periodic tails so that positives are frequent
            period = int(rng.integers(1, 6))
            unit = rng.integers(0, 5, period).tolist()
            seqs.append((rng.integers(0, 3, n).tolist() + unit * 20)[: n + 2 * period + 3])
        else:
            seqs.append(rng.integers(0, 3 if i % 2 else 6, n).tolist())
    win = np.stack([window_from_response(s, window) for s in seqs])
    got = np.asarray(jax.jit(repeat_flags, static_argnums=(1, 2))(win, ngram, repeats))
    want = np.array([is_repeating(s, ngram, repeats, window) for s in seqs])
    assert 20 < want.sum() < len(seqs) - 20  # both outcomes well represented
    np.testing.assert_array_equal(got, want)


def test_reference_rule_by_hand():
    assert is_repeating([1, 2, 3, 1, 2, 3, 1, 2, 3], ngram=3, min_repeats=3, window=9)
    assert not is_repeating([1, 2, 3, 1, 2, 3, 1, 2, 3], ngram=3, min_repeats=3, window=8)
    assert not is_repeating([1, 2, 3, 4, 1, 2, 3, 5], ngram=3, min_repeats=2, window=8)
    assert is_repeating([7, 7, 7], ngram=1, min_repeats=3, window=3)
    assert first_repeat([9, 1, 2, 1, 2, 1, 2], ngram=2, min_repeats=3, window=10) == 7


def chain_model():
    """A model whose greedy next token is next_token[current token] (layers do nothing).

    Embeddings are one-hot (D = V), every layer's output projections are zero so the
    residual stream stays one-hot, and the untied head maps token t to next_token[t].
    """
    V = 64
    cfg = ModelConfig(
        vocab_size=V,
        hidden_size=V,
        intermediate_size=16,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        head_dim=8,
        tie_embeddings=False,
    )
    nxt = np.arange(V)
    nxt[10:40] = np.arange(11, 41)  # 10 -> 11 -> ... -> 40 -> eos (2): no repeats
    nxt[40] = 2
    nxt[50:53] = [51, 52, 50]  # a 3-cycle
    head = np.zeros((V, V), np.float32)
    head[np.arange(V), nxt] = 1.0
    L, H, G, Dh, F = 1, 2, 1, 8, 16
    zeros = lambda *s: jnp.zeros(s, jnp.float32)
    params = {
        "embed": jnp.eye(V, dtype=jnp.float32),
        "lm_head": jnp.asarray(head),
        "final_norm": jnp.ones((V,)),
        "layers": {
            "attn_norm": jnp.ones((L, V)),
            "mlp_norm": jnp.ones((L, V)),
            "wq": zeros(L, V, H, Dh),
            "wk": zeros(L, V, G, Dh),
            "wv": zeros(L, V, G, Dh),
            "wo": zeros(L, H, Dh, V),
            "w_gate": zeros(L, V, F),
            "w_up": zeros(L, V, F),
            "w_down": zeros(L, F, V),
        },
    }
    return cfg, params


def test_looping_sequence_is_stopped_and_normal_one_is_not():
    cfg, params = chain_model()
    rc = RolloutConfig(
        greedy=True,
        max_new_tokens=48,
        max_prompt_len=8,
        slots=2,
        repeat_ngram=4,
        repeat_min_repeats=3,
        repeat_window=32,
    )
    engine = make_engine(cfg, rc, eos_id=2, params=params)
    reqs = [("loop", [5, 50]), ("walk", [3, 10])]
    ro, ids, _, stats = collect(engine, reqs, k=1, iteration=0, key=jax.random.key(0))
    loop_resp = [51, 52, 50] * 16
    walk_resp = list(range(11, 41)) + [2]
    want = first_repeat(loop_resp, 4, 3, 32)
    assert want == 4 + 2 * 3  # the 4-gram seen 3 times: 4 + (3 - 1) * period tokens
    tokens, length = np.asarray(ro.tokens), np.asarray(ro.length)
    assert ids == ["loop", "walk"]
    assert int(ro.finish[0]) == FINISH_REPEAT and length[0] == want
    assert tokens[0, 2 : 2 + want].tolist() == loop_resp[:want]
    assert int(ro.finish[1]) == FINISH_EOS and length[1] == len(walk_resp)
    assert tokens[1, 2 : 2 + length[1]].tolist() == walk_resp
    assert stats["finish_repeat"] == 1 and stats["repeat_rate"] == 0.5

    # without the detector the loop runs to max_new_tokens
    off = make_engine(
        cfg,
        RolloutConfig(
            greedy=True, max_new_tokens=48, max_prompt_len=8, slots=2, stop_on_repeat=False
        ),
        eos_id=2,
        params=params,
    )
    ro = collect(off, reqs[:1], k=1, iteration=0, key=jax.random.key(0))[0]
    assert int(ro.length[0]) == 48
    assert np.asarray(ro.tokens)[0, 2:50].tolist() == loop_resp
