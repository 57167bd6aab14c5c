"""Tile preprocessing: uint8 TILES [B,H,W,3] -> fp32 PIXELS [B,3,S,S], per EncoderSpec.

Bilinear resize (half-pixel centres, as torch `interpolate(align_corners=False)`), scale to
[0,1], then per-channel normalisation with the encoder's mean and std.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from histoprompt.core.modelspec import EncoderSpec
from histoprompt.export.serving.errors import RequestError
from histoprompt.export.serving.tensors import check_tensor


def _axis_weights(src: int, dst: int) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    pos = (np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5
    pos = np.clip(pos, 0, src - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, src - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def resize_bilinear(images: NDArray[Any], size: int) -> NDArray[Any]:
    """[B,H,W,C] float32 -> [B,size,size,C]; a no-op when already that size."""
    b, h, w, c = images.shape
    if h == size and w == size:
        return images
    y0, y1, fy = _axis_weights(h, size)
    x0, x1, fx = _axis_weights(w, size)
    rows = images[:, y0] * (1 - fy)[None, :, None, None] + images[:, y1] * fy[None, :, None, None]
    out: NDArray[Any] = (
        rows[:, :, x0] * (1 - fx)[None, None, :, None] + rows[:, :, x1] * fx[None, None, :, None]
    )
    return out


def preprocess_tiles(tiles: NDArray[Any], spec: EncoderSpec) -> NDArray[Any]:
    """Validate and convert one request's TILES to the encoder's PIXELS."""
    check_tensor("TILES", tiles, dtype=np.uint8, shape=(None, None, None, 3))
    if tiles.shape[1] < 8 or tiles.shape[2] < 8:
        raise RequestError(f"TILES must be at least 8x8 pixels, got shape {tiles.shape}")
    x = tiles.astype(np.float32) * np.float32(1 / 255)
    x = resize_bilinear(x, spec.input_px)
    mean = np.asarray(spec.mean, dtype=np.float32)
    inv_std = np.float32(1) / np.asarray(spec.std, dtype=np.float32)
    x = (x - mean) * inv_std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)
