"""FLOPs of the training step and of an RL iteration, and rough times at a device's peak.

Counts are 2 x multiply-adds of the matmuls (projections, MLP, logits) plus the attention
products QK^T and PV; norms, rotary and softmax are left out (a few percent). Letters as in
`memory.py`; N sequences, T tokens per sequence, M updates per RL iteration.
"""

import math

from k15_jax.model.config import ModelConfig


def forward_per_token(model: ModelConfig, context: float) -> float:
    """FLOPs of one token through the model, attending to `context` positions."""
    L, D, F, Dh = model.num_layers, model.hidden_size, model.intermediate_size, model.head_dim
    H, G, V = model.num_heads, model.num_kv_heads, model.vocab_size
    matmul = L * (D * (H + 2 * G) * Dh + H * Dh * D + 3 * D * F) + D * V
    attention = L * 2 * context * H * Dh
    return 2.0 * (matmul + attention)


def train_per_token(model: ModelConfig, T: int, attention: str, extra_forward: bool) -> float:
    """Forward + backward (2x forward) + what the backward recomputes, per token.

    XLA attention computes all T x T scores (masked, not skipped); flash kernels skip the
    masked half. extra_forward: the log-prob pass of RL gradient accumulation.
    """
    context = T if attention == "xla" else T / 2
    fwd = forward_per_token(model, context)
    logits = 2.0 * model.hidden_size * model.vocab_size
    attn = 2.0 * model.num_layers * 2 * context * model.num_heads * model.head_dim
    recompute = {"none": 0.0, "full": fwd - logits, "dots": attn}[model.remat]
    # both attention paths recompute QK^T in their backward (kernels/xla_attention.py, the
    # flash kernels); the log-prob chunks recompute their logits when there are several
    recompute += attn / 2 + (logits if T > model.logits_chunk else 0.0)
    return 3 * fwd + recompute + (fwd if extra_forward else 0.0)


def sft_step(model: ModelConfig, rows: int, T: int, attention: str) -> float:
    return rows * T * train_per_token(model, T, attention, False)


def rl_iteration(
    model: ModelConfig,
    *,
    sequences: int,
    prompt_len: int,
    new_tokens: int,
    updates: int,
    microbatches: int,
    attention: str,
) -> dict:
    """FLOPs of one iteration's parts, every response running to `new_tokens` (an upper
    bound): prefill and decode, the reference log-probs, M updates."""
    T = prompt_len + new_tokens
    context = T if attention == "xla" else T / 2
    decode = sequences * new_tokens * forward_per_token(model, prompt_len + new_tokens / 2)
    prefill = sequences * prompt_len * forward_per_token(model, prompt_len)
    reference = sequences * T * forward_per_token(model, context)
    update = updates * sequences * T * train_per_token(model, T, attention, microbatches > 1)
    return {"rollout": decode + prefill, "reference": reference, "update": update}


def seconds(flops: float, devices: int, peak_tflops: float | None) -> float | None:
    """Time at 100% of the stated peak (a lower bound; 40-60% is typical in practice)."""
    if not peak_tflops:
        return None
    return flops / (devices * peak_tflops * 1e12)


def decode_seconds(
    *,
    flops_per_step: float,
    bytes_per_step: float,
    steps: int,
    devices: int,
    peak_tflops: float | None,
    hbm_gbps: float | None,
) -> float | None:
    """Decoding is bound by reading weights and KV cache every step: the larger of the
    compute time and the memory time, times the steps."""
    if not peak_tflops or not hbm_gbps:
        return None
    compute = flops_per_step / (devices * peak_tflops * 1e12)
    memory = bytes_per_step / (hbm_gbps * 1e9)
    return steps * max(compute, memory)


def decode_steps(sequences: int, new_tokens: int, slots: int) -> int:
    """Decode steps when every response runs to new_tokens and slots refill at once."""
    return math.ceil(sequences * new_tokens / slots)
