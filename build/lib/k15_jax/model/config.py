"""Model configuration: one immutable dataclass covering the Llama and Qwen2 families."""

import dataclasses

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM")


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """A SigLIP-style ViT image encoder and the projector into the decoder (model/vit.py).

    Images are image_size x image_size x num_channels, cut into (image_size / patch_size)^2
    patches; each image becomes that many features, spliced into the token sequence where
    the prompt holds `image_token_id` (model/multimodal.py). max_images: images per prompt
    (rollout and RL batches are [rows, max_images, patches, patch_dim]).
    freeze_tower: stop gradients into the ViT (the projector still trains), e.g. for a
    loaded pretrained SigLIP tower.
    """

    image_size: int = 32
    patch_size: int = 8
    num_channels: int = 3
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    layer_norm_eps: float = 1e-6
    image_token_id: int = 100
    max_images: int = 1
    freeze_tower: bool = False

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(
                f"vision.image_size={self.image_size} is not a multiple of "
                f"vision.patch_size={self.patch_size}"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"vision.hidden_size={self.hidden_size} is not a multiple of "
                f"vision.num_heads={self.num_heads}"
            )

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def patch_dim(self) -> int:
        return self.patch_size * self.patch_size * self.num_channels

    def replace(self, **kw) -> "VisionConfig":
        return dataclasses.replace(self, **kw)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Decoder-only transformer hyper-parameters.

    Frozen and hashable so it can be a static argument of `jax.jit`. The Hydra schema for
    it (`k15_jax.config`) is derived from these fields, so options are declared only here.

    rope_scaling: None, or the Llama-3 rule as
      (factor, low_freq_factor, high_freq_factor, original_max_position_embeddings).
    attention_impl: "xla" | "pallas" | "auto" (see `k15_jax.model.attention`).
    dtype: compute dtype of activations ("float32" or "bfloat16"); params keep param_dtype.
    logits_chunk: sequence chunk for token log-probs (bounds the [B, chunk, V] f32 block).
    remat: "none" | "full" | "dots" (save matmul outputs) rematerialisation of each layer in
      the training forward (see `transformer.REMAT`).
    vision: an image encoder in the policy (params["vision"]); `num_params` counts the
      decoder only.
    """

    vocab_size: int = 128
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 32
    rope_theta: float = 10000.0
    rope_scaling: tuple[float, float, float, int] | None = None
    rms_norm_eps: float = 1e-6
    qkv_bias: bool = False
    tie_embeddings: bool = True
    max_position_embeddings: int = 2048
    architecture: str = "LlamaForCausalLM"
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention_impl: str = "xla"
    logits_chunk: int = 256
    remat: str = "none"
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    vision: VisionConfig | None = None  # None: text-only (set from the `vision` config group)

    def __post_init__(self):
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            raise ValueError(
                f"model.architecture={self.architecture!r} is not supported; "
                f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model.num_heads={self.num_heads} is not a multiple of "
                f"model.num_kv_heads={self.num_kv_heads}; grouped-query attention needs it"
            )
        if self.remat not in ("none", "full", "dots"):
            raise ValueError(f"model.remat={self.remat!r}; use 'none', 'full' or 'dots'")
        if self.rope_scaling is not None and len(self.rope_scaling) != 4:
            raise ValueError(
                "model.rope_scaling must be (factor, low_freq_factor, high_freq_factor, "
                f"original_max_position_embeddings), got {self.rope_scaling!r}"
            )

    @property
    def num_params(self) -> int:
        """Parameter count (embeddings included once when tied)."""
        d, f, v = self.hidden_size, self.intermediate_size, self.vocab_size
        q = self.num_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        per_layer = d * (q + 2 * kv) + q * d + 3 * d * f + 2 * d
        if self.qkv_bias:
            per_layer += q + 2 * kv
        emb = v * d * (1 if self.tie_embeddings else 2)
        return self.num_layers * per_layer + emb + d

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)
