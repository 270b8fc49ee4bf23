"""The fused RL update (k15_jax/train/rl_fused.py) against the straightforward one, and no
recompiles from one iteration to the next.

The oracle shares nothing with the fused program but the model and the loss: a separately
jitted reference pass, the off-policy weights from their own program, and the M steps run one
at a time (`rl_step.make_update` with M = 1, the Adam state carried on the host side).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from k15_jax.model import ModelConfig, init_params
from k15_jax.rl.config import AlgoConfig
from k15_jax.train import rl_fused, rl_step
from k15_jax.train.compiles import count_compiles

MODEL = ModelConfig(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    logits_chunk=16,
)
B, K, P, T, IT = 3, 4, 5, 20, 7  # groups, samples, prompt tokens, tokens, iteration
# float32: the peeled first step may fuse differently from the scan body, and the plain
# form's reference pass is its own program (logp - ref at step 0 is ~1 ulp there, 0 here)
RTOL, ATOL = 2e-5, 1e-6
# Adam divides by sqrt(v): a last-bit change of a near-zero gradient (|g| ~ eps) moves a
# param by a visible part of a step of size lr = 1e-2; seen up to 2.5e-5, allowed 1% of lr.
# The gradients themselves are compared tightly (grad_norm and the losses, RTOL).
PARAM_ATOL = 1e-4


def rollout_batch(seed=0):
    """tokens, rollout logp, version [N, T], rewards [B, K], mask [N, T]: mixed rewards in
    groups 0 and 1, equal rewards (no signal) in group 2; the first response tokens of every
    other row are older than this iteration (partial rollouts)."""
    rng = np.random.default_rng(seed)
    N = B * K
    tokens = rng.integers(0, MODEL.vocab_size, (N, T)).astype(np.int32)
    lengths = rng.integers(3, T - P + 1, N)
    resp = (np.arange(T) >= P) & (np.arange(T) < P + lengths[:, None])
    version = np.where(resp, IT, -1).astype(np.int32)
    version[::2, P : P + 2] = IT - 1
    rewards = rng.integers(0, 2, (B, K)).astype(np.float32)
    rewards[0], rewards[1, :2], rewards[1, 2:], rewards[2] = [0, 1, 0, 1], 0, 1, 1
    mask = rl_step.loss_mask(resp, rewards, AlgoConfig())
    logp = np.where(resp, -rng.uniform(0.1, 4.0, (N, T)), 0).astype(np.float32)
    return tokens, logp, version, rewards, mask


def one_by_one(params, batch, cfg: AlgoConfig):
    """The straightforward update: reference pass, weights, then M single steps."""
    tokens, rollout_logp, version, rewards, mask = map(jnp.asarray, batch)
    trainer = rl_step.make_reference_logprobs(MODEL)(params, tokens)
    weights, wm = rl_step.make_weights(cfg)(mask, trainer, rollout_logp, version, IT)
    ref = trainer if cfg.trainer_ref_logp else rollout_logp
    step, optimizer = rl_step.make_update(MODEL, dataclasses.replace(cfg, updates_per_iteration=1))
    opt_state, ms = optimizer.init(params), []
    for _ in range(cfg.updates_per_iteration):
        params, opt_state, m = step(params, opt_state, tokens, ref, rewards, weights)
        ms.append(m)
    return params, trainer, wm, ms


def fused(params, batch, cfg: AlgoConfig):
    tokens, rollout_logp, version, rewards, mask = map(jnp.asarray, batch)
    update = rl_fused.make_fused_update(MODEL, cfg)
    return update(params, tokens, rollout_logp, version, rewards, mask, IT)


def close(a, b, what, atol=ATOL):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), RTOL, atol, err_msg=what)


@pytest.mark.parametrize(
    "cfg",
    [
        AlgoConfig(lr=1e-2, updates_per_iteration=3),
        AlgoConfig(lr=1e-2, updates_per_iteration=2, off_policy="tis", trainer_ref_logp=False),
        AlgoConfig(lr=1e-2, updates_per_iteration=1, off_policy="none"),
    ],
    ids=["exclude_old_M3", "tis_rollout_ref_M2", "none_M1"],
)
def test_fused_update_matches_reference_pass_and_single_steps(cfg):
    params = init_params(MODEL, jax.random.key(0))
    batch = rollout_batch()
    want_p, want_ref, want_wm, ms = one_by_one(params, batch, cfg)
    got_p, got_ref, got_wm, got_m = fused(params, batch, cfg)
    moved = max(
        float(jnp.abs(a - b).max()) for a, b in zip(*map(jax.tree.leaves, (want_p, params)))
    )
    assert moved > 1e-4  # the steps did move the params: the comparison means something
    close(got_p, want_p, "params after M steps", PARAM_ATOL)
    close(got_ref, want_ref, "trainer log-probs")
    close(got_wm, want_wm, "off-policy metrics")
    first = {k: v for k, v in ms[0].items() if not k.endswith("_last")}
    last = {k: ms[-1][k] for k in ms[0] if k.endswith("_last")}
    close({k: got_m[k] for k in first}, first, "first-step metrics")
    close({k: got_m[k] for k in last}, last, "last-step metrics")
    assert set(got_m) == set(ms[0])


def test_fused_update_equals_the_plain_scan():
    """Against make_update's M-step scan, as the main job ran it before."""
    cfg = AlgoConfig(lr=1e-2, updates_per_iteration=4)
    params = init_params(MODEL, jax.random.key(1))
    tokens, rollout_logp, version, rewards, mask = map(jnp.asarray, rollout_batch(1))
    ref = rl_step.make_reference_logprobs(MODEL)(params, tokens)
    weights, _ = rl_step.make_weights(cfg)(mask, ref, rollout_logp, version, IT)
    update, optimizer = rl_step.make_update(MODEL, cfg)
    want_p, _, want_m = update(params, optimizer.init(params), tokens, ref, rewards, weights)
    got_p, _, _, got_m = fused(params, (tokens, rollout_logp, version, rewards, mask), cfg)
    close(got_p, want_p, "params", PARAM_ATOL)
    close(got_m, want_m, "metrics")


