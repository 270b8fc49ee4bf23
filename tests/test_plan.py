"""The memory and FLOPs planner against what XLA reports for the real jitted steps, the
startup refusal of experiments.run, and the memory knobs (remat policies, micro-batches)
keeping the numerics.

What is compared with `compiled.memory_analysis()` (per device):
  argument size            <-> plan "inputs": params, Adam moments, batch
                               (decode step: engine params, KV cache, slot state)
  output + temp size       <-> plan "beyond inputs": XLA puts temporaries in the output
                               buffers before the outputs are written, so only the sum of
                               the two is comparable for the training steps
  decode step              output <-> KV cache + slot state + step outputs (donated state),
                           temp <-> decode working set
FLOPs are compared with `lowered.cost_analysis()` on one-layer models (XLA counts a loop
body once, so the layer scan must run once).
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from k15_jax.aot import programs as aot_programs
from k15_jax.model.config import ModelConfig
from k15_jax.model.logprobs import accumulated_grads, token_logprobs
from k15_jax.model.params import abstract_params, init_params
from k15_jax.plan import flops, memory
from k15_jax.rl.config import AlgoConfig
from k15_jax.rollout.engine import make_engine
from k15_jax.rollout.layout import unstack_layers
from k15_jax.rollout.types import RolloutConfig
from k15_jax.train import rl_step, sft
from k15_jax.train.sft import SFTConfig
from tests.loop_runs import ROOT

BASE = dict(
    vocab_size=512,
    hidden_size=256,
    intermediate_size=768,
    num_layers=4,
    num_heads=8,
    num_kv_heads=4,
    head_dim=32,
    logits_chunk=128,
)
ONE = {"data": 1, "fsdp": 1, "tensor": 1, "sequence": 1}
TOL = 0.2
S = jax.ShapeDtypeStruct


def _close(plan: float, xla: float, what: str) -> None:
    assert abs(plan / xla - 1) <= TOL, f"{what}: plan {plan / 1e6:.1f} MB, XLA {xla / 1e6:.1f} MB"


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "remat, micro, rows, T",
    [
        ("dots", 2, 8, 256),
        pytest.param("none", 1, 8, 128, marks=SLOW),
        pytest.param("full", 1, 8, 256, marks=SLOW),
        pytest.param("full", 2, 16, 64, marks=SLOW),
        pytest.param("dots", 1, 16, 64, marks=SLOW),
    ],
)
def test_sft_step_memory_within_20_percent_of_xla(remat, micro, rows, T):
    model = ModelConfig(**BASE, remat=remat)
    opt = sft.make_optimizer(SFTConfig())
    p = abstract_params(model)
    tok, mask = S((rows, T), jnp.int32), S((rows, T), jnp.float32)
    ma = (
        sft.make_step(model, opt, micro)
        .lower(p, jax.eval_shape(opt.init, p), tok, tok, mask)
        .compile()
        .memory_analysis()
    )
    plan = memory.train_step(model, ONE, rows, T, microbatches=micro)
    _close(plan["inputs"], ma.argument_size_in_bytes, "arguments")
    _close(plan["beyond inputs"], ma.output_size_in_bytes + ma.temp_size_in_bytes, "out+temp")


@pytest.mark.parametrize(
    "remat, micro, B, K, T",
    [("dots", 2, 2, 8, 128), pytest.param("none", 1, 4, 4, 128, marks=SLOW)],
)
def test_rl_update_memory_within_20_percent_of_xla(remat, micro, B, K, T):
    model = ModelConfig(**BASE, remat=remat)
    update, opt = rl_step.make_update(model, AlgoConfig(microbatches=micro))
    p = abstract_params(model)
    N = B * K
    ma = (
        update.lower(
            p,
            jax.eval_shape(opt.init, p),
            S((N, T), jnp.int32),
            S((N, T), jnp.float32),
            S((B, K), jnp.float32),
            S((N, T), jnp.float32),
        )
        .compile()
        .memory_analysis()
    )
    plan = memory.train_step(model, ONE, N, T, microbatches=micro, kind="rl")
    _close(plan["inputs"], ma.argument_size_in_bytes, "arguments")
    _close(plan["beyond inputs"], ma.output_size_in_bytes + ma.temp_size_in_bytes, "out+temp")


def _decode_memory(model, rcfg, mesh=None):
    """memory_analysis of the engine's compiled decode chunk (its jitted `generate`)."""
    engine = make_engine(model, rcfg, eos_id=1, mesh=mesh)
    params = jax.tree.map(
        lambda a, sh: S(a.shape, a.dtype, sharding=sh),
        unstack_layers(abstract_params(model)),  # the engine's layout
        engine.param_shardings,
    )
    state = jax.eval_shape(engine.init_decode_state)
    state = jax.tree.map(
        lambda a, sh: S(a.shape, a.dtype, sharding=sh), state, engine.state_shardings
    )
    fn = engine._jit("generate", rcfg.steps_per_sync, None)  # what engine.generate runs
    return fn.lower(params, state, np.zeros((1,), np.int32)).compile().memory_analysis()


