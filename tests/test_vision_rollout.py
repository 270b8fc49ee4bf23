"""Image prompts through the rollout engine and the RL loss: one prefill per prompt shared by
its K samples, and the trainer's forward sees the features the rollout saw."""

import jax
import numpy as np
import pytest

from k15_jax.model.config import VisionConfig
from k15_jax.rollout import RolloutConfig, collect, make_engine
from k15_jax.train.rl_step import make_reference_logprobs
from tests.test_rollout_reference import TINY, tiny_params

V = VisionConfig(
    image_size=16,
    patch_size=8,
    hidden_size=16,
    intermediate_size=32,
    num_layers=1,
    num_heads=2,
    image_token_id=60,
    max_images=2,
)
CFG = TINY.replace(vision=V)
K, MAX_NEW = 3, 6
RCFG = RolloutConfig(
    max_new_tokens=MAX_NEW, max_prompt_len=16, slots=4, steps_per_sync=2, stop_on_repeat=False
)


@pytest.fixture(scope="module")
def rollout():
    params = tiny_params(CFG)
    rng = np.random.default_rng(0)
    img = lambda n: rng.normal(size=(n, V.num_patches, V.patch_dim)).astype(np.float32)
    P = V.num_patches
    text = [5, 6, 7]
    requests = [
        ("a", [1] + [60] * P + text),  # one image
        ("b", [1] + [60] * P + text),  # same tokens, another image
        ("c", [1, 8] + [60] * P + [9] + [60] * P + text),  # two images
        ("t", [1, 9, 10, 11]),  # text only
    ]
    images = {"a": img(1), "b": img(1), "c": img(2)}
    engine = make_engine(CFG, RCFG, eos_id=(), pad_id=0, params=params)
    ro, ids, _, stats = collect(
        engine, requests, k=K, iteration=0, key=jax.random.key(1), images=images
    )
    return params, requests, images, ro, ids, stats, engine


def test_one_image_prefill_per_prompt(rollout):
    *_, ro, ids, stats, _ = rollout
    assert ids == ["a", "b", "c", "t"]
    assert stats["prefill_seqs"] == 4  # 4 prompts, 12 trajectories
    assert np.asarray(ro.length).tolist() == [MAX_NEW] * 12
    # the placeholder is input-only: never sampled (it would be spliced by the trainer)
    mask = np.asarray(ro.response_mask) > 0
    assert not (np.asarray(ro.tokens)[mask] == V.image_token_id).any()


def test_trainer_logprobs_match_the_rollout(rollout):
    params, requests, images, ro, ids, _, _ = rollout
    batch = _row_images(images, ids)
    ref = np.asarray(make_reference_logprobs(CFG)(params, ro.tokens, batch))
    mask = np.asarray(ro.response_mask) > 0
    np.testing.assert_allclose(np.asarray(ro.logp)[mask], ref[mask], atol=2e-4)
    # the images matter: without them (placeholder embeddings instead) log-probs differ
    blind = np.asarray(make_reference_logprobs(CFG)(params, ro.tokens))
    img_rows = np.repeat([True, True, True, False], K)
    assert np.abs(blind - ref)[img_rows[:, None] & mask].max() > 1e-3
    np.testing.assert_allclose(blind[~img_rows], ref[~img_rows], atol=1e-6)


def test_placeholder_count_is_checked(rollout):
    *_, engine = rollout
    with pytest.raises(ValueError, match="image placeholder tokens"):
        collect(
            engine,
            [("x", [1, 60, 60, 5])],
            k=1,
            iteration=0,
            key=jax.random.key(0),
            images={"x": np.zeros((1, V.num_patches, V.patch_dim), np.float32)},
        )


def _row_images(images, ids):
    rows = [images.get(rid) for rid in ids for _ in range(K)]
    batch = np.zeros((len(rows), V.max_images, V.num_patches, V.patch_dim), np.float32)
    for r, im in enumerate(rows):
        if im is not None:
            batch[r, : len(im)] = im
    return batch


def test_micro_batched_gradients_see_the_same_images(rollout):
    """Gradient accumulation splits images with their rows (RL and SFT): the same gradient
    as one pass, and it reaches the ViT (trained jointly)."""
    from k15_jax.model.logprobs import accumulated_grads, token_logprobs
    from k15_jax.train.sft import nll, sft_loss

    params, _, images, ro, ids, _, _ = rollout
    batch = _row_images(images, ids)
    mask = np.asarray(ro.response_mask)
    weight = np.random.default_rng(0).normal(size=mask.shape).astype(np.float32) * mask

    def loss_of_logp(logp):
        return (logp * weight).sum(), {}

    one = jax.grad(lambda p: loss_of_logp(token_logprobs(p, CFG, ro.tokens, images=batch))[0])
    want = one(params)
    logp_of_rows = lambda p, tok, img: token_logprobs(p, CFG, tok, images=img)
    (_, _), got = accumulated_grads(params, logp_of_rows, loss_of_logp, (ro.tokens, batch), 2)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4), want, got)
    assert np.abs(want["vision"]["tower"]["patch_embed"]).max() > 1e-3
    # SFT: the same for packed rows
    seg = np.ones(ro.tokens.shape, np.int32)
    grad_one = jax.grad(lambda p: sft_loss(p, CFG, ro.tokens, seg, mask, batch)[0])(params)
    sft_rows = lambda p, tok, sg, img: token_logprobs(p, CFG, tok, segment_ids=sg, images=img)
    sft_of_logp = lambda lp: nll(lp, mask)
    (_, _), grad_acc = accumulated_grads(params, sft_rows, sft_of_logp, (ro.tokens, seg, batch), 3)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), grad_one, grad_acc)
