"""Logit parity with Hugging Face transformers (torch, CPU) and export round trips."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers

from k15_jax.model import export_hf, forward, load_hf
from tests.hf_models import hf_logits, tiny_hf_model


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_logits_match_transformers_and_export_round_trips(arch, tmp_path):
    model = tiny_hf_model(arch)
    # small shards force the sharded *.safetensors + index layout
    model.save_pretrained(tmp_path / "hf", max_shard_size="40KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists()
    tokens = np.random.default_rng(0).integers(0, 97, (3, 48))  # 48 > rope original 16
    ref = hf_logits(model, tokens)

    cfg, params = load_hf(tmp_path / "hf")
    assert cfg.architecture == model.config.architectures[0]
    out = np.asarray(forward(params, cfg, jnp.asarray(tokens, jnp.int32)))
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)

    export_hf(params, cfg, tmp_path / "out", max_shard_bytes=30_000)
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    np.testing.assert_allclose(hf_logits(back, tokens), ref, atol=1e-4, rtol=0)

    # our own loader reads the export bit-identically
    _, params2 = load_hf(tmp_path / "out")
    assert jax.tree.structure(params) == jax.tree.structure(params2)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(params2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))


def test_untied_qwen2_and_tied_llama(tmp_path):
    for arch, tied in (("qwen2", False), ("llama", True)):
        model = tiny_hf_model(arch, seed=1, tie_word_embeddings=tied)
        model.save_pretrained(tmp_path / arch)
        cfg, params = load_hf(tmp_path / arch)
        assert cfg.tie_embeddings == tied and ("lm_head" in params) == (not tied)
        tokens = np.random.default_rng(1).integers(0, 97, (2, 20))
        out = np.asarray(forward(params, cfg, jnp.asarray(tokens, jnp.int32)))
        np.testing.assert_allclose(out, hf_logits(model, tokens), atol=1e-4, rtol=0)


def _saved(tmp_path):
    model = tiny_hf_model("qwen2")
    model.save_pretrained(tmp_path)
    return tmp_path


def _rewrite(path, fn):
    from safetensors.numpy import load_file, save_file

    f = path / "model.safetensors"
    tensors = load_file(f)
    fn(tensors)
    save_file(tensors, f)


def test_missing_tensor_is_named(tmp_path):
    path = _saved(tmp_path)
    _rewrite(path, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"missing tensor model\.layers\.1\.mlp\.up_proj\.weight"):
        load_hf(path)


def test_misshaped_tensor_names_both_shapes(tmp_path):
    path = _saved(tmp_path)
    _rewrite(path, lambda t: t.update({"model.norm.weight": np.ones(63, np.float32)}))
    with pytest.raises(
        ValueError, match=r"model\.norm\.weight has shape \(63,\), expected \(64,\)"
    ):
        load_hf(path)


def test_extra_tensor_is_named(tmp_path):
    path = _saved(tmp_path)
    _rewrite(path, lambda t: t.update({"model.layers.0.bogus.weight": np.ones(3, np.float32)}))
    with pytest.raises(ValueError, match=r"unexpected tensors.*bogus"):
        load_hf(path)


def test_unsupported_architecture_lists_supported(tmp_path):
    path = _saved(tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["architectures"] = ["MistralForCausalLM"]
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"MistralForCausalLM.*LlamaForCausalLM, Qwen2ForCausalLM"):
        load_hf(path)
