"""Shortest rejection sampling and DPO long2short (report sec. 2.4) on real sampled outputs
of a small trained policy: the selected sample is the shortest correct one, the DPO pairs
follow the rule, and the DPO stage starts at log 2 against its frozen reference."""

import math

import jax
import numpy as np
import pytest
from omegaconf import OmegaConf

from k15_jax.rollout.engine import make_engine
from k15_jax.rollout.handover import handover
from k15_jax.train.long2short import dpo, shortest
from k15_jax.train.long2short.samples import sample_groups, training_prompts
from tests.long2short_policy import boxed_correct, mixed_policy, stage_cfg
from tests.long2short_reference import np_pairs

K = 8


@pytest.fixture(scope="module")
def policy():
    s, params = mixed_policy()
    engine = make_engine(
        s.model,
        OmegaConf.to_object(s.cfg.rollout),
        eos_id=s.tokenizer.eos_id,
        pad_id=s.tokenizer.pad_id,
        mesh=s.mesh,
        params=params,
    )
    tasks = training_prompts(s, 48, seed=3)
    groups = sample_groups(s, engine, tasks, K, jax.random.key(5))
    return s, params, engine, groups


def independent_view(s, groups):
    """Per sample, from the raw tokens alone: response ids (up to and including the stop
    token), length, whether it stopped, and correctness by a separate verifier."""
    tok, B = s.tokenizer, len(groups.tasks)
    resp, length, stopped, correct = (
        [],
        np.zeros((B, K), int),
        np.zeros((B, K), bool),
        np.zeros((B, K), bool),
    )
    for b in range(B):
        prompt_len = len(groups.prompts[b])
        row = []
        for j in range(K):
            ids = groups.tokens[b, j, prompt_len:].tolist()
            end = ids.index(tok.eos_id) + 1 if tok.eos_id in ids else None
            ids = ids[:end] if end else [i for i in ids if i != tok.pad_id]
            row.append(ids)
            length[b, j] = len(ids)
            stopped[b, j] = end is not None
            correct[b, j] = boxed_correct(tok.decode(ids), groups.tasks[b].reference)
        resp.append(row)
    return resp, length, stopped, correct


def test_samples_are_mixed(policy):
    """The fixture is fit for purpose: correct and incorrect samples, varied lengths."""
    s, _, _, groups = policy
    _, length, _, correct = independent_view(s, groups)
    assert 0.2 < correct.mean() < 0.95
    assert np.ptp(length[correct]) >= 8  # short \boxed{} answers and worked solutions
    np.testing.assert_array_equal(correct, groups.correct)
    np.testing.assert_array_equal(length, groups.length)


def test_selected_sample_is_the_shortest_correct(policy):
    s, _, _, groups = policy
    resp, length, stopped, correct = independent_view(s, groups)
    want = []
    for b in range(len(groups.tasks)):
        ok = [j for j in range(K) if correct[b, j] and stopped[b, j]]
        if ok:
            j = min(ok, key=lambda j: (length[b, j], j))
            want.append((groups.prompts[b], resp[b][j]))
    got = shortest.selected_examples(groups)
    assert got == want and len(want) >= 10
    # rejection matters here: some prompt has a shorter incorrect sample than the one kept
    kept_len = {tuple(p): len(r) for p, r in want}
    assert any(
        length[b].min() < kept_len.get(tuple(groups.prompts[b]), 0)
        for b in range(len(groups.tasks))
    )


def test_shortest_correct_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(200):
        lengths = rng.integers(1, 6, (3, 5))
        correct = rng.random((3, 5)) < 0.4
        idx, found = shortest.shortest_correct(lengths, correct)
        for b in range(3):
            ok = [j for j in range(5) if correct[b, j]]
            assert found[b] == bool(ok)
            if ok:
                assert idx[b] == min(ok, key=lambda j: (lengths[b, j], j))


