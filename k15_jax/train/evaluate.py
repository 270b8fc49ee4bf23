"""Held-out evaluation per difficulty band: greedy accuracy and mean response length."""

import jax
import numpy as np

from k15_jax.data.templates import render, response_text
from k15_jax.rewards.math import score_math
from k15_jax.rollout import driver
from k15_jax.rollout.buffer import RolloutBuffer


def heldout(setup, per_band: int) -> list[tuple[str, str, str]]:
    """(prompt text given to the model, reference, band) for every held-out problem."""
    out = []
    for band in setup.suite.bands:
        for t in setup.suite.eval_tasks(band)[:per_band]:
            out.append((render(setup.template, t.prompt), t.reference, band))
    return out


def evaluate(engine, setup, per_band: int) -> dict[str, tuple[float, float]]:
    """{band: (accuracy, mean response tokens)} on the held-out split, decoding with the
    engine's own sampling options (a greedy engine for the reproducible default)."""
    items = heldout(setup, per_band)
    tok = setup.tokenizer
    requests = [(f"eval{i}", tok.encode(p, bos=True)) for i, (p, _, _) in enumerate(items)]
    rollouts, group_ids, _, _ = driver.collect(
        engine,
        requests,
        k=1,
        iteration=0,
        key=jax.random.key(0),
        buffer=RolloutBuffer(),
    )
    order = {g: n for n, g in enumerate(group_ids)}
    tokens, plen, length = (
        np.asarray(x) for x in (rollouts.tokens, rollouts.prompt_len, rollouts.length)
    )
    texts, lens = [], []
    for i in range(len(items)):
        n = order[f"eval{i}"]
        texts.append(
            response_text(setup.template, tok.decode(tokens[n, plen[n] : plen[n] + length[n]]))
        )
        lens.append(length[n])
    correct, _ = score_math(texts, [r for _, r, _ in items])
    bands = np.array([b for _, _, b in items])
    lens = np.array(lens, np.float64)
    return {
        b: (float(correct[bands == b].mean()), float(lens[bands == b].mean()))
        for b in setup.suite.bands
    }
