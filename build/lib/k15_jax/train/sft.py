"""Long-CoT SFT warm-up (report sec. 2.2) with sequence packing.

Examples (prompt ids, response ids) are packed first-fit into rows of `row_len` tokens with
segment ids; the loss is the mean negative log-likelihood of response tokens.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from k15_jax.model.config import ModelConfig
from k15_jax.model.logprobs import token_logprobs


@dataclasses.dataclass
class SFTConfig:
    steps: int = 600
    rows: int = 16
    row_len: int = 128
    lr: float = 2e-3
    warmup_steps: int = 50
    end_lr_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    checkpoint_every: int = 200
    microbatches: int = 1  # gradient accumulation: rows split into this many passes


def pack(
    examples: list[tuple], rows: int, row_len: int, pad_id: int, placement: list | None = None
):
    """First-fit packing. Returns tokens, segment_ids, loss_mask, each [rows, row_len].

    examples: (prompt ids, response ids) or (prompt ids, response ids, per-token loss
    weights of the response). Segment ids start at 1 (0 marks padding); loss_mask is 1 (or
    the given weight) on response tokens, 0 elsewhere. Examples that do not fit in the
    remaining rows are dropped (counted in the return).
    placement (optional list): gets each example's row (-1 if dropped), in order, so that
    per-example data (images) can follow its tokens.
    """
    tokens = np.full((rows, row_len), pad_id, np.int32)
    seg = np.zeros((rows, row_len), np.int32)
    mask = np.zeros((rows, row_len), np.float32)
    fill = np.zeros(rows, np.int64)
    n_seg = np.zeros(rows, np.int64)
    dropped = 0
    for prompt, response, *weights in examples:
        n = len(prompt) + len(response)
        if n > row_len:
            raise ValueError(
                f"an SFT example of {n} tokens exceeds sft.row_len={row_len}; raise sft.row_len"
            )
        free = np.flatnonzero(fill + n <= row_len)
        if len(free) == 0:
            dropped += 1
            if placement is not None:
                placement.append(-1)
            continue
        r, s = free[0], fill[free[0]]
        if placement is not None:
            placement.append(int(r))
        tokens[r, s : s + n] = prompt + response
        n_seg[r] += 1
        seg[r, s : s + n] = n_seg[r]
        mask[r, s + len(prompt) : s + n] = weights[0] if weights else 1.0
        fill[r] += n
    return tokens, seg, mask, dropped


def sft_loss(params, cfg: ModelConfig, tokens, segment_ids, mask, images=None):
    """Mask-weighted mean NLL. tokens, segment_ids, mask: [R, L] (mask 0/1, or weights);
    images [R, M, P, C] (model.vision): each row's images in the order of its placeholders."""
    logp = token_logprobs(params, cfg, tokens, segment_ids=segment_ids, images=images)
    nll = -jnp.sum(jnp.where(mask > 0, mask * logp, 0.0)) / jnp.maximum(mask.sum(), 1.0)
    return nll, {"sft/nll": nll, "sft/tokens": mask.sum()}


def make_optimizer(cfg: SFTConfig) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0,
        cfg.lr,
        cfg.warmup_steps,
        max(cfg.steps, cfg.warmup_steps + 1),
        cfg.lr * cfg.end_lr_ratio,
    )
    return optax.chain(
        optax.clip_by_global_norm(cfg.max_grad_norm),
        optax.adamw(schedule, weight_decay=cfg.weight_decay),
    )


def split_micro(x: jax.Array, microbatches: int) -> jax.Array:
    """[R, ...] -> [m, R/m, ...], micro-batch j holding rows j, j+m, j+2m, ...

    Interleaved rather than contiguous: with rows split over devices, every device holds
    an equal share of every micro-batch, so no pass leaves devices idle or moves rows.
    """
    R = x.shape[0]
    if R % microbatches:
        raise ValueError(
            f"{R} rows do not split into microbatches={microbatches}; choose a divisor of {R}"
        )
    return x.reshape(R // microbatches, microbatches, *x.shape[1:]).swapaxes(0, 1)


def accumulated_grads(
    params, cfg: ModelConfig, tokens, segment_ids, mask, microbatches: int, images=None
):
    """`sft_loss` and its gradient, summed over micro-batches of rows (gradient accumulation).

        nll = sum_j sum_{t in micro j} mask * (-logp) / max(sum(mask), 1)

    The token count of the whole batch divides every micro-batch's sum, so nll and its
    gradient equal `sft_loss` on the whole batch (up to float summation order) while the
    activations held at once are those of R/m rows. Returns ((nll, metrics), grads).
    """
    denom = jnp.maximum(mask.sum(), 1.0)

    def micro_loss(p, tok, seg, m, img):
        logp = token_logprobs(p, cfg, tok, segment_ids=seg, images=img)
        return -jnp.sum(jnp.where(m > 0, m * logp, 0.0)) / denom

    def body(acc, xs):
        loss, grads = jax.value_and_grad(micro_loss)(params, *xs)
        return (acc[0] + loss, jax.tree.map(jnp.add, acc[1], grads)), None

    zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
    batch = tuple(split_micro(x, microbatches) for x in (tokens, segment_ids, mask))
    batch += (None if images is None else split_micro(images, microbatches),)
    (nll, grads), _ = jax.lax.scan(body, zero, batch)
    return (nll, {"sft/nll": nll, "sft/tokens": mask.sum()}), grads


def make_step(
    model_cfg: ModelConfig, optimizer: optax.GradientTransformation, microbatches: int = 1
):
    """A jitted SFT step (params, opt_state, tokens, seg, mask) -> (params, opt_state, metrics).

    microbatches > 1 accumulates the gradient over that many passes (`accumulated_grads`).
    """

    @jax.jit
    def step(params, opt_state, tokens, segment_ids, mask, images=None):
        if microbatches == 1:
            grad_fn = jax.value_and_grad(sft_loss, has_aux=True)
            (_, metrics), grads = grad_fn(params, model_cfg, tokens, segment_ids, mask, images)
        else:
            (_, metrics), grads = accumulated_grads(
                params, model_cfg, tokens, segment_ids, mask, microbatches, images
            )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        metrics["sft/grad_norm"] = optax.global_norm(grads)
        return optax.apply_updates(params, updates), opt_state, metrics

    return step
