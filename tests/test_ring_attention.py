"""Ring attention on 8 fake CPU devices against single-device plain-jnp attention.

Forward outputs and gradients (dq, dk, dv) must agree to a normalised max error
(max |ring - reference| / max(1, max |reference|)) of 1e-4 in fp32.
"""

import json

import pytest

TOL = 1e-4

# Runs in a subprocess with 8 fake devices; prints one JSON line of normalised errors per case.
CODE = """
import json
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import AxisType
from k15_jax.kernels.flash_plan import FlashBlockSizes
from k15_jax.kernels.reference import attention_reference
from k15_jax.kernels.ring_attention import ring_attention

TINY = FlashBlockSizes(16, 16, 16, 16, 16, 16)

def err(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if not np.all(np.isfinite(a)):
        return float("inf")
    return float(np.max(np.abs(a - b)) / max(1.0, np.max(np.abs(b))))

def run(seed, mesh_shape, axis_types, B, T, H, G, Dh, n_seg, causal):
    names = ("data", "sequence")[-len(mesh_shape):]
    mesh = jax.make_mesh(mesh_shape, names, axis_types=(axis_types,) * len(mesh_shape))
    rng = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(rng.normal(size=(B, T, h, Dh)), jnp.float32) for h in (H, G, G))
    w = jnp.asarray(rng.normal(size=(B, T, H, Dh)), jnp.float32)
    seg = None
    if n_seg:
        cuts = np.sort(rng.integers(1, T, size=(B, n_seg - 1)), axis=1)
        seg = jnp.asarray((np.arange(T)[None, :, None] >= cuts[:, None, :]).sum(-1), jnp.int32)

    def out_and_grads(fn):
        def loss(q, k, v):
            o = fn(q, k, v)
            return jnp.sum(o * w), o
        f = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)
        (_, o), g = jax.jit(f)(q, k, v)
        return [o, *g]

    with jax.set_mesh(mesh):
        got = out_and_grads(lambda q, k, v: ring_attention(
            q, k, v, mesh=mesh, causal=causal, segment_ids=seg, block_sizes=TINY))
    want = out_and_grads(lambda q, k, v: attention_reference(
        q, k, v, causal=causal, segment_ids=seg, precision="highest"))
    return dict(zip(("out", "dq", "dk", "dv"), (err(a, b) for a, b in zip(got, want))))

E, A = AxisType.Explicit, AxisType.Auto
results = {
    # chunks of 12 tokens: not a block multiple, so every ring step pads
    "causal_mha": run(0, (8,), E, 2, 96, 2, 2, 16, 0, True),
    "causal_gqa2_segments": run(1, (8,), A, 1, 128, 4, 2, 32, 3, True),
    "full_gqa4_segments_2d_mesh": run(2, (2, 4), E, 2, 64, 4, 1, 16, 4, False),
}
print(json.dumps(results))
"""


def test_ring_matches_single_device(fake_devices):
    results = json.loads(fake_devices(CODE, n_devices=8).strip().splitlines()[-1])
    assert set(results) == {"causal_mha", "causal_gqa2_segments", "full_gqa4_segments_2d_mesh"}
    for case, errors in results.items():
        for name, e in errors.items():
            assert e <= TOL, f"{case} {name}: normalised max error {e:.2e} > {TOL:.0e}"


def test_ring_rejects_unknown_axis():
    import jax
    import jax.numpy as jnp

    from k15_jax.kernels.ring_attention import ring_attention

    mesh = jax.make_mesh((1,), ("sequence",))
    q = jnp.zeros((1, 16, 2, 16))
    with pytest.raises(ValueError, match="no 'seq'"):
        ring_attention(q, q, q, mesh=mesh, axis_name="seq")
