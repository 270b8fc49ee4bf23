"""A small policy for the long2short stage tests, trained in seconds: it answers add1
problems sometimes with the worked long format and sometimes with the bare \\boxed{answer},
often wrongly, so its samples have correct and incorrect responses of varied lengths.
Trained once per test session (the test files share it)."""

import functools
import re
import tempfile

import jax
import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from k15_jax.config import register
from k15_jax.data.templates import render
from k15_jax.model.params import init_params
from k15_jax.train.long2short.short_cot import SHORT_FORMATS
from k15_jax.train.setup import build
from k15_jax.train.sft import finetune
from tests.conftest import ROOT

OVERRIDES = [
    "+exp=long2short",
    "model.hidden_size=64",
    "model.intermediate_size=128",
    "model.head_dim=16",
    "data.synthetic.bands=[add1]",
    "data.synthetic.sft_band_weights=[1.0]",
    "sampler.hard_bands=[]",  # the main job's [add3, add4] are not bands here
    "data.synthetic.style=worked",  # the fixture mixes long and short forms itself
    "sft.steps=100",
    "sft.rows=8",
    "sft.row_len=128",
    "sft.lr=3e-3",
    "sft.warmup_steps=10",
    "rollout.max_new_tokens=40",
    "rollout.slots=64",
    "rollout.steps_per_sync=8",
    "sampler.batch_prompts=8",
    "sampler.samples_per_prompt=8",
    "trainer.eval_per_band=8",
    "reward.length_penalty_warmup=10",  # the main job's; long2short RL must override it
    "long2short.rl.max_new_tokens=16",
    "long2short.rl.iterations=2",
]


def compose_cfg(run_dir, *overrides):
    register()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        return compose("config", overrides=[*OVERRIDES, f"trainer.run_dir={run_dir}", *overrides])


@functools.cache
def mixed_policy():
    """(setup, params) of a policy SFT-trained on long and short demonstrations, half each.
    The setup is shared: tests change copies of its options (`stage_cfg`), never s.cfg."""
    s = build(compose_cfg(tempfile.mkdtemp(prefix="l2s-policy-")))
    tok, short = s.tokenizer, SHORT_FORMATS["answer"]

    def examples(step):
        rng = np.random.default_rng([7, step])
        tasks = s.suite.sft_tasks(48, rng)
        return [
            (
                tok.encode(render(s.template, t.prompt), bos=True),
                tok.encode(s.suite.demonstration(t) if i % 2 else short(t), eos=True),
            )
            for i, t in enumerate(tasks)
        ]

    params = init_params(s.model, jax.random.key(0), s.train_shardings)
    return s, finetune(s, params, examples, s.cfg.sft)


def stage_cfg(s, name: str):
    """A private copy of the s.cfg.long2short.<name> options (a dataclass) to change."""
    return OmegaConf.to_object(s.cfg.long2short[name])


def boxed_correct(text: str, reference: str) -> bool:
    """An independent verifier for integer answers: the last \\boxed{...} is the reference
    as a number ("07" and "7.0" count as 7, as for the math verifier)."""
    found = re.findall(r"\\boxed\{([^{}]*)\}", text)
    if not found:
        return False
    try:
        return float(found[-1].strip()) == float(reference)
    except ValueError:
        return found[-1].strip() == reference
