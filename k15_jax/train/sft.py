"""Long-CoT SFT warm-up (report sec. 2.2) with sequence packing.

Examples (prompt ids, response ids) are packed first-fit into rows of `row_len` tokens with
segment ids; the loss is the mean negative log-likelihood of response tokens.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from k15_jax import distributed
from k15_jax.model.config import ModelConfig
from k15_jax.model.logprobs import accumulated_grads, token_logprobs
from k15_jax.train.metrics import progress


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
    return nll(logp, mask)


def nll(logp, mask):
    """(mean NLL of the masked tokens, metrics); logp, mask [R, L] (mask 0/1, or weights)."""
    value = -jnp.sum(jnp.where(mask > 0, mask * logp, 0.0)) / jnp.maximum(mask.sum(), 1.0)
    return value, {"sft/nll": value, "sft/tokens": mask.sum()}


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


def make_step(
    model_cfg: ModelConfig, optimizer: optax.GradientTransformation, microbatches: int = 1
):
    """A jitted SFT step (params, opt_state, tokens, seg, mask) -> (params, opt_state, metrics).

    microbatches > 1 accumulates the gradient over that many passes
    (`model.logprobs.accumulated_grads`).
    """

    @jax.jit
    def step(params, opt_state, tokens, segment_ids, mask, images=None):
        if microbatches == 1:
            grad_fn = jax.value_and_grad(sft_loss, has_aux=True)
            (_, metrics), grads = grad_fn(params, model_cfg, tokens, segment_ids, mask, images)
        else:
            logp_of_rows = lambda p, tok, seg, img: token_logprobs(
                p, model_cfg, tok, segment_ids=seg, images=img
            )
            (_, metrics), grads = accumulated_grads(
                params,
                logp_of_rows,
                lambda lp: nll(lp, mask),
                (tokens, segment_ids, images),
                microbatches,
            )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        metrics["sft/grad_norm"] = optax.global_norm(grads)
        return optax.apply_updates(params, updates), opt_state, metrics

    return step


def warmup_examples(setup, step: int) -> list[tuple]:
    """The warm-up's demonstrations at `step`: a deterministic function of (seed, step), so
    a resumed SFT sees the same data. (prompt ids, response ids[, task]) from the run's
    prompt source; sft.rows * max(1, sft.row_len // 40) of them, packing drops the overflow."""
    c = setup.cfg
    rng = np.random.default_rng([c.trainer.seed, 1, step])
    return setup.prompts.sft_examples(c.sft.rows * max(1, c.sft.row_len // 40), rng)


def finetune(setup, params, examples, cfg: SFTConfig, writer=None, phase: str = "finetune"):
    """cfg.steps AdamW steps from `params` with a fresh optimizer; returns the new params.

    A supervised stage on any examples function (long2short's short-CoT model and shortest
    rejection sampling, the CoT reward model), with the warm-up's packing, loss and step.
    examples: step -> [(prompt ids, response ids)], packed into cfg.rows x cfg.row_len
    (loss on response tokens only). Metrics go to `writer` under `phase` every 25 steps.
    """
    optimizer = make_optimizer(cfg)
    opt_state = distributed.replicate_scalars(optimizer.init(params), setup.mesh)
    step_fn = make_step(setup.model, optimizer, cfg.microbatches)
    bar = progress(cfg.steps, phase)
    for step in range(cfg.steps):
        tokens, seg, mask, _ = pack(examples(step), cfg.rows, cfg.row_len, setup.tokenizer.pad_id)
        params, opt_state, m = step_fn(params, opt_state, tokens, seg, mask)
        bar.update(1)
        if writer is not None and ((step + 1) % 25 == 0 or step + 1 == cfg.steps):
            m = {k: float(v) for k, v in m.items()}
            bar.set_postfix(nll=f"{m['sft/nll']:.3f}")
            m = {f"{phase}/{k.split('/')[-1]}": v for k, v in m.items()}  # one TB tag per stage
            writer.write({"phase": phase, "step": step + 1, **m}, step + 1)
    bar.close()
    return params
