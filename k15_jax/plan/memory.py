"""Per-device bytes of the training step and the rollout engine, from the config alone.

Nothing is traced or compiled. Letters: L layers, D model dim, F mlp dim, H query heads,
G kv heads, Dh head dim, V vocab, R rows (sequences) of a step, T tokens per row, b rows per
device in one micro-batch, S decode slots, C cache positions. A dimension is divided by
the mesh axes its logical axis maps to (`sharding.TRAIN_RULES` / `ROLLOUT_RULES`) when they
divide it, as `sharding.check_divisible` requires of parameters.

What each step holds (why the peaks below are built as they are):
  SFT step      inputs (params, Adam moments, batch), then during the backward pass the
                gradients, the saved activations of every layer and the working set of the
                layer being differentiated; the new params and moments are written after the
                activations are dead (XLA puts temporaries in the output buffers before).
  RL update     the same inside a scan over M optimizer steps, whose carry (params, moments)
                is a second copy next to the (not donated) inputs.
  decode step   params, the KV cache and per-slot state (donated: updated in place), and
                one layer's weights and K/V read at a time.

Calibration. Saved activations are the residuals autodiff keeps per layer (counted from
`jax.ad_checkpoint.print_saved_residuals` for each policy of `transformer.REMAT`). How much
more the backward pass of one layer holds is up to XLA's buffer assignment:
RECOMPUTE_WORK and COTANGENT_WORK were measured with `compiled.memory_analysis()` on
XLA:CPU for 4-8 layer models on 1 and 4 devices (fsdp, tensor and data parallel), and
tests/test_plan.py keeps the totals within 20% of it. TPU and GPU fuse more, so there these
figures lean high.
"""

import math

import numpy as np

from k15_jax.model.config import ModelConfig
from k15_jax.model.params import ParamSpec, param_specs
from k15_jax.sharding import ROLLOUT_RULES, TRAIN_RULES, logical_to_spec

RECOMPUTE_WORK = 1.4  # remat: the layer's recomputed residuals plus their cotangents
COTANGENT_WORK = 0.6  # no remat: the cotangents of the layer's residuals
LOGITS_WORK = 3  # [b, chunk, V] f32 blocks live in the chunked log-prob backward
# TPU, XLA attention, remat: [rows, H, T, T] f32 score tensors live in a layer's backward
# (memory_analysis() of the 7B update on v5p-64: 2.2 at T=2048, 2.26 at T=4096)
TPU_SCORE_WORK = 2.25
# TPU update: [rows of all fsdp chips, chunk, V] f32 logits blocks live in the log-prob
# backward (HLO of Qwen2.5-1.5B on v5e-16 at tensor=2: 1.2; 2-layer 7B on v5p-8: 1.25)
TPU_LOGITS_WORK = 1.25
# TPU prefill: [S, H, Tp, Tp] f32 scores live at once (Qwen2.5-7B on v5p-64: 1.1; 1.5B, v5e-16: 1.1)
TPU_PREFILL_SCORES = 1.25
# XLA attention's backward (kernels/xla_attention.py): one layer's recomputed scores, P,
# dP and dS in f32 live at once (memory_analysis() on XLA:CPU, tests/test_plan.py)
XLA_SCORE_WORK = 4
F32 = 4


def _parts(entry, mesh_shape: dict) -> int:
    if entry is None:
        return 1
    names = (entry,) if isinstance(entry, str) else entry
    return math.prod(mesh_shape[a] for a in names)


def _split(n: int, parts: int) -> int:
    """n per device when split in `parts` (unsplit when they do not divide it)."""
    return n // parts if n % parts == 0 else n


def batch_shards(mesh_shape: dict) -> int:
    return mesh_shape["data"] * mesh_shape["fsdp"]


def rows_per_device(rows: int, mesh_shape: dict) -> int:
    """Rows of a [rows, ...] batch on one device (`distributed.global_batch` replicates
    a batch whose rows the batch axes do not divide)."""
    return _split(rows, batch_shards(mesh_shape))


