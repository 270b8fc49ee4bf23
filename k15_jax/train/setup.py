"""What every job builds once from its config: the model, mesh, tokenizer, prompt source and
run directory (`build`), the rollout engines (`Setup.engine`) and the initial params.

The RL loop, long2short, the reward-model job and the vision runs all start from a `Setup`.
"""

import dataclasses
import fcntl
from pathlib import Path

import jax
from omegaconf import OmegaConf

from k15_jax import distributed
from k15_jax.config import file_sources, model_config, validate
from k15_jax.data.synthetic import SyntheticSuite
from k15_jax.data.templates import template
from k15_jax.model.params import init_params
from k15_jax.model.tokenizer import CharTokenizer
from k15_jax.rollout.engine import make_engine
from k15_jax.sharding import TRAIN_RULES, make_mesh, param_shardings
from k15_jax.train.prompts import FilePrompts, TextPrompts


@dataclasses.dataclass
class Setup:
    cfg: object
    model: object  # ModelConfig (with model.vision for a vision run)
    mesh: object
    train_shardings: dict
    tokenizer: CharTokenizer
    suite: SyntheticSuite  # the text suite (bands, held-out split)
    template: object
    run_dir: Path
    prompts: TextPrompts  # or train.vision.prompts.VisionPrompts

    @property
    def pool(self) -> list:
        """The training tasks the samplers draw from (text, and images in a vision run)."""
        return self.prompts.pool

    def engine(self, params=None, **rollout):
        """A rollout engine under cfg.rollout with `rollout` overrides (e.g. greedy=True,
        partial=False), on the run's mesh, stopping at the tokenizer's EOS; multi-host safe."""
        rollout_cfg = dataclasses.replace(OmegaConf.to_object(self.cfg.rollout), **rollout)
        engine = make_engine(
            self.model,
            rollout_cfg,
            eos_id=getattr(self.tokenizer, "stop_ids", None) or self.tokenizer.eos_id,
            pad_id=self.tokenizer.pad_id,
            mesh=self.mesh,
            params=params,
        )
        return distributed.multihost_engine(engine)


def model_and_tokenizer(cfg):
    """(ModelConfig, tokenizer): the embedded character model, or, for file sources, the
    checkpoint's config.json shape and tokenizer (trainer.init_from_hf) with the run-time
    options (dtype, remat, attention, log-prob chunk) of cfg.model."""
    if not file_sources(cfg.data):
        model, tokenizer = model_config(cfg.model), CharTokenizer()
        if model.vocab_size < tokenizer.vocab_size:
            raise ValueError(
                f"model.vocab_size={model.vocab_size} is smaller than the character "
                f"tokenizer's {tokenizer.vocab_size}; set model.vocab_size >= "
                f"{tokenizer.vocab_size}"
            )
        return model.replace(
            bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id
        ), tokenizer
    from k15_jax.model.hf import read_hf_config
    from k15_jax.model.tokenizer import load_tokenizer

    hf = cfg.trainer.init_from_hf
    if not hf:
        raise ValueError(
            "data.train / data.eval name files: set trainer.init_from_hf to a HF checkpoint "
            "directory (config.json, *.safetensors, tokenizer.json, tokenizer_config.json)"
        )
    runtime = {
        k: cfg.model[k] for k in ("dtype", "param_dtype", "attention_impl", "logits_chunk", "remat")
    }
    model, tokenizer = read_hf_config(hf, **runtime), load_tokenizer(hf)
    if tokenizer.vocab_size > model.vocab_size:
        raise ValueError(
            f"the tokenizer in {hf} has {tokenizer.vocab_size} tokens but the model's "
            f"embedding has vocab_size={model.vocab_size}; use the checkpoint's own tokenizer"
        )
    return model, tokenizer


def build(cfg) -> Setup:
    """Validates cfg, then builds the run's fixed parts and locks its run directory."""
    model, tokenizer = model_and_tokenizer(cfg)
    validate(cfg, tokenizer.vocab_size, model)
    run_dir = Path(cfg.trainer.run_dir).absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    _lock(run_dir, jax.process_index())
    suite = SyntheticSuite(OmegaConf.to_object(cfg.data.synthetic))
    if file_sources(cfg.data):  # fails naming file and line before anything compiles
        prompts = FilePrompts(cfg, tokenizer, run_dir)
        tmpl = prompts.template
    else:
        tmpl = template(cfg.data.template)
        prompts = TextPrompts(suite, tokenizer, tmpl)
    if cfg.vision.enabled:  # an image encoder in the policy; visual tasks join the pool
        from k15_jax.train.vision.config import vision_model_config
        from k15_jax.train.vision.data import VisionData
        from k15_jax.train.vision.prompts import VisionPrompts

        model = model.replace(vision=vision_model_config(cfg.vision))
        data = VisionData(cfg.vision, model.vision, suite)
        prompts = VisionPrompts(suite, tokenizer, tmpl, data)
    mesh = make_mesh(cfg.mesh)
    return Setup(
        cfg=cfg,
        model=model,
        mesh=mesh,
        train_shardings=param_shardings(model, mesh, TRAIN_RULES),
        tokenizer=tokenizer,
        suite=suite,
        template=tmpl,
        run_dir=run_dir,
        prompts=prompts,
    )


_LOCKS: dict = {}  # lock file -> open handle, held for the process lifetime


def _lock(run_dir: Path, process: int = 0) -> None:
    """One run per run directory: two would interleave metrics and checkpoints. (Each
    process of a multi-host run holds its own lock file; a second job of the same process,
    e.g. long2short after the RL job, reuses the lock it holds.)"""
    path = run_dir / (".lock" if process == 0 else f".lock.{process}")
    if path in _LOCKS:
        return
    handle = open(path, "w")  # noqa: SIM115 - held for the process lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RuntimeError(
            f"another process is already running in {run_dir}; wait for it or set "
            "trainer.run_dir (or trainer.seed / trainer.name) to use another directory"
        ) from None
    _LOCKS[path] = handle


def initial_params(s: Setup):
    """Random init (trainer.seed) or a local HF checkpoint (trainer.init_from_hf); a vision
    run adds its tower (random, or a pretrained SigLIP from vision.init_from_hf)."""
    vision = s.model.vision is not None
    if s.cfg.trainer.init_from_hf:
        from k15_jax.model.hf import load_hf

        _, params = load_hf(s.cfg.trainer.init_from_hf, shardings=s.train_shardings)
        if not vision:
            return params
        key = jax.random.key(s.cfg.trainer.seed)  # the decoder checkpoint has no vision part
        params["vision"] = init_params(s.model, key, s.train_shardings)["vision"]
    else:
        params = init_params(s.model, jax.random.key(s.cfg.trainer.seed), s.train_shardings)
    if vision and s.cfg.vision.init_from_hf:  # a pretrained SigLIP tower
        from k15_jax.model.siglip import load_siglip

        _, tower = load_siglip(s.cfg.vision.init_from_hf, s.model.vision)
        params["vision"]["tower"] = jax.device_put(tower, s.train_shardings["vision"]["tower"])
    return params
