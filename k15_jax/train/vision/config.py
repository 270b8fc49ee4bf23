"""The `vision` config group: an image encoder in the policy and the visual tasks it trains on.

vision.enabled=true          params gain params["vision"] (model/vit.py); prompts of
                             the visual suite carry images; text prompts are unchanged
vision.model.*               the ViT (VisionConfig fields; image_token_id must be an
                             id the tokenizer never produces, below model.vocab_size)
vision.visual.*              the embedded visual suite (data/visual.py)
vision.mathvista.path        an optional local MathVista-format jsonl, evaluated as
                             band vision.mathvista.band
vision.sft_image_fraction    share of SFT examples drawn from the visual suite
vision.init_from_hf          a local SigLIP checkpoint for the tower (model/siglip.py)
"""

import dataclasses

from omegaconf import OmegaConf

from k15_jax.data.mathvista import MathVistaConfig
from k15_jax.data.visual import VisualConfig, parse_visual_band
from k15_jax.model.config import VisionConfig

VisionSchema = dataclasses.make_dataclass(
    "VisionSchema",
    [
        (f.name, f.type, dataclasses.field(default=f.default))
        for f in dataclasses.fields(VisionConfig)
    ],
)


@dataclasses.dataclass
class VisionRunConfig:
    enabled: bool = False
    model: VisionSchema = dataclasses.field(default_factory=VisionSchema)
    visual: VisualConfig = dataclasses.field(default_factory=VisualConfig)
    mathvista: MathVistaConfig = dataclasses.field(default_factory=MathVistaConfig)
    sft_image_fraction: float = 0.5
    init_from_hf: str | None = None


def vision_model_config(vision) -> VisionConfig:
    """The Hydra `vision.model` node -> the frozen VisionConfig."""
    node = vision.model
    kw = OmegaConf.to_container(node) if OmegaConf.is_config(node) else vars(node)
    return VisionConfig(**kw)


def check(cfg, tokenizer_vocab: int | None = None) -> None:
    """Fails naming the keys when the vision options cannot work with the rest."""
    v = cfg.vision
    if not v.enabled:
        return
    vm = vision_model_config(v)
    if not 0 <= vm.image_token_id < cfg.model.vocab_size:
        raise ValueError(
            f"vision.model.image_token_id={vm.image_token_id} must be in "
            f"[0, model.vocab_size={cfg.model.vocab_size})"
        )
    if tokenizer_vocab is not None and vm.image_token_id < tokenizer_vocab:
        raise ValueError(
            f"vision.model.image_token_id={vm.image_token_id} is a text token of the "
            f"tokenizer (ids < {tokenizer_vocab}); set it to {tokenizer_vocab} or above"
        )
    for band in v.visual.bands:
        parse_visual_band(band)
    if v.visual.eval_fraction != cfg.data.synthetic.eval_fraction:
        raise ValueError(
            f"vision.visual.eval_fraction={v.visual.eval_fraction} differs from "
            f"data.synthetic.eval_fraction={cfg.data.synthetic.eval_fraction}; the text-"
            "rendered bands share the text suite's held-out split, so set them equal"
        )
    if not 0.0 <= v.sft_image_fraction <= 1.0:
        raise ValueError(f"vision.sft_image_fraction={v.sft_image_fraction} must be in [0, 1]")
    need = vm.max_images * vm.num_patches + 2
    if cfg.rollout.max_prompt_len < need:
        raise ValueError(
            f"rollout.max_prompt_len={cfg.rollout.max_prompt_len} cannot hold "
            f"{vm.max_images} image(s) of {vm.num_patches} patches plus text; raise it "
            f"above {need}"
        )
