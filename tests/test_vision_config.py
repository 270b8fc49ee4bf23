"""The `vision` config group: the preset validates, impossible combinations fail by name."""

import pytest

from k15_jax.config import validate
from k15_jax.train.vision.config import check, vision_model_config
from tests.test_config import _compose


def test_vision_preset_builds_a_vision_model_config():
    cfg = _compose("+exp=vision")
    validate(cfg)
    v = vision_model_config(cfg.vision)
    assert v.num_patches == 16 and v.patch_dim == 192
    assert not _compose("+exp=curriculum").vision.enabled  # text-only unless enabled


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("vision.model.image_token_id=5", "is a text token of the tokenizer"),
        ("vision.model.image_token_id=500", "model.vocab_size"),
        ("rollout.max_prompt_len=16", "rollout.max_prompt_len=16 cannot hold"),
        ("vision.visual.eval_fraction=0.2", "data.synthetic.eval_fraction"),
        (
            "vision.visual.bands=[count9] sampler.hard_bands=[count9]",
            "unknown visual band 'count9'",
        ),
        ("vision.model.patch_size=7", "not a multiple of vision.patch_size"),
    ],
)
def test_bad_vision_options_are_named(override, match):
    cfg = _compose("+exp=vision", *override.split())
    with pytest.raises(ValueError, match=match):
        validate(cfg)
        check(cfg, tokenizer_vocab=100)
