"""A supervised fine-tuning stage on any examples function (long2short's short-CoT model and
shortest rejection sampling), with the SFT warm-up's packing, loss and step (train/sft.py)."""

from k15_jax.sharding import replicate_scalars
from k15_jax.train import sft
from k15_jax.train.logging import progress


def finetune(setup, params, examples, cfg: sft.SFTConfig, writer=None, phase: str = "finetune"):
    """cfg.steps AdamW steps from `params` with a fresh optimizer; returns the new params.

    examples: step -> [(prompt ids, response ids)], packed into cfg.rows x cfg.row_len
    (loss on response tokens only). Metrics go to `writer` under `phase` every 25 steps.
    """
    optimizer = sft.make_optimizer(cfg)
    opt_state = replicate_scalars(optimizer.init(params), setup.mesh)
    step_fn = sft.make_step(setup.model, optimizer, cfg.microbatches)
    bar = progress(cfg.steps, phase)
    for step in range(cfg.steps):
        tokens, seg, mask, _ = sft.pack(
            examples(step), cfg.rows, cfg.row_len, setup.tokenizer.pad_id
        )
        params, opt_state, m = step_fn(params, opt_state, tokens, seg, mask)
        bar.update(1)
        if writer is not None and ((step + 1) % 25 == 0 or step + 1 == cfg.steps):
            m = {k: float(v) for k, v in m.items()}
            bar.set_postfix(nll=f"{m['sft/nll']:.3f}")
            m = {f"{phase}/{k.split('/')[-1]}": v for k, v in m.items()}  # one TB tag per stage
            writer.write({"phase": phase, "step": step + 1, **m}, step + 1)
    bar.close()
    return params
