"""Hydra structured config: presets compose, bad keys/types/combinations fail by name."""

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from k15_jax.config import model_config, register, validate
from tests.conftest import ROOT

EXPS = sorted(p.stem for p in (ROOT / "configs" / "exp").glob("*.yaml"))


def _compose(*overrides):
    register()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("exp", EXPS)
def test_every_preset_composes_and_validates(exp):
    cfg = _compose(f"+exp={exp}")
    validate(cfg)
    assert cfg.trainer.name == exp
    model_config(cfg.model)  # the frozen, hashable model config
    first = (ROOT / "configs" / "exp" / f"{exp}.yaml").read_text().splitlines()[:6]
    assert any("Command:" in x for x in first) and any("Runtime:" in x for x in first)


def test_required_presets_exist():
    want = {
        "curriculum",
        "uniform",
        "prioritized",
        "rest",
        "policy_gradient",
        "length_penalty",
        "partial_rollout",
    }
    assert want <= set(EXPS)


def test_unknown_key_and_wrong_type_are_named():
    with pytest.raises(ConfigCompositionException, match="bogus"):
        _compose("+exp=curriculum", "trainer.bogus=1")
    with pytest.raises((ConfigCompositionException, ValidationError), match="batch_prompts"):
        _compose("+exp=curriculum", "sampler.batch_prompts=many")


def test_impossible_combinations_fail_before_compute():
    cfg = _compose("+exp=curriculum", "rollout.max_new_tokens=500")
    with pytest.raises(ValueError, match="rollout.max_prompt_len \\+ rollout.max_new_tokens"):
        validate(cfg)
    cfg = _compose("+exp=curriculum", "sampler.samples_per_prompt=1")
    with pytest.raises(ValueError, match="samples_per_prompt >= 2"):
        validate(cfg)
    cfg = _compose("+exp=curriculum", "sampler.hard_bands=[add9]")
    with pytest.raises(ValueError, match="add9"):
        validate(cfg)
    with pytest.raises(ValueError, match="num_kv_heads"):
        model_config(_compose("+exp=curriculum", "model.num_kv_heads=3").model)


def test_cfg_job_prints_resolved_config():
    out = subprocess.run(
        [sys.executable, "-m", "experiments.run", "+exp=uniform", "--cfg", "job"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "name: uniform" in out and "batch_prompts:" in out


def _numeric_keys(node, prefix=""):
    from omegaconf import OmegaConf

    for key, value in node.items():
        if OmegaConf.is_dict(value):
            yield from _numeric_keys(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield f"{prefix}{key}"


def test_every_numeric_option_out_of_range_is_refused_by_name():
    """Each number of the main job's config set to -5 (no option takes it) is refused
    before any compute, naming the key; algo.lr=-1 once trained a whole run."""
    import copy

    from omegaconf import OmegaConf

    base = _compose("+exp=curriculum")
    keys = list(_numeric_keys(base))
    assert "algo.lr" in keys and "sampler.batch_prompts" in keys and len(keys) > 60
    for key in keys:
        cfg = copy.deepcopy(base)
        OmegaConf.update(cfg, key, -5)
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            validate(cfg)


@pytest.mark.parametrize(
    "override, key",
    [
        ("algo.lr=-1", "algo.lr"),
        ("sft.lr=0", "sft.lr"),
        ("rollout.top_p=1.5", "rollout.top_p"),
        ("sampler.easy_fraction=2", "sampler.easy_fraction"),
        ("trainer.eval_every=0", "trainer.eval_every"),
        ("algo.loss.tau=nan", "algo.loss.tau"),
        ("mesh.data=0", "mesh.data"),
        ("trainer.job=bogus", "trainer.job"),
    ],
)
def test_bad_values_are_refused_naming_the_key(override, key):
    cfg = _compose("+exp=curriculum", override)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        validate(cfg)


def test_cli_refuses_a_negative_learning_rate_before_compute():
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.run", "+exp=curriculum", "algo.lr=-1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "algo.lr=-1" in proc.stderr and "SFT" not in proc.stderr