@pytest.mark.parametrize(
    "slots, prompt, new, repeat", [(64, 32, 224, False), pytest.param(16, 16, 64, True, marks=SLOW)]
)
def test_decode_step_memory_within_20_percent_of_xla(slots, prompt, new, repeat):
    model = ModelConfig(**BASE)
    rcfg = RolloutConfig(
        slots=slots,
        max_prompt_len=prompt,
        max_new_tokens=new,
        steps_per_sync=8,
        stop_on_repeat=repeat,
        repeat_window=64,
        repeat_ngram=8,
        repeat_min_repeats=3,
    )
    ma = _decode_memory(model, rcfg)
    plan = memory.rollout(
        model,
        ONE,
        slots=slots,
        cache_len=prompt + new,
        steps_per_sync=8,
        window=64 if repeat else 1,
        prefill_len=prompt,
    )["decode step"]
    _close(plan["inputs"], ma.argument_size_in_bytes, "arguments")
    _close(plan["outputs"], ma.output_size_in_bytes, "outputs")
    _close(plan["temporaries"], ma.temp_size_in_bytes, "temporaries")


@pytest.mark.parametrize("slots, prompt, new", [(64, 32, 224), (16, 64, 64)])
def test_prefill_step_memory_within_20_percent_of_xla(slots, prompt, new):
    """The engine's prefill of a full slot batch (what `aot.programs.prefill` compiles)."""
    model = ModelConfig(**BASE)
    engine = make_engine(
        model, RolloutConfig(slots=slots, max_prompt_len=prompt, max_new_tokens=new), eos_id=1
    )
    program = aot_programs.prefill(engine)
    ma = program.fn.lower(*program.args).compile().memory_analysis()
    plan = memory.rollout(
        model,
        ONE,
        slots=slots,
        cache_len=prompt + new,
        steps_per_sync=8,
        window=1,
        prefill_len=engine.prefill_bucket(prompt),
    )["prefill step"]
    _close(plan["inputs"], ma.argument_size_in_bytes, "arguments")
    _close(plan["outputs"], ma.output_size_in_bytes, "outputs")
    _close(plan["temporaries"], ma.temp_size_in_bytes, "temporaries")


