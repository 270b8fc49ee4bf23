"""The classic reward model: value head and BCE against numpy, gradients against numpy and
finite differences, padding-invariant batched scoring."""

import jax
import jax.numpy as jnp
import numpy as np

from k15_jax.model.config import ModelConfig
from k15_jax.model.params import init_params
from k15_jax.model.tokenizer import CharTokenizer
from k15_jax.model.transformer import forward_hidden
from k15_jax.rewards import rm_classic

CFG = ModelConfig(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    max_position_embeddings=64,
)


def _np_softplus(z):
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


def _np_head_and_loss(w, b, h, lengths, y):
    last = h[np.arange(len(lengths)), lengths - 1]  # [B, D]
    z = last @ w + b
    loss = np.mean(_np_softplus(z) - y * z)
    dz = (1.0 / (1.0 + np.exp(-z)) - y) / len(y)  # d loss / d z
    return z, loss, last.T @ dz, dz.sum()


def test_head_logits_and_bce_match_numpy():
    rng = np.random.default_rng(0)
    B, T, D = 6, 9, 32
    h = rng.normal(size=(B, T, D)).astype(np.float32)
    lengths = np.array([1, 9, 4, 5, 2, 7], np.int32)
    y = np.array([1, 0, 1, 1, 0, 0], np.float32)
    head = {"w": rng.normal(size=D).astype(np.float32), "b": np.float32(0.3)}
    z_np, loss_np, gw_np, gb_np = _np_head_and_loss(
        head["w"].astype(np.float64), 0.3, h.astype(np.float64), lengths, y
    )

    z = rm_classic.head_logits(head, jnp.asarray(h), jnp.asarray(lengths))
    np.testing.assert_allclose(z, z_np, rtol=1e-5, atol=1e-5)
    loss_fn = lambda hd: rm_classic.bce_loss(rm_classic.head_logits(hd, h, lengths), y)
    np.testing.assert_allclose(loss_fn(head), loss_np, rtol=1e-5)
    g = jax.grad(loss_fn)(head)
    np.testing.assert_allclose(g["w"], gw_np, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(g["b"], gb_np, rtol=1e-4, atol=1e-6)


def test_bce_is_stable_for_large_logits():
    z = jnp.array([80.0, -80.0, 80.0, -80.0])
    y = jnp.array([1.0, 0.0, 0.0, 1.0])
    loss = rm_classic.bce_loss(z, y)
    np.testing.assert_allclose(loss, (0 + 0 + 80 + 80) / 4, rtol=1e-6)


def test_full_loss_gradient_matches_finite_differences():
    key = jax.random.key(1)
    params = {"decoder": init_params(CFG, key), "head": rm_classic.init_head(CFG, key)}
    rng = np.random.default_rng(2)
    tokens = jnp.asarray(rng.integers(4, 100, size=(4, 12)), jnp.int32)
    lengths = jnp.array([12, 5, 8, 1], jnp.int32)
    labels = jnp.array([1.0, 0.0, 1.0, 0.0])
    f = lambda p: rm_classic.loss_fn(p, CFG, tokens, lengths, labels)[0]
    grads = jax.grad(f)(params)
    # directional derivative along a random direction in the whole params pytree
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(3), len(leaves))
    direction = tree.unflatten([jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])
    eps = 1e-3
    shifted = lambda s: jax.tree.map(lambda p, d: p + s * eps * d, params, direction)
    fd = (float(f(shifted(1.0))) - float(f(shifted(-1.0)))) / (2 * eps)
    analytic = sum(
        float(jnp.vdot(g, d)) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction))
    )
    np.testing.assert_allclose(analytic, fd, rtol=2e-2)


def test_probabilities_read_the_last_real_token_whatever_the_padding():
    params = {
        "decoder": init_params(CFG, jax.random.key(4)),
        "head": rm_classic.init_head(CFG, jax.random.key(5)),
    }
    tok = CharTokenizer()
    texts = ["Q:1+2\nR:3\nA:\\boxed{3}\n", "Q:12+30\nR:42\nA:x\n", "Q:5+5\nR:10\nA:\n"]
    batched = rm_classic.probabilities(params, CFG, tok, texts, length=40, batch=8)
    for text, p in zip(texts, batched):
        ids = jnp.asarray([tok.encode(text, bos=True)], jnp.int32)
        h = forward_hidden(params["decoder"], CFG, ids)[0, -1]
        want = 1.0 / (1.0 + np.exp(-(float(h @ params["head"]["w"]) + float(params["head"]["b"]))))
        np.testing.assert_allclose(p, want, rtol=1e-4, atol=1e-6)


def test_head_declares_logical_axes():
    axes = rm_classic.head_axes(CFG)
    assert axes == {"w": ("embed",), "b": ()}
    head = rm_classic.init_head(CFG, jax.random.key(0))
    assert head["w"].shape == (CFG.hidden_size,) and head["b"].shape == ()
