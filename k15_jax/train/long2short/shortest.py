"""Shortest rejection sampling (report sec. 2.4): sample n responses per prompt, keep the
shortest correct one, and fine-tune on those. Letters: B prompts, K samples per prompt."""

import numpy as np

from k15_jax.rollout.handover import handover
from k15_jax.train.long2short.samples import Groups, sample_groups, training_prompts
from k15_jax.train.metrics import log
from k15_jax.train.sft import finetune


def shortest_correct(lengths, correct) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt, the shortest response among the correct ones (ties: lowest index).

    lengths [B, K] (tokens), correct [B, K] (nonzero = correct). Returns (idx [B] int64,
    found [B] bool); idx is 0 where the prompt has no correct response (found False).
    """
    lengths = np.asarray(lengths, np.float64)
    correct = np.asarray(correct).astype(bool)
    idx = np.argmin(np.where(correct, lengths, np.inf), axis=1)  # argmin: first of ties
    return idx.astype(np.int64), correct.any(axis=1)


def selected_examples(groups: Groups) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, response ids) of each prompt's shortest complete-and-correct sample."""
    idx, found = shortest_correct(groups.length, groups.complete)
    return [(groups.prompts[b], groups.response(b, int(idx[b]))) for b in np.flatnonzero(found)]


def shortest_rejection_sampling(
    setup, engine, params, cfg, key, writer=None, phase: str = "l2s/merge_rs"
):
    """Samples cfg.samples responses to cfg.prompts training prompts from `params` (on the
    sampling `engine`), then fine-tunes `params` on the shortest correct ones (cfg.sft).

    Returns (params, stats).
    """
    engine = handover(engine, params)
    tasks = training_prompts(setup, cfg.prompts, setup.cfg.trainer.seed)
    groups = sample_groups(setup, engine, tasks, cfg.samples, key)
    data = selected_examples(groups)
    stats = {
        "sampled_accuracy": float(groups.correct.mean()),
        "sampled_len": float(groups.length.mean()),
        "selected": len(data),
        "selected_len": float(np.mean([len(r) for _, r in data])) if data else 0.0,
    }
    log.info(
        "%s: %d of %d prompts have a correct sample; shortest ones average %.1f tokens "
        "(all samples %.1f)",
        phase,
        len(data),
        len(tasks),
        stats["selected_len"],
        stats["sampled_len"],
    )
    if not data:
        log.warning("%s: no correct sample, nothing to fine-tune on; params unchanged", phase)
        return params, stats

    def examples(step: int):  # every selected sample once per pass, reshuffled each step
        order = np.random.default_rng([setup.cfg.trainer.seed, 32, step]).permutation(len(data))
        return [data[i] for i in order]

    params = finetune(setup, params, examples, cfg.sft, writer, phase)
    return params, stats