@pytest.mark.parametrize(
    "meshes",
    [[(1, 2, 2, "full")], pytest.param([(1, 4, 1, "none"), (2, 1, 2, "dots")], marks=SLOW)],
)
def test_sharded_per_device_memory_within_20_percent_of_xla(fake_devices, meshes):
    """On 4 devices: params per device exactly as JAX shards them (shard_shape); the SFT
    step under fsdp (batch and model dim on one axis, see `memory.activations`), tensor and
    data parallelism, and the decode step, within 20% of XLA's per-device figures."""
    out = fake_devices(
        f"""
        import json
        import jax, jax.numpy as jnp, numpy as np
        from k15_jax.distributed import shard_like_params
        from k15_jax.model.config import ModelConfig
        from k15_jax.model.params import abstract_params
        from k15_jax.plan import memory
        from k15_jax.rollout.types import RolloutConfig
        from k15_jax.sharding import (ROLLOUT_RULES, TRAIN_RULES, MeshConfig, data_sharding,
                                      make_mesh, param_shardings)
        from k15_jax.train import sft
        from k15_jax.train.sft import SFTConfig
        from tests.test_plan import BASE, _decode_memory
        S = jax.ShapeDtypeStruct
        ratios = []
        for data, fsdp, tp, remat in {meshes!r}:
            model = ModelConfig(**BASE, remat=remat)
            mesh = make_mesh(MeshConfig(data=data, fsdp=fsdp, tensor=tp))
            shape = dict(mesh.shape)
            for rules in (ROLLOUT_RULES, TRAIN_RULES):  # JAX's own shard shapes
                sh = param_shardings(model, mesh, rules)
                held = sum(
                    np.prod(s.shard_shape(a.shape)) * a.dtype.itemsize
                    for a, s in zip(jax.tree.leaves(abstract_params(model)), jax.tree.leaves(sh))
                )
                assert held == memory.param_bytes(model, shape, rules), (shape, rules, held)
            p = jax.tree.map(lambda a, s: S(a.shape, a.dtype, sharding=s),
                             abstract_params(model), sh)
            opt = sft.make_optimizer(SFTConfig())
            o = shard_like_params(jax.eval_shape(opt.init, p), p, mesh)
            ds = data_sharding(mesh, TRAIN_RULES, 2)
            tok, mask = S((8, 256), jnp.int32, sharding=ds), S((8, 256), jnp.float32, sharding=ds)
            ma = sft.make_step(model, opt).lower(p, o, tok, tok, mask).compile().memory_analysis()
            plan = memory.train_step(model, shape, 8, 256)
            ratios += [plan["inputs"] / ma.argument_size_in_bytes,
                       plan["beyond inputs"] / (ma.output_size_in_bytes + ma.temp_size_in_bytes)]
        rcfg = RolloutConfig(slots=32, max_prompt_len=32, max_new_tokens=96, steps_per_sync=8,
                             stop_on_repeat=False)
        mesh = make_mesh(MeshConfig(fsdp=2, tensor=2))
        ma = _decode_memory(ModelConfig(**BASE), rcfg, mesh)
        plan = memory.rollout(ModelConfig(**BASE), dict(mesh.shape), slots=32, cache_len=128,
                              steps_per_sync=8, window=1, prefill_len=32)["decode step"]
        ratios += [plan["inputs"] / ma.argument_size_in_bytes,
                   plan["outputs"] / ma.output_size_in_bytes,
                   plan["temporaries"] / ma.temp_size_in_bytes]
        print(json.dumps(ratios))
    """,
        n_devices=4,
    )
    ratios = json.loads(out.strip().splitlines()[-1])
    assert len(ratios) == 2 * len(meshes) + 3
    assert all(abs(r - 1) <= TOL for r in ratios), ratios


def test_flops_within_10_percent_of_xla_cost_analysis():
    for remat in ("none", "full", "dots"):
        model = ModelConfig(**{**BASE, "num_layers": 1, "logits_chunk": 256}, remat=remat)
        p, (R, T) = abstract_params(model), (8, 256)
        tok, f32 = S((R, T), jnp.int32), S((R, T), jnp.float32)
        opt = sft.make_optimizer(SFTConfig())
        xla = (
            sft.make_step(model, opt)
            .lower(p, jax.eval_shape(opt.init, p), tok, tok, f32)
            .cost_analysis()["flops"]
        )
        assert abs(flops.sft_step(model, R, T, "xla") / xla - 1) < 0.1, remat
        update, opt = rl_step.make_update(model, AlgoConfig(updates_per_iteration=1))
        xla = update.lower(
            p, jax.eval_shape(opt.init, p), tok, f32, S((2, 4), jnp.float32), f32
        ).cost_analysis()["flops"]
        assert abs(R * T * flops.train_per_token(model, T, "xla", False) / xla - 1) < 0.1


# ---- the knobs keep the numerics ----

# one layer and one log-prob chunk: the numerics of the knobs do not depend on the depth,
# and XLA compiles it twice as fast
TINY = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_layers=1,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    logits_chunk=32,
)