def param_bytes(model: ModelConfig, mesh_shape: dict, rules=TRAIN_RULES, layers_only=False) -> int:
    """Exact bytes of the params on one device under `rules` (layers_only: one layer's)."""
    specs = param_specs(model)
    if layers_only:
        specs = specs["layers"]
    total = sum(leaf_bytes(model, mesh_shape, rules, specs))
    return total // model.num_layers if layers_only else total


def leaf_bytes(model: ModelConfig, mesh_shape: dict, rules=TRAIN_RULES, specs=None) -> list:
    """Bytes on one device of each param tensor (stacked layers: all layers) under `rules`."""
    itemsize = np.dtype(model.param_dtype).itemsize
    out = []
    for spec in _leaves(param_specs(model) if specs is None else specs):
        parts = logical_to_spec(spec.axes, rules)
        shape = [_split(n, _parts(p, mesh_shape)) for n, p in zip(spec.shape, parts)]
        out.append(math.prod(shape) * itemsize)
    return out


def _leaves(tree):
    if isinstance(tree, ParamSpec):
        return [tree]
    return [leaf for v in tree.values() for leaf in _leaves(v)]


def attention_path(model: ModelConfig, platform: str) -> str:
    """ "xla" (materialises [H, T, T] scores) or "flash" (Pallas / cuDNN kernels)."""
    impl = model.attention_impl
    if impl == "auto":
        impl = "xla" if platform == "cpu" else "pallas"
    return "xla" if impl == "xla" else "flash"


def layer_activations(model: ModelConfig, tp: int, b: int, T: int, gather: int = 1) -> dict:
    """Bytes one layer saves for the backward pass, for b rows of T tokens, per policy.

    none: inputs and outputs of norms, q/k/v, rotary, attention (its output and the row
      log-sum-exp: the XLA path recomputes its scores in the backward pass like the flash
      kernels, `kernels/xla_attention.py`), output projection, gate and up of the MLP
      (its written-out backward recomputes the rest, `model/swiglu.py`).
      dots: x, q/k/v and o projections, gate and up.
      full: the layer input x.
    gather: the q/k/v and MLP tensors hold b * gather rows (see `activations`).
    """
    a = np.dtype(model.dtype).itemsize
    D, Dh = model.hidden_size, model.head_dim
    Ht, Gt = _split(model.num_heads, tp), _split(model.num_kv_heads, tp)
    Ft = _split(model.intermediate_size, tp)
    q, kv = Ht * Dh, Gt * Dh
    lse = 2 * F32 * Ht  # both attention paths keep the row log-sum-exp, not the scores
    tokens, wide = b * T, b * gather * T
    return {
        "none": tokens * (a * 6 * D + lse) + wide * a * (2 * q + 2 * kv + 2 * Ft),
        "dots": tokens * a * 2 * D + wide * a * (q + 2 * kv + 2 * Ft),
        "full": tokens * a * D,
    }


