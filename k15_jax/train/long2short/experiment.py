"""The long2short experiment (report sec. 2.4, Fig. 7): from the long-CoT policy, build the
methods' policies and compare held-out accuracy against response length.

    long -> short (SFT on short demonstrations) -> merge -> merge + shortest RS -> DPO -> RL

(see long2short_config.py for what each starts from). Every policy is evaluated greedily on
the held-out split with the main job's settings (rollout.max_new_tokens included) and
exported to `<run_dir>/long2short/<method>/hf`; results.json, long2short.md and
long2short.png go to `<run_dir>/long2short`.

Entry point `main(cfg)` (trainer.job=long2short, routed by experiments/run.py): the policy
is the HF checkpoint `long2short.policy`; without one, experiments/run.py first runs the
RL job and passes its `final/hf`.
"""

import dataclasses
import json
import time

import jax
from omegaconf import OmegaConf

from k15_jax.eval.heldout import evaluate
from k15_jax.model.hf import export_hf, load_hf
from k15_jax.model.params import abstract_params
from k15_jax.rollout.handover import handover
from k15_jax.train.long2short.config import plan
from k15_jax.train.long2short.dpo import dpo_stage
from k15_jax.train.long2short.merge import merge_params
from k15_jax.train.long2short.report import write_report
from k15_jax.train.long2short.rl import long2short_rl
from k15_jax.train.long2short.short_cot import short_examples
from k15_jax.train.long2short.shortest import shortest_rejection_sampling
from k15_jax.train.metrics import MetricsWriter, log, setup_logging
from k15_jax.train.setup import Setup, build
from k15_jax.train.sft import finetune


@dataclasses.dataclass
class Context:
    setup: Setup  # of the main job's config
    sampler: object  # engine sampling with the main job's rollout options
    writer: MetricsWriter

    @property
    def cfg(self):
        return self.setup.cfg.long2short

    def key(self, salt: int):
        return jax.random.fold_in(jax.random.key(self.setup.cfg.trainer.seed), 1000 + salt)


def _short(ctx: Context, policies: dict):
    c = ctx.cfg.short
    examples = short_examples(ctx.setup, c.format, ctx.setup.cfg.trainer.seed)
    return finetune(ctx.setup, policies["long"], examples, c.sft, ctx.writer, "l2s/short"), {
        "format": c.format
    }


def _merge(ctx: Context, policies: dict):
    return merge_params(policies["long"], policies["short"], ctx.cfg.alpha), {
        "alpha": ctx.cfg.alpha
    }


def _merge_rs(ctx: Context, policies: dict):
    c = ctx.cfg.shortest
    return shortest_rejection_sampling(
        ctx.setup, ctx.sampler, policies[c.init], c, ctx.key(1), ctx.writer
    )


def _dpo(ctx: Context, policies: dict):
    c = ctx.cfg.dpo
    return dpo_stage(ctx.setup, ctx.sampler, policies[c.init], c, ctx.key(2), ctx.writer)


def _rl(ctx: Context, policies: dict):
    return long2short_rl(ctx.setup, policies[ctx.cfg.rl.init], ctx.writer)


STAGES = {"short": _short, "merge": _merge, "merge_rs": _merge_rs, "dpo": _dpo, "rl": _rl}


def run(s, long_params) -> dict:
    """Runs the experiment on the long-CoT params; returns {method: result}."""
    c = s.cfg.long2short
    out = s.run_dir / "long2short"
    out.mkdir(parents=True, exist_ok=True)
    writer = MetricsWriter(out)
    writer.truncate(0)  # a re-run starts the experiment over
    ctx = Context(s, s.engine(partial=False), writer)
    greedy = s.engine(partial=False, greedy=True)
    per_band = c.eval_per_band or s.cfg.trainer.eval_per_band
    policies, results = {"long": long_params}, {}
    for name in plan(c):
        t0 = time.time()
        stats = {}
        if name != "long":
            log.info("long2short: %s", name)
            policies[name], stats = STAGES[name](ctx, policies)
        t_stage = time.time() - t0
        res = evaluate(handover(greedy, policies[name]), s, per_band)
        results[name] = {
            "accuracy": {b: acc for b, (acc, _) in res.items()},
            "tokens": {b: n for b, (_, n) in res.items()},
            "stage_s": round(t_stage, 1),
            "eval_s": round(time.time() - t0 - t_stage, 1),
            "stats": stats,
        }
        writer.write(
            {
                "phase": "l2s/eval",
                "method": name,
                **{f"l2s/eval/{name}/acc/{b}": a for b, (a, _) in res.items()},
                **{f"l2s/eval/{name}/len/{b}": n for b, (_, n) in res.items()},
            },
            0,
        )
        log.info(
            "long2short %s: %s",
            name,
            json.dumps({b: [round(a, 3), round(n, 1)] for b, (a, n) in res.items()}),
        )
        export_hf(policies[name], s.model, out / name / "hf")
        s.tokenizer.save_hf(out / name / "hf")
    shown = {m: results[m] for m in plan(c) if m in c.methods}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_report(
        shown,
        out,
        f"long2short ({s.cfg.trainer.name}, seed {s.cfg.trainer.seed}): "
        "held-out greedy accuracy vs response tokens",
    )
    writer.close()
    return results


def main(cfg):
    """The experiment on a saved long-CoT policy: cfg.long2short.policy (a HF directory)."""
    setup_logging()
    c = cfg.long2short
    if not c.policy:
        raise ValueError(
            "long2short.policy is not set; point it at a long-CoT HF checkpoint, e.g. "
            "long2short.policy=runs/curriculum-seed0/final/hf (experiments.run with "
            "+exp=long2short and no long2short.policy trains one first)"
        )
    s = build(cfg)
    (s.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    _, params = load_hf(c.policy, shardings=s.train_shardings)
    want = jax.tree.map(lambda x: x.shape, abstract_params(s.model))
    have = jax.tree.map(lambda x: x.shape, params)
    if want != have:
        raise ValueError(
            f"long2short.policy={c.policy} does not match the model.* options ({have} vs "
            f"{want}); pass the model settings of the run that produced it"
        )
    run(s, params)
    return s.run_dir
