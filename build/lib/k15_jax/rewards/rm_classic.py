"""The classic reward model (report sec. 2.3.5; InstructGPT-style): the decoder with a scalar
value head on the last token of `Q:question / R:reference / A:response`, trained with binary
cross-entropy on labelled triples; it outputs the probability that the response is correct.

    z = h[b, len_b - 1] . w + c          h: final-normed hidden states [B, T, D]
    p = sigmoid(z)
    loss = mean_b( softplus(z_b) - y_b z_b )      (= -y log p - (1 - y) log(1 - p))

Params: {"decoder": the policy's params pytree, "head": {"w": [D] ("embed",), "b": [] ()}}.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from k15_jax.model.config import ModelConfig
from k15_jax.model.params import ParamSpec
from k15_jax.model.transformer import forward_hidden


@dataclasses.dataclass
class ClassicRMConfig:
    steps: int = 400
    batch: int = 32
    lr: float = 1e-3
    warmup_steps: int = 20
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0


def head_specs(cfg: ModelConfig) -> dict:
    """The value head's shapes and logical axes."""
    D = cfg.hidden_size
    return {
        "w": ParamSpec((D,), ("embed",), "normal", D),
        "b": ParamSpec((), (), "zeros"),
    }


def head_axes(cfg: ModelConfig) -> dict:
    return {k: s.axes for k, s in head_specs(cfg).items()}


def init_head(cfg: ModelConfig, key: jax.Array) -> dict:
    specs = head_specs(cfg)
    w = specs["w"]
    return {
        "w": jax.random.normal(key, w.shape, jnp.float32) / math.sqrt(w.fan_in),
        "b": jnp.zeros((), jnp.float32),
    }


def head_logits(head: dict, hidden: jax.Array, lengths: jax.Array) -> jax.Array:
    """hidden [B, T, D], lengths [B] (tokens per row, right-padded) -> logits z [B]."""
    last = jnp.take_along_axis(hidden, (lengths - 1)[:, None, None].astype(jnp.int32), axis=1)
    return jnp.einsum("bd,d->b", last[:, 0].astype(jnp.float32), head["w"]) + head["b"]


def bce_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean binary cross-entropy from logits [B] and labels [B] in {0, 1} (stable form)."""
    return jnp.mean(jax.nn.softplus(logits) - labels * logits)


def logits(params: dict, cfg: ModelConfig, tokens: jax.Array, lengths: jax.Array) -> jax.Array:
    """tokens [B, T] int32 (right-padded), lengths [B] -> logits [B]."""
    return head_logits(params["head"], forward_hidden(params["decoder"], cfg, tokens), lengths)


def loss_fn(params: dict, cfg: ModelConfig, tokens, lengths, labels):
    z = logits(params, cfg, tokens, lengths)
    loss = bce_loss(z, labels)
    acc = jnp.mean((z > 0) == (labels > 0.5))
    return loss, {"rm/bce": loss, "rm/train_acc": acc}


def make_optimizer(c: ClassicRMConfig) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, c.lr, c.warmup_steps, max(c.steps, c.warmup_steps + 1), c.lr * 0.05
    )
    return optax.chain(
        optax.clip_by_global_norm(c.max_grad_norm),
        optax.adamw(schedule, weight_decay=c.weight_decay),
    )


def make_step(cfg: ModelConfig, optimizer: optax.GradientTransformation):
    """Jitted (params, opt_state, tokens, lengths, labels) -> (params, opt_state, metrics)."""

    @jax.jit
    def step(params, opt_state, tokens, lengths, labels):
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, cfg, tokens, lengths, labels
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        metrics["rm/grad_norm"] = optax.global_norm(grads)
        return optax.apply_updates(params, updates), opt_state, metrics

    return step


def encode(texts: list[str], tokenizer, length: int, pad_id: int, rows: int | None = None):
    """Texts -> (tokens [R, length] right-padded with BOS first, lengths [R]); R = rows
    (extra rows are one-token padding) or len(texts)."""
    R = rows or len(texts)
    tokens = np.full((R, length), pad_id, np.int32)
    lengths = np.ones((R,), np.int32)
    for i, t in enumerate(texts):
        ids = tokenizer.encode(t, bos=True)
        if len(ids) > length:
            raise ValueError(f"reward-model input of {len(ids)} tokens exceeds {length}: {t!r}")
        tokens[i, : len(ids)] = ids
        lengths[i] = len(ids)
    return tokens, lengths


@functools.partial(jax.jit, static_argnums=1)
def _probs(params, cfg, tokens, lengths):
    return jax.nn.sigmoid(logits(params, cfg, tokens, lengths))


def probabilities(
    params, cfg: ModelConfig, tokenizer, texts: list[str], length: int, batch: int = 128
) -> np.ndarray:
    """P(correct) [N] for N input texts: batched forwards of `batch` rows (one compile)."""
    out = []
    for i in range(0, len(texts), batch):
        part = texts[i : i + batch]
        tokens, lengths = encode(part, tokenizer, length, tokenizer.pad_id, rows=batch)
        out.append(np.asarray(_probs(params, cfg, tokens, lengths))[: len(part)])
    return np.concatenate(out) if out else np.zeros((0,), np.float32)
