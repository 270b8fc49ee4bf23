"""Sharded execution on 8 fake CPU devices matches one device; mesh errors are clear."""

import pytest

from k15_jax.model import ModelConfig
from k15_jax.sharding import MeshConfig, make_mesh, param_shardings

SHARDED_STEP = """
import json, numpy as np, jax, jax.numpy as jnp, optax
from k15_jax.model import ModelConfig, forward, init_params, load_hf, token_logprobs
from k15_jax.distributed import global_batch
from k15_jax.sharding import MeshConfig, make_mesh, param_shardings
from tests.hf_models import tiny_hf_model

assert len(jax.devices()) == 8
cfg = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2,
                  num_heads=4, num_kv_heads=2, head_dim=8, logits_chunk=5)
params = init_params(cfg, jax.random.key(0))
tokens = np.random.default_rng(0).integers(0, 64, (8, 12)).astype(np.int32)
opt = optax.sgd(0.5)

def loss_fn(p, t):
    return -jnp.mean(token_logprobs(p, cfg, t)[:, 1:])

def step(p, t):
    loss, g = jax.value_and_grad(loss_fn)(p, t)
    upd, _ = opt.update(g, opt.init(p), p)
    return loss, g, optax.apply_updates(p, upd)

ref_logits = np.asarray(jax.jit(forward, static_argnums=1)(params, cfg, tokens))
ref_loss, ref_grad, ref_new = jax.jit(step)(params, tokens)

def close(a, b):  # fp32, relative to the tensor's scale (sums are reordered when sharded)
    a, b = np.asarray(a), np.asarray(b)
    assert np.max(np.abs(a - b)) <= 1e-5 * np.max(np.abs(b)), np.max(np.abs(a - b))

mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
shard = param_shardings(cfg, mesh)
sp = jax.device_put(params, shard)
st = global_batch(tokens, mesh)
fwd = jax.jit(forward, static_argnums=1, in_shardings=(shard, st.sharding),
              out_shardings=jax.sharding.NamedSharding(mesh, jax.P(("data", "fsdp"))))
logits = fwd(sp, cfg, st)
sstep = jax.jit(step, in_shardings=(shard, st.sharding), out_shardings=(None, shard, shard))
loss, grad, new = sstep(sp, st)

close(logits, ref_logits)
close(loss, ref_loss)
for a, b in zip(jax.tree.leaves(grad) + jax.tree.leaves(new),
                jax.tree.leaves(ref_grad) + jax.tree.leaves(ref_new)):
    close(a, b)

# actually sharded: wq [L, D, H, Dh] over fsdp (D) and tensor (H); 1/4 per device
wq = new["layers"]["wq"]
assert wq.sharding.spec == jax.P(None, "fsdp", "tensor", None), wq.sharding.spec
assert wq.addressable_shards[0].data.shape == (2, 16, 2, 8)
assert sp["embed"].sharding.spec == jax.P("tensor", "fsdp")
assert len(logits.sharding.device_set) == 8

# HF checkpoints load straight into the sharded layout
import tempfile
d = tempfile.mkdtemp()
tiny_hf_model("qwen2", vocab_size=96).save_pretrained(d)
hcfg, hp = load_hf(d)
hshard = param_shardings(hcfg, mesh)
_, hsp = load_hf(d, shardings=hshard)
for a, b, s in zip(jax.tree.leaves(hsp), jax.tree.leaves(hp), jax.tree.leaves(hshard)):
    assert a.sharding == s
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
print("OK")
"""


def test_sharded_forward_and_step_match_single_device(fake_devices):
    assert fake_devices(SHARDED_STEP).strip().endswith("OK")


MESH_ERRORS = """
import jax
from k15_jax.model import ModelConfig
from k15_jax.sharding import MeshConfig, make_mesh, param_shardings
cfg = ModelConfig(num_heads=4, num_kv_heads=2, head_dim=8, hidden_size=32)
mesh = make_mesh(MeshConfig(data=1, fsdp=2, tensor=4))
try:
    param_shardings(cfg, mesh)
except ValueError as e:
    print(e)
try:
    make_mesh(MeshConfig(data=3, fsdp=-1))
except ValueError as e:
    print(e)
"""


def test_indivisible_dimension_names_axis_size_and_fix(fake_devices):
    out = fake_devices(MESH_ERRORS)
    assert "'kv_heads') of size 2 is not divisible by mesh axis 'tensor'=4" in out
    assert "set mesh.tensor=1" in out
    assert "multiply to 3, which does not divide the 8 devices" in out


def test_mesh_needing_more_devices_fails_at_startup():
    with pytest.raises(ValueError, match=r"needs 2 devices but 1 are available"):
        make_mesh(MeshConfig(data=2, fsdp=1))
    with pytest.raises(ValueError, match=r"at most one axis"):
        make_mesh(MeshConfig(data=-1, fsdp=-1))
    mesh = make_mesh(MeshConfig())  # fsdp=-1 takes the single device
    assert mesh.shape["fsdp"] == 1
    assert param_shardings(ModelConfig(), mesh)["embed"].mesh is mesh
