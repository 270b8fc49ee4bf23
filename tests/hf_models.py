"""Tiny random Hugging Face models built inside tests (no downloads)."""

import numpy as np
import torch
import transformers

TINY = dict(
    vocab_size=97,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)


def tiny_hf_model(arch: str, seed: int = 0, **overrides):
    """A LlamaForCausalLM or Qwen2ForCausalLM with every weight (norms, biases) random."""
    torch.manual_seed(seed)
    kw = {**TINY, **overrides}
    if arch == "llama":
        kw.setdefault(
            "rope_scaling",
            {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        )
        kw.setdefault("rope_theta", 500000.0)
        kw.setdefault("tie_word_embeddings", False)
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw))
    elif arch == "qwen2":
        kw.setdefault("tie_word_embeddings", True)
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**kw))
    else:
        raise ValueError(arch)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(
                torch.randn_like(p) * 0.2
                + (1.0 if p.ndim == 1 and p.shape[0] == kw["hidden_size"] else 0.0)
            )
    return model.eval()


def hf_logits(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(tokens), dtype=torch.long)).logits.float().numpy()