def test_rejection_sampling_stage_fine_tunes_on_the_selection(policy, monkeypatch):
    s, params, engine, _ = policy
    cfg = stage_cfg(s, "shortest")
    cfg.prompts, cfg.sft.steps, cfg.sft.rows = 24, 2, 4
    seen = {}

    def spy(setup, p, examples, c, writer=None, phase=""):
        seen["examples"], seen["steps"] = examples(0), c.steps
        return jax.tree.map(lambda x: x + 1.0, p)

    monkeypatch.setattr(shortest, "finetune", spy)
    key = jax.random.key(11)
    new, stats = shortest.shortest_rejection_sampling(s, engine, params, cfg, key)
    # the same prompts and key, sampled again here: the stage trained on their selection
    again = sample_groups(
        s, handover(engine, params), training_prompts(s, 24, s.cfg.trainer.seed), cfg.samples, key
    )
    want = shortest.selected_examples(again)
    assert sorted(seen["examples"]) == sorted(want) and seen["steps"] == 2
    assert stats["selected"] == len(want) > 0
    leaf = jax.tree.leaves(params)[0]
    np.testing.assert_array_equal(np.asarray(jax.tree.leaves(new)[0]), np.asarray(leaf) + 1.0)


def test_dpo_pairs_follow_the_rule_on_sampled_outputs(policy):
    s, _, _, groups = policy
    _, length, _, correct = independent_view(s, groups)
    want = np_pairs(length, correct)
    pairs, tokens, mask = dpo.pair_rows(groups, 1.5)
    keep = sorted({b for b, _, _ in want})
    pos, neg, valid = (np.asarray(x) for x in pairs)
    got = {(keep[i], int(pos[i]), int(neg[i, m])) for i, m in zip(*np.nonzero(valid), strict=True)}
    assert got == want
    kinds = {"incorrect": 0, "long correct": 0}
    for b, _, n in want:
        kinds["long correct" if correct[b, n] else "incorrect"] += 1
    assert min(kinds.values()) >= 3, kinds  # both rules are exercised
    for i, b in enumerate(keep):  # the kept rows are those samples, tokens and masks
        for r, j in enumerate([pos[i], neg[i, 0], neg[i, 1]]):
            np.testing.assert_array_equal(tokens[i, r], groups.tokens[b, j])
            np.testing.assert_array_equal(mask[i, r], groups.response_mask[b, j])


class Records:
    def __init__(self):
        self.rows = []

    def write(self, record, step):
        self.rows.append(record)


def test_dpo_stage_starts_at_log2_and_raises_the_margin(policy):
    s, params, engine, _ = policy
    cfg = stage_cfg(s, "dpo")
    cfg.prompts, cfg.batch_prompts, cfg.lr, cfg.steps = 32, 8, 3e-3, 12
    records = Records()
    trained, stats = dpo.dpo_stage(s, engine, params, cfg, jax.random.key(2), records)
    first = records.rows[0]  # step 1, measured before its update: policy == frozen reference
    assert first["step"] == 1 and first["dpo/pair_count"] > 0
    assert abs(first["dpo/loss"] - math.log(2)) < 1e-5 and abs(first["dpo/margin"]) < 1e-5
    # margins recomputed here against the starting params: positives gained on negatives
    prompts = training_prompts(s, 32, s.cfg.trainer.seed + 1)
    groups = sample_groups(s, handover(engine, params), prompts, cfg.samples, jax.random.key(2))
    pairs, tokens, mask = dpo.pair_rows(groups, cfg.loss.length_ratio)
    flat = lambda x: x.reshape(-1, x.shape[-1])

    def seq(p):
        return np.asarray(dpo.sequence_logps_jit(p, s.model, flat(tokens), flat(mask)))

    delta = (seq(trained) - seq(params)).reshape(-1, 3)  # log pi_theta - log pi_ref per row
    valid = np.asarray(pairs.valid)
    margins = (delta[:, :1] - delta[:, 1:])[valid]
    assert stats["prompts_with_pairs"] == len(valid)
    assert margins.mean() > 0 and (margins > 0).mean() > 0.5
