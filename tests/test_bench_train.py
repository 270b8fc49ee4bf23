"""experiments/bench_train.py: the FLOP count against the jaxpr's dots, and a tiny smoke run."""

import json
import math

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import bench_train
from k15_jax.model import ModelConfig, abstract_params, forward


def _dot_flops(jaxpr) -> float:
    """2 * |out| * |contracted| summed over every dot_general, loops counted per trip."""
    total = 0.0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            out = eqn.outvars[0].aval.shape
            total += 2.0 * math.prod(out) * math.prod(lhs[d] for d in lhs_contract)
        trips = eqn.params["length"] if eqn.primitive.name == "scan" else 1
        for sub in jex.core.jaxprs_in_params(eqn.params):
            total += trips * _dot_flops(sub)
    return total


@pytest.mark.parametrize(
    "cfg",
    [
        bench_train.default_model_config(),
        ModelConfig(**bench_train.QWEN2_TINY),
        ModelConfig(**bench_train.QWEN2_TINY).replace(tie_embeddings=False, num_layers=3),
    ],
    ids=["default", "qwen2_tiny", "untied"],
)
def test_step_flops_is_three_forward_passes_of_dots(cfg):
    """6 P + attention = 3x the forward's matmul FLOPs, counted from the traced program."""
    B, T = 2, 24
    params = abstract_params(cfg)  # shapes only: nothing is compiled or run
    n_params = sum(x.size for x in jax.tree.leaves(params))
    assert n_params == cfg.num_params
    tokens = jax.ShapeDtypeStruct((B, T), jnp.int32)
    jaxpr = jax.make_jaxpr(lambda p, t: forward(p, cfg, t))(params, tokens).jaxpr
    # 6 P also counts norms and biases, which enter no dot
    no_dot = sum(
        x.size
        for path, x in jax.tree_util.tree_leaves_with_path(params)
        if path[-1].key in ("attn_norm", "mlp_norm", "final_norm", "bq", "bk", "bv")
    )
    expected = 3 * _dot_flops(jaxpr) + 6 * no_dot * B * T
    np.testing.assert_allclose(bench_train.step_flops(cfg, B, T), expected, rtol=1e-9)


def test_tiny_bench_prints_one_json_object(capsys):
    bench_train.main(["--tiny"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    out = json.loads(last)
    assert out["matmul"]["jax_gflops_best"] > 0
    assert out["matmul"]["torch_gflops_best"] > 0
    assert "6*P*B*T" in out["flop_formula"]
    assert set(out["models"]) == {"default", "qwen2_50m"}
    for name, entry in out["models"].items():
        assert entry["params"] == ModelConfig(**entry["config"]).num_params
        assert entry["flops_per_step"] > 0
        assert entry["jax_fastest_variant"] in entry["jax"]
        for result in [*entry["jax"].values(), entry["transformers"]]:
            for key in (
                "step_s_mean",
                "step_s_best",
                "tokens_per_s_mean",
                "tokens_per_s_best",
                "gflops_mean",
                "gflops_best",
                "mfu_vs_matmul_best",
            ):
                assert result[key] > 0, (name, key)
            assert result["step_s_best"] <= result["step_s_mean"]
            tokens = entry["batch"] * entry["seq_len"]
            assert result["tokens_per_s_best"] == pytest.approx(tokens / result["step_s_best"])
        assert entry["speedup_vs_transformers"] > 0
    assert set(out["targets"]) == {"qwen2_50m_mfu_ge_0.5", "qwen2_50m_beats_transformers"}
    rl = out["rl_update"]
    assert out["machine"]["load_avg"][0] >= 0
    for form in ("fused", "plain"):
        assert rl[form]["iteration_s_best_after_first"] > 0
        assert rl[form]["compiles_per_iteration"][0] > 0
        assert rl[form]["recompiles_after_first"] == 0, rl[form]
    parts = rl["plain_breakdown"]["best_s"]
    assert {"reference_pass", "weights", "update0/forward", "update0/backward"} <= set(parts)
    assert f"update{rl['updates_per_iteration'] - 1}/optimizer" in parts
