"""Model merging (k15_jax/train/merge.py, report sec. 2.4): an exact weighted average of two
checkpoints, in memory and through the CLI (experiments/merge.py)."""

import json

import jax
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file

from k15_jax.model import ModelConfig, abstract_params, export_hf, load_hf
from k15_jax.model.tokenizer import CharTokenizer
from k15_jax.train.long2short.merge import merge_params

CFG = ModelConfig(
    vocab_size=100,
    hidden_size=32,
    intermediate_size=48,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    tie_embeddings=False,
    max_position_embeddings=64,
)


def init_params(cfg, seed):
    """Random params of cfg's tree (numpy: faster than the jitted init on a busy CPU)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda a: jax.numpy.asarray(rng.normal(0, 0.1, a.shape), a.dtype), abstract_params(cfg)
    )


def assert_rounded_average(merged, long, short, alpha):
    """merged is alpha*long + (1-alpha)*short up to float32 rounding of each operation:
    a few ulps of the summands' magnitudes (not of the result, which may cancel)."""
    a, b, m = (np.asarray(x, np.float64) for x in (long, short, merged))
    want = alpha * a + (1 - alpha) * b
    scale = np.abs(alpha * a) + np.abs((1 - alpha) * b)
    assert np.all(np.abs(m - want) <= 4 * 2**-24 * scale), np.max(np.abs(m - want) / scale)


@pytest.mark.parametrize("alpha", [0.5, 0.0, 1.0, 0.3])
def test_merge_is_the_weighted_average(alpha):
    long, short = init_params(CFG, 1), init_params(CFG, 2)
    merged = merge_params(long, short, alpha)
    assert jax.tree.structure(merged) == jax.tree.structure(long)
    for m, a, b in zip(*(jax.tree.leaves(t) for t in (merged, long, short)), strict=True):
        assert m.dtype == a.dtype and m.shape == a.shape
        assert_rounded_average(m, a, b, alpha)
    if alpha in (0.0, 1.0):  # the endpoints are the checkpoints themselves, bit for bit
        end = long if alpha == 1.0 else short
        for m, e in zip(jax.tree.leaves(merged), jax.tree.leaves(end), strict=True):
            np.testing.assert_array_equal(np.asarray(m), np.asarray(e))


def test_merge_of_bfloat16_params_averages_in_float32():
    cfg = ModelConfig(**{**CFG.__dict__, "param_dtype": "bfloat16"})
    long, short = init_params(cfg, 3), init_params(cfg, 4)
    merged = merge_params(long, short)
    for m, a, b in zip(*(jax.tree.leaves(t) for t in (merged, long, short)), strict=True):
        assert m.dtype == a.dtype
        want = ((np.asarray(a, np.float32) + np.asarray(b, np.float32)) / 2).astype(
            ml_dtypes.bfloat16
        )
        np.testing.assert_array_equal(np.asarray(m), want)


def test_merge_rejects_other_architectures_and_alpha():
    long = init_params(CFG, 1)
    other = init_params(ModelConfig(**{**CFG.__dict__, "intermediate_size": 64}), 2)
    with pytest.raises(ValueError, match=r"w_(down|gate|up).*\(2, 48, 32\).*one architecture"):
        merge_params(long, other)
    with pytest.raises(ValueError, match="alpha"):
        merge_params(long, long, 1.5)


def test_cli_writes_the_average_checkpoint(tmp_path):
    from experiments.merge import main

    cfg = ModelConfig(**{**CFG.__dict__, "bos_token_id": 1, "eos_token_id": 2})
    dirs = {}
    for name, seed in (("long", 5), ("short", 6)):
        dirs[name] = tmp_path / name
        export_hf(init_params(cfg, seed), cfg, dirs[name])
    CharTokenizer().save_hf(dirs["long"])
    out = tmp_path / "merged"
    main([str(dirs["long"]), str(dirs["short"]), str(out), "--alpha", "0.25"])
    # independent reader: the raw safetensors tensors, by HF name
    a = load_file(dirs["long"] / "model.safetensors")
    b = load_file(dirs["short"] / "model.safetensors")
    m = load_file(out / "model.safetensors")
    assert set(m) == set(a) and len(m) == 2 + 2 * 9 + 1  # embed, norm, head; 9 per layer
    for name in a:
        assert_rounded_average(m[name], a[name], b[name], 0.25)
    assert json.loads((out / "config.json").read_text()) == json.loads(
        (dirs["long"] / "config.json").read_text()
    )
    assert (out / "tokenizer.json").read_text() == (dirs["long"] / "tokenizer.json").read_text()
    loaded_cfg, _ = load_hf(out)  # and it loads as a model of the same architecture
    assert loaded_cfg == cfg
