"""The main job, top to bottom (report sec. 2.2, 2.3, 2.6.1): `main(cfg)`.

    build -> resume or init -> long-CoT SFT warm-up (packed) -> evaluate
    -> for each RL iteration: draw, collect, score, update, hand over (train/iteration.py)
       -> evaluate every trainer.eval_every -> checkpoint every trainer.checkpoint_every
    -> summary, plots, held-out set, HF export

Everything a resume needs is in `RunState` + params; a killed run re-run with the same
command continues from its newest complete checkpoint.
"""

import hashlib
import json
import time
from pathlib import Path

import jax
from omegaconf import OmegaConf

from k15_jax import distributed, plan
from k15_jax.model.params import abstract_params
from k15_jax.rl import samplers
from k15_jax.train import sft
from k15_jax.train.iteration import make_fns, rl_iteration
from k15_jax.train.metrics import MetricsWriter, log, progress, setup_logging
from k15_jax.train.outputs import export_policy, write_outputs
from k15_jax.train.setup import Setup, build, initial_params
from k15_jax.train.state import Checkpoints, RunState


def run_sft(s: Setup, params, opt_state, state: RunState, ckpt: Checkpoints, writer: MetricsWriter):
    """SFT steps from state.sft_step to sft.steps; opt_state None starts a fresh AdamW."""
    c = s.cfg.sft
    optimizer = sft.make_optimizer(c)
    if opt_state is None:
        opt_state = optimizer.init(params)
    opt_state = distributed.replicate_scalars(opt_state, s.mesh)
    step_fn = sft.make_step(s.model, optimizer, c.microbatches)
    glob = lambda x: None if x is None else distributed.global_batch(x, s.mesh)
    bar = progress(c.steps, "SFT warm-up", initial=state.sft_step)
    while state.sft_step < c.steps:
        examples, where = sft.warmup_examples(s, state.sft_step), []
        tokens, seg, mask, _ = sft.pack(
            [e[:2] for e in examples], c.rows, c.row_len, s.tokenizer.pad_id, where
        )
        images = s.prompts.sft_images(examples, where, c.rows, c.row_len)
        params, opt_state, m = step_fn(
            params, opt_state, glob(tokens), glob(seg), glob(mask), glob(images)
        )
        state.sft_step += 1
        bar.update(1)
        if state.sft_step % 25 == 0 or state.sft_step == c.steps:
            m = {k: float(v) for k, v in m.items()}
            bar.set_postfix(nll=f"{m['sft/nll']:.3f}")
            writer.write({"phase": "sft", "step": state.sft_step, **m}, state.sft_step)
        if state.sft_step % c.checkpoint_every == 0 and state.sft_step < c.steps:
            state.metrics_lines = writer.lines()
            ckpt.save({"params": params, "opt_state": opt_state}, state)
    bar.close()
    return params


def evaluate(s: Setup, engine, writer: MetricsWriter, iteration: int) -> dict:
    """Greedy held-out accuracy and length per band with the current params; logged."""
    res = s.prompts.evaluate(engine, s, s.cfg.trainer.eval_per_band)
    record = {"phase": "eval", "iteration": iteration}
    for band, (acc, length) in res.items():
        record[f"eval/acc/{band}"] = acc
        record[f"eval/len/{band}"] = length
    writer.write(record, iteration)
    log.info("eval @%d: %s", iteration, json.dumps({b: round(a, 3) for b, (a, _) in res.items()}))
    return {band: acc for band, (acc, _) in res.items()}


def last_eval(writer: MetricsWriter, what: str = "acc") -> dict:
    """{band: figure} of the newest eval record; what: "acc" or "len" (mean tokens)."""
    evals = [r for r in writer.records() if r.get("phase") == "eval"]
    prefix = f"eval/{what}/"
    return {k[len(prefix) :]: v for k, v in evals[-1].items() if k.startswith(prefix)}


def pool_digest(pool) -> str:
    """A fingerprint of the prompt ids in pool order: the sampler state is per prompt id."""
    return hashlib.sha256("\n".join(t.id for t in pool).encode()).hexdigest()[:16]


