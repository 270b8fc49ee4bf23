"""Held-out evaluation per difficulty band: greedy accuracy and mean response length."""

import jax
import numpy as np

from k15_jax.data.templates import render
from k15_jax.rewards.math import score_math
from k15_jax.rollout import driver
from k15_jax.rollout.buffer import RolloutBuffer
from k15_jax.rollout.texts import request_rows, response_texts


def heldout(setup, per_band: int) -> list[tuple[str, str, str]]:
    """(prompt text given to the model, reference, band) for every held-out problem.

    setup: anything with `suite` and `template` (a train Setup or a prompt source)."""
    out = []
    for band in setup.suite.bands:
        for t in setup.suite.eval_tasks(band)[:per_band]:
            out.append((render(setup.template, t.prompt), t.reference, band))
    return out


def decode(engine, setup, prompts, images=None):
    """One response per prompt id list, decoded with the engine's sampling options (greedy for
    the held-out evaluation). Returns (response texts [N], response tokens [N] float64), in
    the order of `prompts`. images: {f"eval{i}": patches} for the image prompts of a vision run.
    """
    ids = [f"eval{i}" for i in range(len(prompts))]
    rollouts, group_ids, _, _ = driver.collect(
        engine,
        list(zip(ids, prompts)),
        k=1,
        iteration=0,
        key=jax.random.key(0),
        buffer=RolloutBuffer(),
        images=images,
    )
    rows = request_rows(group_ids, ids, 1)
    texts = response_texts(rollouts, rows, setup.tokenizer, setup.template)
    return texts, np.asarray(rollouts.length)[rows].astype(np.float64)


def decode_and_score(engine, setup, prompts, references, images=None):
    """`decode`, scored by the math verifier: (correct [N] float64, response tokens [N])."""
    texts, length = decode(engine, setup, prompts, images)
    correct, _ = score_math(texts, list(references))
    return np.asarray(correct, np.float64), length


def evaluate(engine, setup, per_band: int) -> dict[str, tuple[float, float]]:
    """{band: (accuracy, mean response tokens)} on the held-out split, decoding with the
    engine's own sampling options (a greedy engine for the reproducible default)."""
    items = heldout(setup, per_band)
    prompts = [setup.tokenizer.encode(p, bos=True) for p, _, _ in items]
    correct, lens = decode_and_score(engine, setup, prompts, [r for _, r, _ in items])
    bands = np.array([b for _, _, b in items])
    return {
        b: (float(correct[bands == b].mean()), float(lens[bands == b].mean()))
        for b in setup.suite.bands
    }