def _batch(R=8, T=24, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 64, (R, T)).astype(np.int32)
    seg = np.repeat(np.arange(1, 4), T // 3)[None].repeat(R, 0).astype(np.int32)
    mask = (rng.random((R, T)) < 0.7).astype(np.float32)
    return tokens, seg, mask


POLICIES = ("none", "full", "dots")


def test_remat_policies_give_the_same_loss_and_gradients():
    params = init_params(ModelConfig(**TINY), jax.random.key(0))
    batch = _batch()

    def all_policies(p):  # one compile; the recomputed paths sit behind remat's barriers
        return {
            r: jax.value_and_grad(lambda q, m: sft.sft_loss(q, m, *batch)[0])(
                p, ModelConfig(**TINY, remat=r)
            )
            for r in POLICIES
        }

    out = jax.jit(all_policies)(params)
    for policy in ("full", "dots"):  # recomputation repeats the same float operations
        assert float(out[policy][0]) == float(out["none"][0])
        for a, b in zip(jax.tree.leaves(out[policy][1]), jax.tree.leaves(out["none"][1])):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_sft_gradient_accumulation_equals_the_whole_batch():
    model = ModelConfig(**TINY)
    params = init_params(model, jax.random.key(1))
    batch = _batch(seed=1)
    both = jax.jit(
        lambda p: (
            jax.value_and_grad(sft.sft_loss, has_aux=True)(p, model, *batch),
            accumulated_grads(
                p,
                lambda q, tok, seg: token_logprobs(q, model, tok, segment_ids=seg),
                lambda lp: sft.nll(lp, batch[2]),
                batch[:2],
                4,
            ),
        )
    )
    ((ref, _), ref_g), ((nll, metrics), grads) = both(params)
    np.testing.assert_allclose(nll, ref, rtol=1e-6)
    assert float(metrics["sft/tokens"]) == batch[2].sum()
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_g)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("loss", ["mirror_descent", pytest.param("rest", marks=SLOW)])
def test_rl_gradient_accumulation_equals_the_whole_batch(loss):
    """Micro-batches of sequences through the chain rule: the same loss and gradient for a
    loss with group baselines (mirror descent) and one normalised by a count over the whole
    batch (ReST), as `make_update` computes them."""
    from k15_jax.rl.losses import LOSSES, LossConfig, loss_options

    model = ModelConfig(**TINY)
    params = init_params(model, jax.random.key(2))
    B, K, T = 2, 4, 24
    tokens = _batch(B * K, T, seed=2)[0]
    # a sampling policy near the current one: nonzero, varied sequence log-ratios
    ref_logp = -np.random.default_rng(4).uniform(3.5, 4.5, (B * K, T)).astype(np.float32)
    rewards = np.array([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 1.0]], np.float32)
    mask = _batch(B * K, T, seed=3)[2].reshape(B, K, T)
    opts = loss_options(LossConfig(name=loss))

    def loss_of_logp(logp):
        return LOSSES[loss](logp.reshape(B, K, T), ref_logp.reshape(B, K, T), rewards, mask, **opts)

    whole = jax.value_and_grad(
        lambda p: loss_of_logp(token_logprobs(p, model, tokens)), has_aux=True
    )
    logp_of_rows = lambda p, tok: token_logprobs(p, model, tok)
    micro = lambda p: accumulated_grads(p, logp_of_rows, loss_of_logp, (tokens,), 4)
    ((ref, _), ref_g), ((value, _), grads) = jax.jit(lambda p: (whole(p), micro(p)))(params)
    np.testing.assert_allclose(value, ref, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_g)):
        # float32 sums over tokens in another order: ~1e-5 of gradients of ~0.1
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-5)


# ---- the planner as users meet it ----

BIG = [
    "+exp=curriculum",
    "mesh=tpu_v5e_16",
    "model.hidden_size=4096",
    "model.intermediate_size=14336",
    "model.num_layers=32",
    "model.num_heads=32",
    "model.num_kv_heads=8",
    "model.head_dim=128",
    "model.vocab_size=128256",
    "model.max_position_embeddings=16384",
    "model.dtype=bfloat16",
    "model.param_dtype=bfloat16",
    "rollout.max_prompt_len=1024",
    "rollout.max_new_tokens=8192",
    "rollout.slots=256",
    "sampler.batch_prompts=64",
    "sft.row_len=8192",
]


def test_plan_cli_says_what_does_not_fit_and_its_remedy_fits(capsys):
    from experiments.plan import main

    assert main(BIG) == 1
    text = capsys.readouterr().out
    assert "verdict: does NOT fit" in text
    for phase in ("SFT step needs", "RL update needs", "rollout needs"):
        assert phase in text
    remedy = text.split("All phases fit with: ")[1].split("; or")[0].split()
    # the remedy is a set of real overrides under which every phase fits
    assert main(BIG + remedy) == 0
    assert "verdict: fits" in capsys.readouterr().out
    assert main(["+exp=curriculum", "mesh=h100_8"]) == 0  # the embedded default fits


def test_run_refuses_a_config_that_does_not_fit_before_compiling(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.run",
            "+exp=curriculum",
            "device.memory_gib=0.001",
            f"trainer.run_dir={run_dir}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode != 0
    assert "does not fit in device memory" in proc.stderr
    assert "SFT step needs" in proc.stderr and "rollout needs" in proc.stderr
    assert not (run_dir / "checkpoints").exists()  # refused before any work
    assert not (run_dir / "metrics.jsonl").exists()