def test_no_counted_token_takes_no_step():
    cfg = AlgoConfig(lr=1e-2)
    params = init_params(MODEL, jax.random.key(0))
    tokens, logp, version, rewards, mask = rollout_batch()
    got_p, got_ref, wm, m = fused(params, (tokens, logp, version, rewards, 0 * mask), cfg)
    assert float(wm["offpolicy/weight_mean"]) == 0
    for x, y in zip(jax.tree.leaves(got_p), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert all(float(v) == 0 for v in m.values())
    close(got_ref, rl_step.make_reference_logprobs(MODEL)(params, jnp.asarray(tokens)), "ref")


def test_later_iterations_compile_nothing(tmp_path):
    """The main job's update path (iteration.update, host side included): iterations 2 and
    3 with the first's shapes compile nothing (the iteration number is traced)."""
    from experiments.bench_rl_update import fake_collected, main_job_setup
    from k15_jax.train import iteration
    from k15_jax.train.setup import initial_params

    small = ["sampler.batch_prompts=2", "sampler.samples_per_prompt=4", "rollout.max_new_tokens=16"]
    s = main_job_setup(tmp_path, *small)
    fns = iteration.make_fns(s)
    params = initial_params(s)  # on the mesh, as the update returns them (else one retrace)
    counts = []
    for it in range(3):
        c, sc = fake_collected(s, it)
        with count_compiles() as n:
            params, metrics, _ = iteration.update(s, params, c, sc, fns, it)
            jax.block_until_ready(params)
        assert "train/loss" in metrics  # the steps ran
        counts.append(n[0])
    assert counts[0] > 0  # the counter sees compilations at all
    assert counts[1:] == [0, 0], counts
