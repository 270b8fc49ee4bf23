"""The policy model: a Llama/Qwen2 decoder as pure functions over a params pytree."""

from k15_jax.model.config import SUPPORTED_ARCHITECTURES, ModelConfig
from k15_jax.model.hf import export_hf, load_hf, read_hf_config
from k15_jax.model.logprobs import token_logprobs
from k15_jax.model.params import abstract_params, init_params, logical_axes, param_specs
from k15_jax.model.transformer import decode_step, forward, forward_hidden, init_cache, prefill

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "ModelConfig",
    "abstract_params",
    "decode_step",
    "export_hf",
    "forward",
    "forward_hidden",
    "init_cache",
    "init_params",
    "load_hf",
    "logical_axes",
    "param_specs",
    "prefill",
    "read_hf_config",
    "token_logprobs",
]