def resume_or_init(s: Setup, ckpt: Checkpoints, writer: MetricsWriter):
    """(params, SFT optimizer state or None, RunState): the newest complete checkpoint, or
    fresh params and state."""
    abstract = jax.tree.map(
        lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
        abstract_params(s.model),
        s.train_shardings,
    )

    def target_for(state: RunState):  # during SFT the optimizer state is saved too
        if state.phase != "sft":
            return {"params": abstract}
        opt = distributed.shard_like_params(
            jax.eval_shape(sft.make_optimizer(s.cfg.sft).init, abstract), abstract, s.mesh
        )
        return {"params": abstract, "opt_state": opt}

    if ckpt.latest() is None:
        state = RunState(sampler=samplers.init_state(len(s.pool)))
        state.extra["pool_digest"] = pool_digest(s.pool)
        if s.cfg.trainer.skip_sft or not s.prompts.has_sft:
            state.phase = "rl"
        return initial_params(s), None, state
    tree, state = ckpt.restore(target_for)
    if state.extra.get("pool_digest", pool_digest(s.pool)) != pool_digest(s.pool):
        raise ValueError(
            f"the prompt pool differs from the one of the checkpoint in {ckpt.directory} (the "
            "sampler counts are per prompt id): resume with the same data.train sources"
        )
    writer.truncate(state.metrics_lines)
    log.info(
        "resumed from %s: phase=%s sft_step=%d iteration=%d",
        ckpt.directory,
        state.phase,
        state.sft_step,
        state.iteration,
    )
    return tree["params"], tree.get("opt_state"), state


def run_rl(s: Setup, params, state: RunState, ckpt: Checkpoints, writer: MetricsWriter):
    """RL iterations from state.iteration to trainer.iterations, evaluating and
    checkpointing on schedule. Returns (params, engine, finished)."""
    cfg = s.cfg
    fns = make_fns(s)
    engine = s.engine(params)
    eval_engine = s.engine(greedy=True, partial=False)  # greedy decoding is compiled in

    def eval_now() -> dict:
        eval_engine.params = engine.params
        return evaluate(s, eval_engine, writer, state.iteration)

    if "eval_start" not in state.extra:
        state.extra["eval_start"] = eval_now()
        state.extra["eval_start_len"] = last_eval(writer, "len")
        state.metrics_lines = writer.lines()
        ckpt.save({"params": params}, state)
    bar = progress(cfg.trainer.iterations, "RL iterations", initial=state.iteration)
    stop_at = cfg.trainer.stop_after_iterations
    while state.iteration < cfg.trainer.iterations:
        if stop_at is not None and state.iteration >= stop_at:
            return params, engine, False
        params, engine, m = rl_iteration(s, engine, params, state, fns)
        writer.write({"phase": "rl", "iteration": state.iteration, **m}, state.iteration)
        bar.update(1)
        bar.set_postfix(
            reward=f"{m['train/reward_mean']:.2f}", mixed=f"{m.get('train/mixed_groups', 0):.2f}"
        )
        state.iteration += 1
        last = state.iteration == cfg.trainer.iterations
        if state.iteration % cfg.trainer.eval_every == 0 or last:
            eval_now()
        if state.iteration % cfg.trainer.checkpoint_every == 0 or last:
            state.metrics_lines = writer.lines()
            ckpt.save({"params": params}, state)
    bar.close()
    return params, engine, True


def main(cfg) -> Path:
    """The RL job (trainer.job=rl). Returns the run directory."""
    setup_logging()
    distributed.initialize(cfg.distributed)  # before any other JAX call
    s = build(cfg)
    plan.refuse_unfit(cfg, s.model, s.mesh)  # before compiling anything
    if distributed.is_main():
        (s.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    writer = distributed.metrics_writer(s.run_dir)
    ckpt = Checkpoints(s.run_dir / "checkpoints", keep=cfg.trainer.keep_checkpoints)
    t_start = time.time()
    params, opt_state, state = resume_or_init(s, ckpt, writer)

    if state.phase == "sft":  # stage 1: long-CoT SFT warm-up
        params = run_sft(s, params, opt_state, state, ckpt, writer)
        # the warm-up's policy, so that ablation arms can start from it (trainer.init_from_hf)
        host_params = distributed.to_host(params)  # collective: every process gathers
        if distributed.is_main():
            export_policy(s, host_params, s.run_dir / "sft" / "hf")
        state.phase = "rl"
        state.metrics_lines = writer.lines()
        ckpt.save({"params": params}, state)

    engine = None
    if state.phase == "rl":  # stage 2: RL iterations
        params, engine, finished = run_rl(s, params, state, ckpt, writer)
        if not finished:  # trainer.stop_after_iterations: as if killed
            return s.run_dir
        state.extra["eval_end"] = last_eval(writer)
        state.extra["eval_end_len"] = last_eval(writer, "len")
        state.phase = "done"
        state.extra["wall_time_s"] = state.extra.get("wall_time_s", 0.0) + time.time() - t_start
        state.metrics_lines = writer.lines()
        ckpt.save({"params": params}, state)
    host_params = distributed.to_host(params)  # collective: every process gathers
    if distributed.is_main():
        write_outputs(s, host_params, state, writer)
    ckpt.close()
    writer.close()
    return s.run_dir
