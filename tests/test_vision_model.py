"""The image encoder against transformers' SiglipVisionModel, and the splice into the decoder
against a numpy re-derivation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from k15_jax.data.images import patchify
from k15_jax.model.config import ModelConfig, VisionConfig
from k15_jax.model.multimodal import embed_with_images
from k15_jax.model.params import init_params
from k15_jax.model.siglip import load_siglip
from k15_jax.model.transformer import forward_hidden
from k15_jax.model.vit import encode_patches


def _tiny_siglip(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = transformers.SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        num_channels=3,
        layer_norm_eps=1e-6,
    )
    torch.manual_seed(0)
    model = transformers.SiglipVisionModel(cfg).eval().float()
    with torch.no_grad():  # non-trivial biases and norms, so every tensor's layout is tested
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    model.save_pretrained(tmp_path, safe_serialization=True)
    return torch, model


def test_siglip_tower_matches_transformers(tmp_path):
    torch, hf = _tiny_siglip(tmp_path)
    v, tower = load_siglip(tmp_path)
    assert (v.hidden_size, v.num_layers, v.num_patches) == (32, 2, 16)
    pixels = np.random.default_rng(0).uniform(-1, 1, (3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = hf(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()
    patches = np.stack([patchify(p.transpose(1, 2, 0), v.patch_size) for p in pixels])
    got = np.asarray(jax.jit(lambda t, x: encode_patches(t, v, x))(tower, patches))
    assert got.shape == want.shape == (3, 16, 32)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_siglip_loader_names_a_mismatched_key(tmp_path):
    _tiny_siglip(tmp_path)
    with pytest.raises(ValueError, match="vision.hidden_size=64"):
        load_siglip(tmp_path, VisionConfig(hidden_size=64))


def _np_gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _setup():
    v = VisionConfig(
        image_size=16,
        patch_size=8,
        hidden_size=16,
        intermediate_size=32,
        num_layers=1,
        num_heads=2,
        image_token_id=9,
        max_images=2,
    )
    cfg = ModelConfig(
        vocab_size=12,
        hidden_size=8,
        intermediate_size=16,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        head_dim=4,
        vision=v,
    )
    params = init_params(cfg, jax.random.key(0))
    # non-zero biases, so a wrong projector would show
    params["vision"]["projector"]["b1"] = jnp.linspace(-1, 1, 8)
    params["vision"]["projector"]["b2"] = jnp.linspace(1, -1, 8)
    P = v.num_patches  # 4
    img = 9
    tokens = np.array(
        [
            [1, img, img, img, img, 5, img, img, img, img, 6, 2],  # two images between text
            [1, 3, 4, img, img, img, img, 7, 2, 0, 0, 0],  # one image (second is padding)
            [1, 3, 4, 5, 6, 7, 8, 2, 0, 0, 0, 0],  # text only
        ],
        np.int32,
    )
    images = np.random.default_rng(1).normal(size=(3, 2, P, v.patch_dim)).astype(np.float32)
    images[1, 1] = np.nan  # padding images are never read
    images[2] = np.nan
    return v, cfg, params, tokens, images


def _expected_inputs(params, v, tokens, images):
    """The decoder input, re-derived: numpy projector over the tower's features, loops."""
    proj = jax.tree.map(np.asarray, params["vision"]["projector"])
    embed = np.asarray(params["embed"])
    out = embed[tokens].copy()
    for b in range(tokens.shape[0]):
        j = 0
        for t in range(tokens.shape[1]):
            if tokens[b, t] != v.image_token_id:
                continue
            i, p = divmod(j, v.num_patches)
            feat = np.asarray(encode_patches(params["vision"]["tower"], v, images[b, i : i + 1]))
            h = _np_gelu_tanh(feat[0, p] @ proj["w1"] + proj["b1"])
            out[b, t] = h @ proj["w2"] + proj["b2"]
            j += 1
    return out


def test_splice_puts_projected_features_at_placeholders():
    v, cfg, params, tokens, images = _setup()
    x0 = np.asarray(params["embed"])[tokens]
    got = np.asarray(embed_with_images(params, cfg, jnp.asarray(tokens), jnp.asarray(x0), images))
    want = _expected_inputs(params, v, tokens, images)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    text = tokens != v.image_token_id
    np.testing.assert_array_equal(got[text], x0[text])  # token embeddings, bit for bit


def test_decoder_sees_the_spliced_sequence():
    """With no decoder layers the hidden state is rms_norm(input): the input is observable."""
    v, cfg, params, tokens, images = _setup()
    cfg0 = cfg.replace(num_layers=0)
    params0 = {**params, "layers": jax.tree.map(lambda x: x[:0], params["layers"])}
    got = np.asarray(forward_hidden(params0, cfg0, jnp.asarray(tokens), images=jnp.asarray(images)))
    x = _expected_inputs(params, v, tokens, images)
    want = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + cfg.rms_norm_eps)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    # and with layers, images change only positions from the first placeholder on
    h_img = np.asarray(forward_hidden(params, cfg, jnp.asarray(tokens), images=jnp.asarray(images)))
    h_txt = np.asarray(forward_hidden(params, cfg, jnp.asarray(tokens)))
    np.testing.assert_allclose(h_img[1, :3], h_txt[1, :3], atol=1e-6)
    assert np.abs(h_img[1, 3:] - h_txt[1, 3:]).max() > 1e-3
    np.testing.assert_allclose(h_img[2], h_txt[2], atol=1e-6)


def test_exported_tower_loads_in_transformers_and_back(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from k15_jax.model.siglip import export_siglip

    v = VisionConfig(
        image_size=16, patch_size=8, hidden_size=16, intermediate_size=24, num_layers=2, num_heads=2
    )
    cfg = ModelConfig(
        vocab_size=12,
        hidden_size=8,
        intermediate_size=16,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        head_dim=4,
        vision=v,
    )
    vision = init_params(cfg, jax.random.key(3))["vision"]
    vision["tower"]["layers"]["bq"] = vision["tower"]["layers"]["bq"] + 0.3  # non-zero biases
    export_siglip(vision, v, tmp_path)
    hf = transformers.SiglipVisionModel.from_pretrained(tmp_path).eval()
    pixels = np.random.default_rng(0).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        want = hf(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()
    patches = np.stack([patchify(p.transpose(1, 2, 0), 8) for p in pixels])
    got = np.asarray(encode_patches(vision["tower"], v, patches))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    _, back = load_siglip(tmp_path, v)
    jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
        back,
        vision["tower"],
    )
