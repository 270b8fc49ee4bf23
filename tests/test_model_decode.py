"""KV-cache decoding, packed rows and chunked log-probs against the full forward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from k15_jax.model import ModelConfig, decode_step, forward, init_params, prefill, token_logprobs

CFG = ModelConfig(
    vocab_size=61,
    hidden_size=48,
    intermediate_size=80,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=12,
    qkv_bias=True,
    tie_embeddings=False,
    logits_chunk=7,
)


@pytest.fixture(scope="module")
def params():
    p = init_params(CFG, jax.random.key(0))
    # non-trivial norms and biases so every parameter matters
    return jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(1), x.shape), p)


def test_kv_cache_decode_matches_forward_at_every_position(params):
    rng = np.random.default_rng(0)
    B, T, S = 4, 24, 32
    tokens = rng.integers(0, CFG.vocab_size, (B, T)).astype(np.int32)
    prompt_lens = np.array([3, 9, 1, 14], np.int32)
    full = np.asarray(forward(params, CFG, jnp.asarray(tokens)))

    # right-padded prompts: garbage after each prompt's end must not matter
    padded = np.where(np.arange(16)[None] < prompt_lens[:, None], tokens[:, :16], 7)
    last, cache = jax.jit(prefill, static_argnums=(1, 4))(
        params, CFG, jnp.asarray(padded), jnp.asarray(prompt_lens), S
    )
    np.testing.assert_allclose(last, full[np.arange(B), prompt_lens - 1], atol=1e-5)

    step = jax.jit(decode_step, static_argnums=1)
    pos = prompt_lens.copy()
    while pos.max() < T:
        # sequences at the end keep decoding a dummy token; only check the in-range ones
        tok = tokens[np.arange(B), np.minimum(pos, T - 1)]
        logits, cache = step(params, CFG, jnp.asarray(tok), cache)
        ok = pos < T
        np.testing.assert_allclose(
            np.asarray(logits)[ok], full[np.arange(B), np.minimum(pos, T - 1)][ok], atol=1e-5
        )
        pos += 1
    np.testing.assert_array_equal(np.asarray(cache["lengths"]), pos)


def test_packed_rows_match_separate_examples(params):
    rng = np.random.default_rng(1)
    lens = [5, 11, 8]
    seqs = [rng.integers(0, CFG.vocab_size, n).astype(np.int32) for n in lens]
    packed = np.concatenate(seqs)[None]
    seg = np.concatenate([np.full(n, i + 1) for i, n in enumerate(lens)])[None].astype(np.int32)
    out = np.asarray(forward(params, CFG, jnp.asarray(packed), segment_ids=jnp.asarray(seg)))
    start = 0
    for s in seqs:
        alone = np.asarray(forward(params, CFG, jnp.asarray(s[None])))[0]
        np.testing.assert_allclose(out[0, start : start + len(s)], alone, atol=1e-5)
        start += len(s)


def test_chunked_logprobs_match_log_softmax_and_gradients(params):
    rng = np.random.default_rng(2)
    tokens = jnp.asarray(rng.integers(0, CFG.vocab_size, (3, 23)).astype(np.int32))
    logits = forward(params, CFG, tokens)
    ref = jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]), tokens[:, 1:, None], axis=-1)[
        ..., 0
    ]
    logp = token_logprobs(params, CFG, tokens)  # chunk 7 does not divide 22
    np.testing.assert_allclose(logp[:, 1:], ref, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(logp[:, 0]), 0.0)

    w = jnp.asarray(rng.normal(size=(3, 22)).astype(np.float32))
    g1 = jax.grad(lambda p: jnp.sum(token_logprobs(p, CFG, tokens)[:, 1:] * w))(params)
    g2 = jax.grad(
        lambda p: jnp.sum(
            jnp.take_along_axis(
                jax.nn.log_softmax(forward(p, CFG, tokens)[:, :-1]), tokens[:, 1:, None], -1
            )[..., 0]
            * w
        )
    )(params)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)


def test_entropy_matches_softmax_entropy(params):
    tokens = jnp.asarray(np.random.default_rng(3).integers(0, 61, (2, 9)).astype(np.int32))
    _, ent = token_logprobs(params, CFG, tokens, return_entropy=True)
    p = jax.nn.softmax(forward(params, CFG, tokens)[:, :-1])
    ref = -jnp.sum(p * jnp.log(p), -1)
    np.testing.assert_allclose(ent[:, 1:], ref, atol=1e-4)
