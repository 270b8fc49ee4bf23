"""The plan per compiled program, in the compiler's terms, to hold against `memory_analysis()`.

A compiled program needs arguments + outputs - aliased (donated inputs reused as outputs) +
temporaries per device; that is what `k15_jax.aot` reads from XLA. "resident" is what other
arrays hold on the device meanwhile (not the program's own): the engine's params stay during
the RL update, the trainer's params during the rollout.
"""

from k15_jax.model.config import ModelConfig
from k15_jax.model.params import param_specs
from k15_jax.plan import memory
from k15_jax.plan.fit import Workload
from k15_jax.sharding import ROLLOUT_RULES, TRAIN_RULES


def _total(step: dict) -> int:
    return step["inputs"] + step["outputs"] - step["aliased"] + step["temporaries"]


def planned(work: Workload, model: ModelConfig, shape: dict, platform: str) -> dict:
    """{program: {"total": bytes, "resident": bytes}} per device, for the programs of
    `k15_jax.aot.programs.PROGRAMS`."""
    T = work.prompt_len + work.new_tokens
    ro = work.rollout_memory(model, shape, _prefill_len(work.prompt_len, T), platform)
    train = memory.param_bytes(model, shape, TRAIN_RULES)
    out = {}
    if not work.skip_sft:
        sft = memory.train_step(
            model, shape, work.sft_rows, work.sft_len, microbatches=work.sft_microbatches,
            platform=platform,
        )  # fmt: skip
        out["SFT step"] = {"total": sft["peak"], "resident": 0}
    rl = memory.train_step(
        model, shape, work.sequences, T, microbatches=work.microbatches, platform=platform,
        kind="rl", updates=work.updates,
    )  # fmt: skip
    out["RL update"] = {"total": rl["peak"], "resident": ro["engine params"]}
    out["prefill"] = {"total": _total(ro["prefill step"]), "resident": train}
    out["decode"] = {"total": _total(ro["decode step"]), "resident": train}
    # the engine drops its old copy first (handover.handover): trainer params in, engine
    # params out, and on TPU the gathered tensors in flight (`_gathered`)
    gathered = _gathered(model, shape) if platform == "tpu" else 0
    out["hand-over"] = {"total": train + ro["engine params"] + gathered, "resident": 0}
    return out


def _prefill_len(prompt_len: int, cache_len: int) -> int:
    """The padded length the engine prefills a prompt of prompt_len tokens at
    (`steps.length_bucket` of all but the last token)."""
    from k15_jax.rollout.steps import MIN_PREFILL_LEN, length_bucket

    return length_bucket(prompt_len - 1, MIN_PREFILL_LEN, cache_len)


def _gathered(model: ModelConfig, shape: dict) -> int:
    """Temporaries of the TPU hand-over: each all-gather lands in a buffer of its own layout
    and is copied into the output. memory_analysis() shows every gathered tensor in flight
    at once with tensor parallelism (Llama-3.1-70B on v5p-256, tensor=8: 16.43 of 16.43
    GiB; 1.08 of 1.44 at tensor=2 on v5e-16, so this leans high there) and, without it, the
    embeddings and about two of the largest stacked weights (Qwen2.5-7B on v5p-64: 8.96 of
    14.19 GiB; a 2-layer 7B on v5p-8: all of it)."""
    layers = memory.leaf_bytes(model, shape, ROLLOUT_RULES, param_specs(model)["layers"])
    total = memory.param_bytes(model, shape, ROLLOUT_RULES)
    if shape["tensor"] > 1:
        return total
    outside = total - sum(layers)
    return min(total, outside + 2 * max(layers))
