"""The k1.5 training recipe, top to bottom (report sec. 2.2, 2.3, 2.6.1).

    SFT warm-up on worked demonstrations (packed), then for each RL iteration:
      sample prompts -> roll out K responses -> reward -> M updates (fresh optimizer)
      -> hand the params to the engine -> evaluate -> checkpoint

Everything a resume needs is in `RunState` + params; a killed run re-run with the same
command continues from its newest complete checkpoint.
"""

import dataclasses
import json
import math
import time
from pathlib import Path

import jax
import numpy as np
from omegaconf import OmegaConf

from k15_jax import distributed, plan
from k15_jax.config import model_config, validate
from k15_jax.data.synthetic import SyntheticSuite
from k15_jax.data.templates import render, response_text, template
from k15_jax.model.params import abstract_params, init_params
from k15_jax.model.tokenizer import CharTokenizer
from k15_jax.rewards.score import make_verifier, score
from k15_jax.rl import samplers
from k15_jax.rollout import driver
from k15_jax.rollout.buffer import RolloutBuffer
from k15_jax.rollout.engine import make_engine
from k15_jax.rollout.handover import handover
from k15_jax.rollout.types import FINISH_REPEAT
from k15_jax.sharding import (
    TRAIN_RULES,
    make_mesh,
    param_shardings,
)
from k15_jax.train import rl_step, sft
from k15_jax.train.evaluate import evaluate
from k15_jax.train.logging import MetricsWriter, log, progress, setup_logging
from k15_jax.train.outputs import write_outputs
from k15_jax.train.state import Checkpoints, RunState


@dataclasses.dataclass
class Setup:
    cfg: object
    model: object
    mesh: object
    train_shardings: dict
    tokenizer: CharTokenizer
    suite: SyntheticSuite
    pool: list
    template: object
    run_dir: Path
    eval_engine: object = None
    vision: object = None  # train.vision.VisionData when vision.enabled (image prompts)


def build(cfg) -> Setup:
    validate(cfg)
    model = model_config(cfg.model)
    tokenizer = CharTokenizer()
    if model.vocab_size < tokenizer.vocab_size:
        raise ValueError(
            f"model.vocab_size={model.vocab_size} is smaller than the character tokenizer's "
            f"{tokenizer.vocab_size}; set model.vocab_size >= {tokenizer.vocab_size}"
        )
    model = model.replace(bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id)
    mesh = make_mesh(cfg.mesh)
    suite = SyntheticSuite(OmegaConf.to_object(cfg.data.synthetic))
    vision = None
    if cfg.vision.enabled:  # an image encoder in the policy; visual tasks join the pool
        from k15_jax.train.vision import VisionData
        from k15_jax.train.vision_config import check, vision_model_config

        check(cfg, tokenizer.vocab_size)
        model = model.replace(vision=vision_model_config(cfg.vision))
        vision = VisionData(cfg.vision, model.vision, suite)
    run_dir = Path(cfg.trainer.run_dir).absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    _lock(run_dir, jax.process_index())
    return Setup(
        cfg=cfg,
        model=model,
        mesh=mesh,
        train_shardings=param_shardings(model, mesh, TRAIN_RULES),
        tokenizer=tokenizer,
        suite=suite,
        pool=suite.train_pool() + (vision.suite.train_pool() if vision else []),
        template=template(cfg.data.template),
        run_dir=run_dir,
        vision=vision,
    )


def _lock(run_dir: Path, process: int = 0) -> None:
    """One run per run directory: two would interleave metrics and checkpoints. (Each
    process of a multi-host run holds its own lock file.)"""
    import fcntl

    name = ".lock" if process == 0 else f".lock.{process}"
    handle = open(run_dir / name, "w")  # noqa: SIM115 - held for the process lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RuntimeError(
            f"another process is already running in {run_dir}; wait for it or set "
            "trainer.run_dir (or trainer.seed / trainer.name) to use another directory"
        ) from None
    _LOCKS.append(handle)


_LOCKS: list = []


