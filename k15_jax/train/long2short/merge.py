"""Model merging for long2short (report sec. 2.4): average a long-CoT and a short-CoT model.

    theta_merged = alpha * theta_long + (1 - alpha) * theta_short      (alpha = 0.5: the mean)

No training. Both models must share the architecture (the same params tree and shapes);
averaging is meaningful when they share an initialisation, as here, where the short model
is fine-tuned from the long one.
"""

import shutil
from pathlib import Path

import jax
import jax.numpy as jnp

from k15_jax.model.hf import export_hf, load_hf


def _check_same_tree(long_params, short_params) -> None:
    a, b = jax.tree.structure(long_params), jax.tree.structure(short_params)
    if a != b:
        raise ValueError(f"merge: the two models' params differ in structure ({a} vs {b})")
    for (path, x), y in zip(
        jax.tree_util.tree_flatten_with_path(long_params)[0],
        jax.tree.leaves(short_params),
        strict=True,
    ):
        if x.shape != y.shape:
            raise ValueError(
                f"merge: {jax.tree_util.keystr(path)} has shape {x.shape} in the long model "
                f"and {y.shape} in the short one; merge checkpoints of one architecture"
            )


@jax.jit
def _merge(long_params, short_params, alpha):
    # in float32 whatever the storage dtype, then back: bf16 weights lose nothing extra
    return jax.tree.map(
        lambda a, b: (alpha * a.astype(jnp.float32) + (1 - alpha) * b.astype(jnp.float32)).astype(
            a.dtype
        ),
        long_params,
        short_params,
    )


def merge_params(long_params, short_params, alpha: float = 0.5):
    """alpha * long + (1 - alpha) * short, leaf by leaf (keeps the long params' shardings)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"merge alpha={alpha} must lie in [0, 1] (1 = the long model)")
    _check_same_tree(long_params, short_params)
    return _merge(long_params, short_params, jnp.float32(alpha))


def merge_checkpoints(long_dir, short_dir, out_dir, alpha: float = 0.5) -> Path:
    """Merges two HF checkpoint directories into `out_dir` (config and tokenizer files are
    the long model's). Returns out_dir."""
    long_cfg, long_params = load_hf(long_dir)
    short_cfg, short_params = load_hf(short_dir)
    if long_cfg != short_cfg:
        raise ValueError(
            f"merge: {long_dir} and {short_dir} have different model configs "
            f"({long_cfg} vs {short_cfg}); merge checkpoints of one architecture"
        )
    out_dir = Path(out_dir)
    export_hf(merge_params(long_params, short_params, alpha), long_cfg, out_dir)
    for f in Path(long_dir).iterdir():  # tokenizer.json, tokenizer_config.json, ...
        if f.is_file() and f.name.startswith(("tokenizer", "special_tokens", "vocab")):
            shutil.copy2(f, out_dir / f.name)
    return out_dir
