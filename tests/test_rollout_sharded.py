"""Acceptance 5 (and 7's mesh check): generation on 8 fake CPU devices with a
(data, fsdp, tensor) mesh equals single-device generation; params arrive from the
training layout by a device-to-device hand-over."""

SHARDED = """
import dataclasses, numpy as np, jax, jax.numpy as jnp
from k15_jax.model import ModelConfig
from k15_jax.rollout import RolloutConfig, collect, make_engine, handover
from k15_jax.sharding import MeshConfig, make_mesh, param_shardings, TRAIN_RULES
from tests.test_rollout_reference import tiny_params

assert len(jax.devices()) == 8
cfg = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2,
                  num_heads=4, num_kv_heads=2, head_dim=8, qkv_bias=True)
params = tiny_params(cfg, seed=4)
mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
one = make_mesh(MeshConfig(), devices=jax.devices()[:1])
train_params = jax.device_put(params, param_shardings(cfg, mesh, TRAIN_RULES))
assert train_params["layers"]["wq"].sharding.spec == jax.P(None, "fsdp", "tensor", None)

rng = np.random.default_rng(0)
reqs = [(f"r{i}", rng.integers(3, 64, n).tolist()) for i, n in enumerate([1, 6, 3, 8, 2, 5])]
base = RolloutConfig(max_new_tokens=10, max_prompt_len=8, slots=8, steps_per_sync=3,
                     repeat_ngram=1, repeat_min_repeats=3, repeat_window=6)
# sampling (per-sample keys), partial rollouts (continuations prefilled) and repeat
# detection in one config: one compile per mesh
for name, rc in [("sampled partial", dataclasses.replace(base, temperature=0.9, top_k=30,
                                                         partial=True, budget_tokens=4))]:
    out = {}
    for where, m in [("sharded", mesh), ("single", one)]:
        eng = make_engine(cfg, rc, eos_id=5, mesh=m)
        eng = handover(eng, train_params)
        buf, rows = None, {}
        for it in range(4):
            ro, ids, buf, _ = collect(eng, reqs if it == 0 else [], k=2, iteration=it,
                                      key=jax.random.key(3), buffer=buf)
            for g, rid in enumerate(ids):
                rows[rid] = jax.tree.map(lambda x: np.asarray(x)[2 * g : 2 * g + 2], ro)
            if buf.num_groups == 0:
                break
        assert buf.num_groups == 0 and len(rows) == len(reqs)
        out[where] = (rows, eng)
    (a, ea), (b, eb) = out["sharded"], out["single"]
    for rid in a:
        np.testing.assert_array_equal(a[rid].tokens, b[rid].tokens)
        np.testing.assert_array_equal(a[rid].version, b[rid].version)
        np.testing.assert_array_equal(a[rid].finish, b[rid].finish)
        np.testing.assert_allclose(a[rid].logp, b[rid].logp, atol=1e-5)
    finishes = sorted(set(int(f) for r in a.values() for f in r.finish))
    assert finishes == [0, 1, 2], finishes  # eos, length and repeat all exercised
    print(name, "ok")

# the engine's layout: weights whole over data/fsdp, heads over tensor; cache slots over
# (data, fsdp), kv heads over tensor; one array per layer (keys [S, G, Dh, C])
assert ea.params["layers"][0]["wq"].sharding.spec == jax.P(None, "tensor", None)
state = ea.init_decode_state()
assert len(state.k) == len(state.v) == cfg.num_layers
assert state.k[0].sharding.spec == jax.P(("data", "fsdp"), "tensor", None, None)
assert state.v[-1].sharding.spec == jax.P(("data", "fsdp"), "tensor", None, None)
assert state.k[0].addressable_shards[0].data.shape[:2] == (2, 1)

try:
    make_engine(cfg, dataclasses.replace(base, slots=6), eos_id=5, mesh=mesh)
except ValueError as e:
    assert "rollout.slots=6" in str(e) and "multiple of 4" in str(e), e
    print("slots error ok")
else:
    raise AssertionError("slots=6 on a 4-way batch mesh must fail")
"""


def test_sharded_generation_equals_single_device(fake_devices):
    out = fake_devices(SHARDED, n_devices=8)
    for line in ("sampled partial ok", "slots error ok"):
        assert line in out, out