def sft_examples(s: Setup, step: int) -> list[tuple[list[int], list[int]]]:
    """A deterministic function of the step, so a resumed SFT sees the same data."""
    rng = np.random.default_rng([s.cfg.trainer.seed, 1, step])
    n = s.cfg.sft.rows * max(1, s.cfg.sft.row_len // 40)
    tok = s.tokenizer
    if s.vision:  # (prompt, response, task): the task carries the images
        return s.vision.sft_examples(n, rng, tok, s.template)
    return [
        (
            tok.encode(render(s.template, t.prompt), bos=True),
            tok.encode(s.suite.demonstration(t), eos=True),
        )
        for t in s.suite.sft_tasks(n, rng)
    ]


def run_sft(s: Setup, params, opt_state, state: RunState, ckpt: Checkpoints, writer: MetricsWriter):
    """SFT steps from state.sft_step to sft.steps; opt_state None starts a fresh AdamW."""
    c = s.cfg.sft
    optimizer = sft.make_optimizer(c)
    if opt_state is None:
        opt_state = optimizer.init(params)
    opt_state = distributed.replicate_scalars(opt_state, s.mesh)
    step_fn = sft.make_step(s.model, optimizer, c.microbatches)
    bar = progress(c.steps, "SFT warm-up", initial=state.sft_step)
    while state.sft_step < c.steps:
        examples, where = sft_examples(s, state.sft_step), []
        tokens, seg, mask, _ = sft.pack(
            [e[:2] for e in examples], c.rows, c.row_len, s.tokenizer.pad_id, where
        )
        batch = [distributed.global_batch(x, s.mesh) for x in (tokens, seg, mask)]
        if s.vision:  # each packed row's images, in the order of its placeholders
            imgs = s.vision.packed_images([e[2] for e in examples], where, c.rows, c.row_len)
            batch.append(distributed.global_batch(imgs, s.mesh))
        params, opt_state, m = step_fn(params, opt_state, *batch)
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


def rl_iteration(s: Setup, engine, params, state: RunState, fns: dict) -> tuple[dict, object, dict]:
    """One RL iteration. Returns (new params, engine, metrics)."""
    cfg, it = s.cfg, state.iteration
    t0 = time.time()
    # 1. sample prompts
    rng = np.random.default_rng([cfg.trainer.seed, 2, it])
    bands = np.array([t.band for t in s.pool])
    n_draw = math.ceil(cfg.sampler.batch_prompts * cfg.sampler.oversample)
    idx = samplers.draw(state.sampler, bands, n_draw, rng, cfg.sampler, it)
    requests = [(f"{i}:{it}:{j}", _prompt_ids(s, s.pool[i])) for j, i in enumerate(idx)]
    # 2. roll out K responses per prompt (partial rollouts continue the buffer's trajectories)
    key = jax.random.fold_in(jax.random.key(cfg.trainer.seed), it)
    buffer = RolloutBuffer.from_state(state.buffer) if state.buffer else RolloutBuffer()
    images = None
    if s.vision:  # image patches per request id (one image prefix per prompt, shared by K)
        ids = [r[0] for r in requests] + buffer.request_ids
        images = {r: s.vision.images(s.pool[int(r.split(":")[0])]) for r in ids}
    rollouts, group_ids, buffer, rstats = driver.collect(
        engine,
        requests,
        k=cfg.sampler.samples_per_prompt,
        cfg=fns["rollout_cfg"],
        iteration=it,
        key=key,
        buffer=buffer,
        pad_groups_to=cfg.sampler.batch_prompts,
        images=images,
    )
    t_roll = time.time()
    # 3. rewards: verifier (reward.kind) + length penalty + repeat penalty
    K = cfg.sampler.samples_per_prompt
    B = rollouts.tokens.shape[0] // K  # groups incl. padding (a multiple of batch_prompts)
    n_groups = len(group_ids)
    tasks = [s.pool[int(g.split(":")[0])] for g in group_ids]
    tokens = np.asarray(rollouts.tokens)
    prompt_len, length = np.asarray(rollouts.prompt_len), np.asarray(rollouts.length)
    texts = [
        response_text(
            s.template, s.tokenizer.decode(tokens[n, prompt_len[n] : prompt_len[n] + length[n]])
        )
        for n in range(n_groups * K)
    ]
    refs = [t.reference for t in tasks for _ in range(K)]
    finish = np.asarray(rollouts.finish)[: n_groups * K].reshape(n_groups, K)
    rewards, correct, wstats = score(
        texts,
        refs,
        length[: n_groups * K].reshape(n_groups, K),
        finish == FINISH_REPEAT,
        cfg.reward,
        it,
        questions=[t.prompt for t in tasks for _ in range(K)],
        verifier=fns["verifier"],
    )
    pool_idx = np.array([int(g.split(":")[0]) for g in group_ids], np.int64)
    state.sampler = samplers.update(state.sampler, pool_idx, correct)  # every scored group
    if cfg.sampler.oversample > 1 and n_groups:  # dynamic sampling: mixed groups first
        rollouts, n_groups, tasks, rewards, correct, length = rl_step.keep_groups(
            rollouts, tasks, rewards, correct, length, cfg.sampler.batch_prompts, K
        )
        B = cfg.sampler.batch_prompts
    full_rewards = np.zeros((B, K), np.float32)
    full_rewards[:n_groups] = rewards
    # 4. update: M steps from pi_theta_i with a fresh optimizer state
    glob = lambda x: distributed.global_batch(x, s.mesh)  # each process feeds its rows
    # the loss forward sees the images the rollout's prefill saw, row by row
    imgs = [glob(s.vision.batch([t for t in tasks for _ in range(K)], B * K))] if s.vision else []
    trainer_ref = fns["ref_logp"](params, glob(rollouts.tokens), *imgs)
    ref = trainer_ref if cfg.algo.trainer_ref_logp else glob(rollouts.logp)
    mask = rl_step.loss_mask(rollouts.response_mask, full_rewards, cfg.algo)
    mask[n_groups * K :] = 0.0
    # algo.off_policy: old segments excluded (k1.5), or TIS / masking by pi_theta_i / pi_rollout
    mask, ostats = fns["weights"](
        glob(mask), trainer_ref, glob(rollouts.logp), glob(rollouts.version), it
    )
    metrics = {k: float(v) for k, v in ostats.items()}
    if metrics["offpolicy/weight_mean"] > 0:
        opt_state = distributed.replicate_scalars(fns["optimizer"].init(params), s.mesh)
        params, _, update_metrics = fns["update"](
            params, opt_state, glob(rollouts.tokens), ref, glob(full_rewards), mask, *imgs
        )
        metrics.update({k: float(v) for k, v in update_metrics.items()})
        if not all(math.isfinite(v) for v in metrics.values()):
            raise FloatingPointError(
                f"non-finite loss or gradient at RL iteration {it}: {metrics}; the last good "
                "checkpoint is kept. Lower algo.lr or check the rewards."
            )
    # 5. hand the new params to the engine (device to device, rollout shardings)
    t_update = time.time()
    engine = handover(engine, params)
    handover_s = time.time() - t_update
    # bookkeeping: buffer, metrics
    state.buffer = buffer.to_state()
    rows = slice(0, n_groups * K)
    valid = np.asarray(rollouts.response_mask)[rows] > 0
    trainer_ref = distributed.to_host(trainer_ref)
    version = np.asarray(rollouts.version)[rows]
    metrics.update(rl_step.logprob_gap(rollouts.logp[rows], trainer_ref[rows], valid, version, it))
    metrics.update(rl_step.group_stats(rewards, correct) if n_groups else {})
    metrics.update(wstats)
    metrics.update({f"rollout/{k}": float(v) for k, v in rstats.items()})
    metrics.update(
        {
            "train/groups": float(n_groups),
            "train/reward_mean": float(rewards.mean()) if n_groups else 0.0,
            "train/accuracy": float(correct.mean()) if n_groups else 0.0,
            "train/response_len": float(length[: n_groups * K].mean()) if n_groups else 0.0,
            "time/rollout_s": t_roll - t0,
            "time/update_s": t_update - t_roll,
            "time/handover_s": handover_s,
            "time/iteration_s": time.time() - t0,
        }
    )
    for band in sorted(set(t.band for t in tasks)):
        sel = np.array([t.band == band for t in tasks])
        metrics[f"train/acc/{band}"] = float(correct[sel].mean())
    if s.vision:
        for mod in ("text", "image"):
            sel = np.array([t.meta.get("modality", "text") == mod for t in tasks])
            if sel.any():
                metrics[f"train/acc/modality/{mod}"] = float(correct[sel].mean())
    return params, engine, metrics


def _prompt_ids(s: Setup, task) -> list[int]:
    """Model input ids of a task: text, or image placeholders then text (vision runs)."""
    if s.vision:
        return s.vision.prompt_ids(s.tokenizer, s.template, task)
    return s.tokenizer.encode(render(s.template, task.prompt), bos=True)


def rl_machinery(s: Setup, params) -> tuple[object, dict]:
    """The rollout engine (holding params) and the `fns` of `rl_iteration` under s.cfg."""
    rollout_cfg = OmegaConf.to_object(s.cfg.rollout)
    engine = distributed.multihost_engine(
        make_engine(
            s.model,
            rollout_cfg,
            eos_id=s.tokenizer.eos_id,
            pad_id=s.tokenizer.pad_id,
            mesh=s.mesh,
            params=params,
        )
    )
    algo = OmegaConf.to_object(s.cfg.algo)
    update, optimizer = rl_step.make_update(s.model, algo)
    return engine, {
        "update": update,
        "weights": rl_step.make_weights(algo),
        "optimizer": optimizer,
        "rollout_cfg": rollout_cfg,
        "ref_logp": rl_step.make_reference_logprobs(s.model),
        "verifier": make_verifier(s.cfg.reward, s.mesh),
    }


def main(cfg) -> Path:
    setup_logging()
    distributed.initialize(cfg.distributed)  # before any other JAX call
    s = build(cfg)
    plan.refuse_unfit(cfg, s.model, s.mesh)  # before compiling anything
    if distributed.is_main():
        (s.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    writer = distributed.metrics_writer(s.run_dir)
    ckpt = Checkpoints(s.run_dir / "checkpoints", keep=cfg.trainer.keep_checkpoints)
    t_start = time.time()

    # initial params, or resume from the newest complete checkpoint
    abstract = jax.tree.map(
        lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
        abstract_params(s.model),
        s.train_shardings,
    )

    def target_for(state: RunState):  # during SFT the optimizer state is saved too
        if state.phase != "sft":
            return {"params": abstract}
        opt = distributed.shard_like_params(
            jax.eval_shape(sft.make_optimizer(cfg.sft).init, abstract), abstract, s.mesh
        )
        return {"params": abstract, "opt_state": opt}

    opt_state = None
    if ckpt.latest() is not None:
        tree, state = ckpt.restore(target_for)
        params, opt_state = tree["params"], tree.get("opt_state")
        writer.truncate(state.metrics_lines)
        log.info(
            "resumed from %s: phase=%s sft_step=%d iteration=%d",
            ckpt.directory,
            state.phase,
            state.sft_step,
            state.iteration,
        )
    else:
        params = _initial_params(s)
        state = RunState(sampler=samplers.init_state(len(s.pool)))
        if cfg.trainer.skip_sft:
            state.phase = "rl"

    # stage 1: long-CoT SFT warm-up
    if state.phase == "sft":
        params = run_sft(s, params, opt_state, state, ckpt, writer)
        state.phase = "rl"
        state.metrics_lines = writer.lines()
        ckpt.save({"params": params}, state)

    # stage 2: RL iterations
    engine, fns = rl_machinery(s, params)
    # greedy decoding is compiled into an engine: a second one shares the params
    s.eval_engine = distributed.multihost_engine(
        make_engine(
            s.model,
            dataclasses.replace(fns["rollout_cfg"], greedy=True, partial=False),
            eos_id=s.tokenizer.eos_id,
            pad_id=s.tokenizer.pad_id,
            mesh=s.mesh,
        )
    )
    if "eval_start" not in state.extra:
        state.extra["eval_start"] = _evaluate(s, engine, writer, state.iteration)
        state.metrics_lines = writer.lines()
        ckpt.save({"params": params}, state)
    bar = progress(cfg.trainer.iterations, "RL iterations", initial=state.iteration)
    stop_at = cfg.trainer.stop_after_iterations
    while state.phase == "rl" and state.iteration < cfg.trainer.iterations:
        if stop_at is not None and state.iteration >= stop_at:
            return s.run_dir
        params, engine, m = rl_iteration(s, engine, params, state, fns)
        writer.write({"phase": "rl", "iteration": state.iteration, **m}, state.iteration)
        bar.update(1)
        bar.set_postfix(
            reward=f"{m['train/reward_mean']:.2f}", mixed=f"{m.get('train/mixed_groups', 0):.2f}"
        )
        state.iteration += 1
        last = state.iteration == cfg.trainer.iterations
        if state.iteration % cfg.trainer.eval_every == 0 or last:
            _evaluate(s, engine, writer, state.iteration)
        if state.iteration % cfg.trainer.checkpoint_every == 0 or last:
            state.metrics_lines = writer.lines()
            ckpt.save({"params": params}, state)
    bar.close()
    if state.phase == "rl":
        state.extra["eval_end"] = _last_eval(writer)
        state.phase = "done"
        state.extra["wall_time_s"] = state.extra.get("wall_time_s", 0.0) + time.time() - t_start
        state.metrics_lines = writer.lines()
        ckpt.save({"params": params}, state)
    host_params = distributed.to_host(params)  # collective: every process gathers
    if distributed.is_main():
        write_outputs(s, host_params, state, writer, engine)
    ckpt.close()
    writer.close()
    if cfg.long2short.enabled:  # sec. 2.4: shorten the final long-CoT policy
        from k15_jax.train.long2short import run as run_long2short

        run_long2short(s, params)
    return s.run_dir


def _initial_params(s: Setup):
    if s.cfg.trainer.init_from_hf:
        from k15_jax.model.hf import load_hf

        _, params = load_hf(s.cfg.trainer.init_from_hf, shardings=s.train_shardings)
        if not s.vision:
            return params
        key = jax.random.key(s.cfg.trainer.seed)  # the decoder checkpoint has no vision part
        params["vision"] = init_params(s.model, key, s.train_shardings)["vision"]
    else:
        params = init_params(s.model, jax.random.key(s.cfg.trainer.seed), s.train_shardings)
    if s.vision and s.cfg.vision.init_from_hf:  # a pretrained SigLIP tower
        from k15_jax.model.siglip import load_siglip

        _, tower = load_siglip(s.cfg.vision.init_from_hf, s.model.vision)
        params["vision"]["tower"] = jax.device_put(tower, s.train_shardings["vision"]["tower"])
    return params


def _evaluate(s: Setup, engine, writer: MetricsWriter, iteration: int) -> dict:
    s.eval_engine.params = engine.params
    if s.vision:
        from k15_jax.train.vision_eval import evaluate_vision

        res = evaluate_vision(s.eval_engine, s, s.cfg.trainer.eval_per_band)
    else:
        res = evaluate(s.eval_engine, s, s.cfg.trainer.eval_per_band)
    record = {"phase": "eval", "iteration": iteration}
    for band, (acc, length) in res.items():
        record[f"eval/acc/{band}"] = acc
        record[f"eval/len/{band}"] = length
    writer.write(record, iteration)
    log.info("eval @%d: %s", iteration, json.dumps({b: round(a, 3) for b, (a, _) in res.items()}))
    return {band: acc for band, (acc, _) in res.items()}


def _last_eval(writer: MetricsWriter) -> dict:
    evals = [r for r in writer.records() if r.get("phase") == "eval"]
    return {k.split("/", 2)[2]: v for k, v in evals[-1].items() if k.startswith("eval/acc/")}
