"""Image preprocessing for the ViT: load, resize, normalize, patchify (Pillow + numpy).

An image becomes patches [P, C] with P = (size / patch)^2 in row-major grid order and
C = patch^2 * channels in (row, column, channel) order, normalized as SigLIP does
((x / 255 - 0.5) / 0.5, in [-1, 1]). A prompt's images stack to [m, P, C]; batches pad to
[rows, max_images, P, C] with zeros.
"""

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from k15_jax.model.config import VisionConfig

MEAN, STD = 0.5, 0.5  # SigLIP's image processor, every channel


class ImageError(ValueError):
    """An image file that is missing or cannot be decoded (the message names the path)."""


def load_image(path) -> Image.Image:
    """The decoded RGB image at `path`; ImageError naming the path if missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image file {path} does not exist")
    try:
        with Image.open(path) as img:
            img.load()  # decode now: a truncated file fails here, not in the trainer
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"image file {path} cannot be decoded: {e}") from None


def to_array(img: Image.Image, size: int) -> np.ndarray:
    """RGB image -> float32 [size, size, 3], bicubic resize, normalized to [-1, 1]."""
    img = img.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    return ((np.asarray(img, np.float32) / 255.0 - MEAN) / STD).astype(np.float32)


def patchify(x: np.ndarray, patch: int) -> np.ndarray:
    """[H, W, Ch] -> [(H/p) * (W/p), p * p * Ch], grid row-major, pixels (row, col, ch)."""
    H, W, Ch = x.shape
    if H % patch or W % patch:
        raise ValueError(f"image {H}x{W} is not a multiple of patch_size={patch}")
    g = x.reshape(H // patch, patch, W // patch, patch, Ch).transpose(0, 2, 1, 3, 4)
    return g.reshape((H // patch) * (W // patch), patch * patch * Ch)


def image_patches(img: Image.Image, v: VisionConfig) -> np.ndarray:
    """One image -> patches [P, C] for the config's image and patch size."""
    return patchify(to_array(img, v.image_size), v.patch_size)


def pad_images(per_row: list[np.ndarray | None], max_images: int, v: VisionConfig) -> np.ndarray:
    """Rows of [m, P, C] (None = no image) -> [rows, max_images, P, C], zero-padded."""
    out = np.zeros((len(per_row), max_images, v.num_patches, v.patch_dim), np.float32)
    for r, imgs in enumerate(per_row):
        if imgs is None or len(imgs) == 0:
            continue
        if len(imgs) > max_images:
            raise ValueError(
                f"row {r} has {len(imgs)} images; at most {max_images} fit "
                "(vision.max_images, or fewer images per prompt)"
            )
        out[r, : len(imgs)] = imgs
    return out
