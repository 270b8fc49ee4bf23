"""Validation of `collect`'s inputs (rollout/driver.py), all before any work so that no
request is half-processed or dropped: the options, the requests, the partial-rollout buffer
and the image prompts."""

import numpy as np

from k15_jax.rollout.buffer import RolloutBuffer
from k15_jax.rollout.types import RolloutConfig

# Options that are compiled into the engine; `collect` may only change the others.
_ENGINE_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "greedy",
    "max_new_tokens",
    "max_prompt_len",
    "slots",
    "repeat_ngram",
    "repeat_min_repeats",
    "repeat_window",
    "stop_on_repeat",
)


def check_collect_cfg(engine, cfg: RolloutConfig) -> None:
    for f in _ENGINE_FIELDS:
        if getattr(cfg, f) != getattr(engine.cfg, f):
            raise ValueError(
                f"collect: rollout.{f}={getattr(cfg, f)!r} differs from the engine's "
                f"{getattr(engine.cfg, f)!r}; build the engine (make_engine) with this config"
            )
    if cfg.budget_tokens < 1 or cfg.steps_per_sync < 1:
        raise ValueError("rollout.budget_tokens and rollout.steps_per_sync must be >= 1")


def parse_requests(requests, cfg: RolloutConfig, vocab: int, taken: set[str]):
    """Validates every request before any work, so none is half-processed or dropped."""
    out, seen = [], set(taken)
    for i, req in enumerate(requests):
        if len(req) not in (2, 3):
            raise ValueError(
                f"request {i}: expected (request_id, prompt_tokens) or "
                f"(request_id, prompt_tokens, max_new_tokens), got {len(req)} fields"
            )
        rid, prompt = str(req[0]), np.asarray(req[1], np.int64).reshape(-1)
        max_new = int(req[2]) if len(req) == 3 else cfg.max_new_tokens
        if rid in seen:
            raise ValueError(
                f"request id {rid!r} appears twice (in this batch or in the partial-rollout "
                "buffer); request ids must be unique across iterations"
            )
        seen.add(rid)
        if prompt.size == 0:
            raise ValueError(
                f"request {rid!r} has an empty prompt; every prompt needs at least one "
                "token (e.g. BOS)"
            )
        if prompt.size > cfg.max_prompt_len:
            raise ValueError(
                f"request {rid!r}: prompt of {prompt.size} tokens exceeds "
                f"rollout.max_prompt_len={cfg.max_prompt_len}; raise rollout.max_prompt_len "
                "or shorten the prompt"
            )
        if prompt.min() < 0 or prompt.max() >= vocab:
            raise ValueError(
                f"request {rid!r}: token ids must be in [0, {vocab}) (model.vocab_size), "
                f"got range [{prompt.min()}, {prompt.max()}]"
            )
        if not 1 <= max_new <= cfg.max_new_tokens:
            raise ValueError(
                f"request {rid!r}: max_new_tokens={max_new} must be in "
                f"[1, rollout.max_new_tokens={cfg.max_new_tokens}]"
            )
        out.append((rid, prompt.astype(np.int32), max_new))
    return out


def check_buffer(buffer: RolloutBuffer, k: int, cfg: RolloutConfig) -> None:
    """Buffered groups must fit this call's K and shapes (e.g. after a config change)."""
    for g in buffer.groups:
        rid = g[0].request_id
        if len(g) != k:
            raise ValueError(
                f"buffered group {rid!r} has {len(g)} samples but collect got k={k}; use one "
                "K per run (or drop the partial-rollout buffer)"
            )
        for t in g:
            if len(t.prompt) > cfg.max_prompt_len or t.max_new > cfg.max_new_tokens:
                raise ValueError(
                    f"buffered trajectory {rid!r}/{t.sample} (prompt {len(t.prompt)}, limit "
                    f"{t.max_new}) does not fit rollout.max_prompt_len={cfg.max_prompt_len} / "
                    f"rollout.max_new_tokens={cfg.max_new_tokens}; keep these options across "
                    "a resume or drop the buffer"
                )
            if not t.done and len(t.response) >= t.max_new:
                raise ValueError(f"buffered trajectory {rid!r}/{t.sample} is full but unfinished")


def check_images(parsed, buffer: RolloutBuffer, images: dict, model_cfg) -> None:
    """Every prompt holds exactly (its images) x (patches per image) placeholders."""
    v = model_cfg.vision
    if v is None:
        raise ValueError("collect got images but the engine's model has no vision config")
    prompts = [(rid, p) for rid, p, _ in parsed]
    prompts += [(g[0].request_id, g[0].prompt) for g in buffer.groups]
    for rid, prompt in prompts:
        m = 0 if images.get(rid) is None else len(images[rid])
        n = int(np.sum(np.asarray(prompt) == v.image_token_id))
        if m > v.max_images or n != m * v.num_patches:
            raise ValueError(
                f"request {rid!r}: {n} image placeholder tokens (id {v.image_token_id}) for "
                f"{m} images of {v.num_patches} patches (vision.max_images={v.max_images}); "
                "put num_patches placeholders per image in the prompt"
            )