def activations(
    model: ModelConfig,
    mesh_shape: dict,
    b: int,
    T: int,
    attention: str,
    split: bool = True,
    platform: str = "cpu",
    gather_scores: bool = False,
) -> dict:
    """Saved activations of all layers and the backward working set, for b rows per device.

    With fsdp > 1 the batch and the weights' model dim are split over the same mesh axis,
    and XLA's partitioner (nothing in the model constrains the activations) contracts the
    projections over the split model dim with the rows gathered: q/k/v and MLP tensors hold
    the rows of all fsdp devices, whole (measured on 4 CPU devices, tests/test_plan.py).
    split: the batch rows are split over the batch axes (False: replicated, nothing to
    gather). Returns {"activations": bytes, "working set": bytes} under model.remat.

    The TPU compiler keeps the projections' rows split (it gathers the weights), but XLA
    attention without segment ids (the RL update: nothing batch-split enters its mask) runs
    on the rows of all fsdp chips: its [rows, H, T, T] f32 scores dominate a layer's
    backward (seen in the compiled HLO of the Qwen2.5-7B update on v5p-64), and so do its
    log-prob chunks. gather_scores: that happens here (platform "tpu", kind "rl").
    """
    tp = mesh_shape["tensor"]
    tpu = platform == "tpu"
    gather = mesh_shape["fsdp"] if split else 1
    per = layer_activations(model, tp, b, T, gather=1 if tpu else gather)
    policy = model.remat
    saved = model.num_layers * per[policy]
    if tpu and policy != "none":  # the stacked residuals and a second [L, ...] buffer the
        saved *= 2  # backward scan reads (HLO of Llama-3.1-70B's update on v5p-256)
    Ht = _split(model.num_heads, tp)
    work = {
        "none": COTANGENT_WORK * per["none"],
        "full": RECOMPUTE_WORK * per["none"],
        "dots": RECOMPUTE_WORK * (per["none"] - per["dots"]),
    }[policy]
    if attention == "xla":  # one layer's recomputed [H, T, T] f32 scores, P, dP and dS
        score = F32 * Ht * T * T  # one row's [H, T, T] f32 scores
        if tpu and policy != "none":
            work += TPU_SCORE_WORK * b * (gather if gather_scores else 1) * score
        else:
            work += XLA_SCORE_WORK * b * score
    # the log-prob chunks are differentiated before the layers: the larger of the two
    chunk = max(1, min(model.logits_chunk, T))
    if tpu and gather_scores:  # the update's log-prob chunks: rows of all fsdp chips too
        logits = TPU_LOGITS_WORK * F32 * b * gather * chunk * _split(model.vocab_size, tp)
    else:
        logits = LOGITS_WORK * F32 * b * chunk * _split(model.vocab_size, tp)
    work = max(work, logits)
    return {"activations": int(saved), "working set": int(work)}


