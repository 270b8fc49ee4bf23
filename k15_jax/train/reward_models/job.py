"""The reward-model experiment (report sec. 2.3.5): a classic value-head RM and a
chain-of-thought RM, trained on the same labelled triples and compared against the rule
verifier on held-out pairs.

    policy (SFT warm-up here, or reward_models.policy_dir)
      -> responses sampled at temperature + programmatic variants, labelled by the rule
         verifier (rewards/rm_data.py), balanced; held-out pairs from the eval split
      -> classic RM: decoder + value head, BCE          (rewards/rm_classic.py)
      -> CoT RM: decoder fine-tuned on JSON checks      (rewards/rm_cot.py, train/sft.py)
      -> accuracy / precision / recall on held-out pairs, beside the report's figures

Outputs in <run_dir>/rm: classic_rm/ and cot_rm/ (orbax params + rm.json, what
`reward.rm_dir=<run_dir>/rm` reads), results.json, table.md, pairs_eval.jsonl.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np
from omegaconf import OmegaConf

from k15_jax.model.params import abstract_params, init_params
from k15_jax.rewards import rm_classic, rm_cot, rm_store
from k15_jax.rewards.rm_data import balance, build_pairs, cot_target, rm_input
from k15_jax.rollout import driver
from k15_jax.rollout.buffer import RolloutBuffer
from k15_jax.rollout.texts import request_rows, response_texts
from k15_jax.train import sft
from k15_jax.train.metrics import MetricsWriter, log, progress, setup_logging
from k15_jax.train.setup import Setup, build
from k15_jax.train.sft import finetune
from k15_jax.train.state import Checkpoints, RunState

REPORT_ACCURACY = {"classic_rm": 0.844, "cot_rm": 0.985}  # k1.5 report, sec. 2.3.5


# ----------------------------------------------------------------------------- policy


def policy_params(s: Setup, writer) -> dict:
    """The policy that writes responses: the newest orbax checkpoint of policy_dir (a main
    job's run directory), else of this run (a re-run reuses it), else SFT'd here and saved."""
    c = s.cfg.reward_models
    own = Checkpoints(s.run_dir / "checkpoints")
    if c.policy_dir:
        own.close()
        return _restore_policy(s, Checkpoints(Path(c.policy_dir) / "checkpoints"), "policy_dir")
    if own.latest() is not None:
        return _restore_policy(s, own, "this run")
    params = init_params(s.model, jax.random.key(s.cfg.trainer.seed), s.train_shardings)
    sft_cfg = OmegaConf.to_object(s.cfg.sft)
    params = finetune(
        s, params, lambda step: sft.warmup_examples(s, step), sft_cfg, writer, "rm/policy_sft"
    )
    own.save({"params": params}, RunState(phase="done", sft_step=sft_cfg.steps))
    own.close()
    return params


def _restore_policy(s: Setup, ckpt: Checkpoints, what: str) -> dict:
    if ckpt.latest() is None:
        raise FileNotFoundError(
            f"reward_models.policy_dir: no orbax checkpoint in {ckpt.directory}; point it at a "
            "run directory of the main job, or unset it to SFT a policy here"
        )
    abstract = jax.tree.map(
        lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
        abstract_params(s.model),
        s.train_shardings,
    )

    def target_for(state):  # mid-SFT checkpoints hold the optimizer state too
        if state.phase != "sft":
            return {"params": abstract}
        opt = jax.eval_shape(sft.make_optimizer(s.cfg.sft).init, abstract)
        return {"params": abstract, "opt_state": opt}

    tree, state = ckpt.restore(target_for)
    log.info(
        "policy from %s: %s (phase %s, SFT step %d, RL iteration %d)",
        what,
        ckpt.directory,
        state.phase,
        state.sft_step,
        state.iteration,
    )
    ckpt.close()
    return tree["params"]


def sample(s: Setup, policy, tasks, k: int, salt: int) -> list[list[str]]:
    """k responses per task, sampled at reward_models.temperature (natural mistakes)."""
    engine = s.engine(policy, partial=False, temperature=s.cfg.reward_models.temperature)
    ids = [f"t{i}" for i in range(len(tasks))]
    requests = [(rid, s.prompts.prompt_ids(t)) for rid, t in zip(ids, tasks)]
    key = jax.random.fold_in(jax.random.key(s.cfg.trainer.seed), 7000 + salt)
    rollouts, group_ids, _, _ = driver.collect(
        engine, requests, k=k, iteration=0, key=key, buffer=RolloutBuffer()
    )
    texts = response_texts(rollouts, request_rows(group_ids, ids, k), s.tokenizer, s.template)
    return [texts[i * k : (i + 1) * k] for i in range(len(tasks))]


# ----------------------------------------------------------------------------- training


def inputs_of(pairs, max_input: int) -> list[str]:
    return [rm_input(p.question, p.reference, p.response, max_input - 1) for p in pairs]


def train_classic(s: Setup, policy, pairs, writer) -> dict:
    """Decoder (from the policy) + value head, BCE on the labelled pairs."""
    c = OmegaConf.to_object(s.cfg.reward_models.classic)
    L = s.cfg.reward.rm_max_input
    texts, labels = inputs_of(pairs, L), np.array([p.label for p in pairs], np.float32)
    key = jax.random.fold_in(jax.random.key(s.cfg.trainer.seed), 31)
    params = {"decoder": policy, "head": rm_classic.init_head(s.model, key)}
    optimizer = rm_classic.make_optimizer(c)
    opt_state = optimizer.init(params)
    step_fn = rm_classic.make_step(s.model, optimizer)
    rng = np.random.default_rng([s.cfg.trainer.seed, 32])
    order = np.concatenate(
        [rng.permutation(len(pairs)) for _ in range(c.steps * c.batch // max(len(pairs), 1) + 1)]
    )
    bar = progress(c.steps, "classic RM")
    for step in range(c.steps):
        idx = order[step * c.batch : (step + 1) * c.batch]
        tokens, lengths = rm_classic.encode(
            [texts[i] for i in idx], s.tokenizer, L, s.tokenizer.pad_id
        )
        params, opt_state, m = step_fn(params, opt_state, tokens, lengths, labels[idx])
        bar.update(1)
        if (step + 1) % 25 == 0 or step + 1 == c.steps:
            m = {k: float(v) for k, v in m.items()}
            bar.set_postfix(bce=f"{m['rm/bce']:.3f}", acc=f"{m['rm/train_acc']:.2f}")
            writer.write({"phase": "rm/classic", "step": step + 1, **m}, step + 1)
    bar.close()
    return params


def train_cot(s: Setup, policy, pairs, writer) -> dict:
    """The decoder (from the policy) fine-tuned to write `cot_target` after the input."""
    c = OmegaConf.to_object(s.cfg.reward_models.cot)
    texts = inputs_of(pairs, s.cfg.reward.rm_max_input)
    targets = [cot_target(p.question, p.reference, p.response, p.label > 0) for p in pairs]
    longest = max(len(t) for t in targets) + 1
    if longest > s.cfg.reward.rm_max_check:
        raise ValueError(
            f"a CoT check of {longest} tokens exceeds reward.rm_max_check="
            f"{s.cfg.reward.rm_max_check}; raise it"
        )
    exs = rm_cot.examples(texts, targets, s.tokenizer, s.cfg.reward_models.cot_decision_weight)
    rng = np.random.default_rng([s.cfg.trainer.seed, 33])
    per_step = c.rows * 3 // 2  # short checks pack two to a row; the rest wait a step
    order = np.concatenate(
        [rng.permutation(len(exs)) for _ in range(c.steps * per_step // max(len(exs), 1) + 1)]
    )
    return finetune(
        s,
        policy,
        lambda step: [exs[i] for i in order[step * per_step : (step + 1) * per_step]],
        c,
        writer,
        "rm/cot",
    )


# ----------------------------------------------------------------------------- evaluation


def classification(pred: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, precision and recall of pred (1 = "correct") against the rule labels."""
    pred, labels = pred.astype(bool), labels.astype(bool)
    tp = float((pred & labels).sum())
    return {
        "accuracy": float((pred == labels).mean()),
        "precision": tp / max(float(pred.sum()), 1.0),
        "recall": tp / max(float(labels.sum()), 1.0),
        "n": int(len(labels)),
    }


def by_kind(pred: np.ndarray, pairs) -> dict:
    kinds = np.array([p.kind for p in pairs])
    labels = np.array([p.label > 0 for p in pairs])
    return {k: float((pred[kinds == k] == labels[kinds == k]).mean()) for k in sorted(set(kinds))}


def table(results: dict) -> str:
    rows = [
        "| reward model | accuracy | precision | recall | malformed | report accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for kind, name in (("classic_rm", "classic (value head)"), ("cot_rm", "chain-of-thought")):
        r = results[kind]
        rows.append(
            f"| {name} | {r['accuracy']:.1%} | {r['precision']:.1%} | "
            f"{r['recall']:.1%} | {r.get('malformed', 0)} | "
            f"{REPORT_ACCURACY[kind]:.1%} |"
        )
    return "\n".join(rows)


def make_pairs(s: Setup, policy, times: dict) -> tuple[list, list]:
    """(training pairs, held-out pairs): sampled responses and variants, labelled by the
    rule verifier and balanced to half correct."""
    c, L = s.cfg.reward_models, s.cfg.reward.rm_max_input
    bands = s.suite.bands
    train_tasks = [t for b in bands for t in s.suite.train_pool([b])[: c.train_prompts_per_band]]
    eval_tasks = [t for b in bands for t in s.suite.eval_tasks(b)[: c.eval_prompts_per_band]]
    t = time.time()
    rng = np.random.default_rng([s.cfg.trainer.seed, 30])
    train_samples = sample(s, policy, train_tasks, c.samples_per_prompt, 0)
    train = balance(build_pairs(train_tasks, train_samples, rng, L - 1), rng, c.train_pairs)
    held_samples = sample(s, policy, eval_tasks, c.samples_per_prompt, 1)
    held = balance(build_pairs(eval_tasks, held_samples, rng, L - 1), rng, c.eval_pairs)
    times["data_s"] = time.time() - t
    log.info("RM data: %d training pairs, %d held-out pairs (half correct)", len(train), len(held))
    return train, held


def train_both(s: Setup, policy, train, writer, out: Path, times: dict) -> tuple[dict, dict]:
    """Both RMs trained on `train` and saved under `out` (what reward.rm_dir reads)."""
    L = s.cfg.reward.rm_max_input
    t = time.time()
    classic = train_classic(s, policy, train, writer)
    rm_store.save(out, "classic_rm", classic, s.model, {"max_input": L})
    times["classic_train_s"] = time.time() - t
    t = time.time()
    cot = train_cot(s, policy, train, writer)
    meta = {"max_input": L, "max_check": s.cfg.reward.rm_max_check}
    rm_store.save(out, "cot_rm", cot, s.model, meta)
    times["cot_train_s"] = time.time() - t
    return classic, cot


def judge_held(s: Setup, classic, cot, held, times: dict):
    """(classic probabilities, CoT verdicts, malformed count, CoT checks) on held-out pairs."""
    r = s.cfg.reward
    texts = inputs_of(held, r.rm_max_input)
    t = time.time()
    p_classic = rm_classic.probabilities(
        classic, s.model, s.tokenizer, texts, r.rm_max_input, r.rm_batch
    )
    times["classic_eval_s"] = time.time() - t
    t = time.time()
    judge = rm_cot.make_judge(
        s.model,
        cot,
        s.tokenizer,
        max_input_tokens=r.rm_max_input,
        max_new_tokens=r.rm_max_check,
        slots=r.rm_batch,
        mesh=s.mesh,
    )
    v_cot, malformed, checks = rm_cot.judge_scores(judge, texts)
    times["cot_eval_s"] = time.time() - t
    return p_classic, v_cot, malformed, checks


def compare(held, p_classic, v_cot, malformed: int, n_train: int) -> dict:
    """results.json: each RM's classification of the held-out pairs beside the report's."""
    labels = np.array([p.label for p in held], np.float32)
    pred = {"classic_rm": p_classic >= 0.5, "cot_rm": v_cot >= 0.5}
    results = {
        k: {
            **classification(v, labels),
            "by_kind": by_kind(v, held),
            "report_accuracy": REPORT_ACCURACY[k],
        }
        for k, v in pred.items()
    }
    results["cot_rm"]["malformed"] = malformed
    results["data"] = {
        "train_pairs": n_train,
        "eval_pairs": len(held),
        "eval_kinds": {k: sum(p.kind == k for p in held) for k in sorted({p.kind for p in held})},
    }
    results["cot_beats_classic"] = results["cot_rm"]["accuracy"] > results["classic_rm"]["accuracy"]
    return results


def write_results(out: Path, results: dict, held, p_classic, v_cot, checks, writer) -> str:
    """results.json, table.md, pairs_eval.jsonl and the metrics record; returns the table."""
    (out / "results.json").write_text(json.dumps(results, indent=2))
    md = table(results)
    (out / "table.md").write_text(md + "\n")
    with (out / "pairs_eval.jsonl").open("w") as f:
        for p, pc, vc, ch in zip(held, p_classic, v_cot, checks, strict=True):
            row = {
                **dataclasses.asdict(p),
                "classic_p": round(float(pc), 4),
                "cot_verdict": float(vc),
                "cot_check": ch,
            }
            f.write(json.dumps(row) + "\n")
    kinds, figures = ("classic_rm", "cot_rm"), ("accuracy", "precision", "recall")
    record = {f"rm/{k}/{m}": results[k][m] for k in kinds for m in figures}
    writer.write({"phase": "rm/eval", **record}, 0)
    return md


def main(cfg) -> Path:
    """The RM job: policy -> labelled pairs -> both RMs -> held-out comparison."""
    setup_logging()
    s = build(cfg)  # validate(cfg) checks the reward_models group
    out = s.run_dir / "rm"
    out.mkdir(exist_ok=True)
    (s.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    writer = MetricsWriter(s.run_dir)
    times, t0 = {}, time.time()
    policy = policy_params(s, writer)
    times["policy_s"] = time.time() - t0
    train, held = make_pairs(s, policy, times)
    classic, cot = train_both(s, policy, train, writer, out, times)
    p_classic, v_cot, malformed, checks = judge_held(s, classic, cot, held, times)
    results = compare(held, p_classic, v_cot, malformed, len(train))
    times["total_s"] = time.time() - t0
    results["times_s"] = {k: round(v, 1) for k, v in times.items()}
    md = write_results(out, results, held, p_classic, v_cot, checks, writer)
    writer.close()
    print(md, flush=True)
    print(
        f"held-out pairs: {len(held)} (half correct by the rule verifier); "
        f"wall time {times['total_s']:.0f} s",
        flush=True,
    )
    return s.run_dir