def train_step(
    model: ModelConfig,
    mesh_shape: dict,
    rows: int,
    T: int,
    *,
    microbatches: int = 1,
    platform: str = "cpu",
    kind: str = "sft",
    updates: int = 2,
) -> dict:
    """Per-device bytes of one jitted training step (`sft.make_step` or `rl_step.make_update`).

    kind "sft": batch = tokens, segment ids, loss mask; kind "rl": tokens, ref_logp, mask
    (+ rewards), the M = `updates` steps in a scan (the same memory for any M > 1; on TPU
    one step compiles without the loop).
    Returns the
    components, "inputs", "beyond inputs" (what the step allocates: XLA's output + temp
    sizes) and "peak".
    """
    P = param_bytes(model, mesh_shape, TRAIN_RULES)
    opt = 2 * P  # Adam's first and second moments, in the param dtype
    b = rows_per_device(rows, mesh_shape)
    bm = -(-b // microbatches)
    batch = b * T * 12  # three [R, T] arrays of 4 bytes
    grads = P * (2 if microbatches > 1 else 1)  # accumulator + one micro-batch's
    split = rows % batch_shards(mesh_shape) == 0
    attention = attention_path(model, platform)
    act = activations(model, mesh_shape, bm, T, attention, split, platform, kind == "rl")
    backward = grads + act["activations"] + act["working set"]
    out = {
        "params": P,
        "optimizer state": opt,
        "batch": batch,
        "gradients": grads,
        **act,
        "new params and optimizer state": P + opt,
    }
    if kind == "sft":
        beyond = max(backward, P + opt + P)
    else:
        if microbatches > 1:  # log-probs of all rows and their cotangent
            backward += 2 * F32 * b * T
        out["scan carry"] = P + opt
        if platform == "tpu" and updates == 1:  # no loop: the gradients live in the
            beyond = max(P + opt, backward)  # output buffers meanwhile
        else:
            beyond = P + opt + backward
    out["inputs"] = P + opt + batch
    out["beyond inputs"] = int(beyond)
    out["peak"] = int(out["inputs"] + beyond)
    return out


def decode_state_bytes(model: ModelConfig, mesh_shape: dict, slots: int, C: int, window: int):
    """Per-device bytes of the engine's DecodeState: (kv cache, per-slot rest)."""
    a = np.dtype(model.dtype).itemsize
    S = _split(slots, batch_shards(mesh_shape))
    Gt = _split(model.num_kv_heads, mesh_shape["tensor"])
    kv = 2 * model.num_layers * S * Gt * C * model.head_dim * a
    rest = S * (6 * 4 + 1 + 2 * 4 + window * 4)  # 6 int32 rows, active, key, repeat window
    return kv, rest


def rollout(
    model: ModelConfig,
    mesh_shape: dict,
    *,
    slots: int,
    cache_len: int,
    steps_per_sync: int,
    window: int,
    prefill_len: int,
    platform: str = "cpu",
) -> dict:
    """Per-device bytes of the rollout phase: trainer params (kept by the loop), the engine's
    params, the decode state, the prefill buffer and the larger of the decode and prefill
    working sets. "decode step" holds the figures of one compiled `generate` call.
    """
    tp = mesh_shape["tensor"]
    S = _split(slots, batch_shards(mesh_shape))
    Ht = _split(model.num_heads, tp)
    engine_params = param_bytes(model, mesh_shape, ROLLOUT_RULES)
    kv, rest = decode_state_bytes(model, mesh_shape, slots, cache_len, window)
    step_out = steps_per_sync * S * (4 + 4 + 1) + S * 4 + 4
    vocab = _split(model.vocab_size, tp)
    # the engine keeps params and cache per layer (rollout/layout.py): no layer is copied
    # out of a stack. Each step's new keys and values of every layer (made, and carried to
    # the next step's write), the logits and one layer's scores
    new_kv = 2 * kv // cache_len
    decode_work = 2 * new_kv + S * (F32 * vocab + F32 * Ht * cache_len)
    # prefill of up to `slots` rows (the eval pass fills every slot with a new prompt): its
    # output is their K/V padded to C; each layer's K and V are padded and transposed
    # straight into it, so the work is one layer's unpadded K/V and its attention scores
    prefix = kv
    scores = 4 * F32 * S * Ht * prefill_len**2 if attention_path(model, platform) == "xla" else 0
    prefill_work = prefix // cache_len * prefill_len // model.num_layers + scores
    if platform == "tpu":  # K/V written in place; about one f32 copy of the scores
        prefill_work = int(TPU_PREFILL_SCORES * scores / 4)
        if tp > 1:  # with the kv heads split, the decode chunk's KV scatter is not in place
            decode_work += kv
    trainer = param_bytes(model, mesh_shape, TRAIN_RULES)
    itemsize = np.dtype(model.param_dtype).itemsize
    head = 0 if model.tie_embeddings else model.hidden_size * vocab * itemsize
    # prefill keeps K/V only: the last layer's query, output and MLP weights and the final
    # norm feed nothing it returns, and with one array per layer jit drops them
    layers = param_specs(model)["layers"]
    dead = {k: v for k, v in layers.items() if k not in ("attn_norm", "wk", "wv", "bk", "bv")}
    unread = sum(leaf_bytes(model, mesh_shape, ROLLOUT_RULES, dead)) // model.num_layers
    unread += model.hidden_size * itemsize
    return {
        "trainer params": trainer,
        "engine params": engine_params,
        "KV cache": kv,
        "slot state": rest,
        "prefill buffer": prefix,
        "working set": max(decode_work + step_out, prefill_work),
        "peak": trainer
        + engine_params
        + kv
        + rest
        + prefix
        + max(decode_work + step_out, prefill_work),
        "decode step": {
            "inputs": engine_params + kv + rest,
            "outputs": kv + rest + step_out,
            "aliased": kv + rest,  # the decode state is donated: updated in place
            "temporaries": decode_work,
        },
        "prefill step": {  # jit drops the arguments it never reads (see `unread`)
            "inputs": engine_params - head - unread + S * (prefill_len + 2) * 4,
            "outputs": prefix + S * 2 * 4,
            "aliased": 0,
            "temporaries": prefill_work,
        },
        "kv per slot": kv // max(S, 1),
    }
