"""Tile preprocessing: uint8 TILES [B,H,W,3] -> fp32 PIXELS [B,3,S,S], per EncoderSpec.

Bilinear resize (half-pixel centres, as torch `interpolate(align_corners=False)`), scale to
[0,1], then per-channel normalisation with the encoder's mean and std.

This runs in Triton's python backend on every tile, so it is written for speed: the uint8
tiles are converted, normalised and made channel-first in one copy into a preallocated
float32 array (`/255`, `-mean` and `/std` folded into one multiply-add per channel), and a
resize, when the tile size differs from the encoder's, is two small matrix products per
plane (BLAS) instead of fancy-indexing gathers. Normalising before resizing is exact up to
rounding because bilinear weights sum to one.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

from histoprompt.core.modelspec import EncoderSpec
from histoprompt.serving.errors import RequestError
from histoprompt.serving.tensors import check_tensor


def _axis_weights(src: int, dst: int) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    pos = (np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5
    pos = np.clip(pos, 0, src - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, src - 1)
    return lo, hi, (pos - lo).astype(np.float32)


@lru_cache(maxsize=16)
def _interp_matrix(src: int, dst: int) -> NDArray[np.float32]:
    """[dst, src] bilinear (half-pixel centres) weights, read-only: out = M @ in along one axis."""
    lo, hi, frac = _axis_weights(src, dst)
    mat = np.zeros((dst, src), dtype=np.float32)
    rows = np.arange(dst)
    # add, not assign: at the last pixel lo == hi and both weights land in one cell.
    np.add.at(mat, (rows, lo), 1 - frac)
    np.add.at(mat, (rows, hi), frac)
    mat.setflags(write=False)
    return mat


def resize_bilinear(images: NDArray[Any], size: int) -> NDArray[Any]:
    """[B,H,W,C] float32 -> [B,size,size,C]; a no-op when already that size."""
    b, h, w, c = images.shape
    if h == size and w == size:
        return images
    planes = np.ascontiguousarray(np.moveaxis(images, 3, 1), dtype=np.float32)
    out = _resize_planes(planes, size)
    return np.moveaxis(out, 1, 3)


def _resize_planes(planes: NDArray[np.float32], size: int) -> NDArray[np.float32]:
    """[B,C,H,W] float32 -> [B,C,size,size] float32 by separable bilinear interpolation.

    Upsampling (and mild downsampling) is two small matrix products per plane (BLAS); a large
    reduction gathers the two source rows/columns per output pixel instead, which is far fewer
    operations than a dense [size, src] product.
    """
    b, c, h, w = planes.shape
    if h <= 2 * size and w <= 2 * size:
        wy = _interp_matrix(h, size)
        wx_t = _interp_matrix(w, size).T
        cols = np.matmul(planes, wx_t)  # [B,C,H,size]
        out = np.empty((b, c, size, size), dtype=np.float32)
        np.matmul(wy, cols, out=out)
        return out
    y0, y1, fy = _axis_weights(h, size)
    x0, x1, fx = _axis_weights(w, size)
    rows = planes[:, :, y0] * (1 - fy)[:, None]
    rows += planes[:, :, y1] * fy[:, None]
    res: NDArray[np.float32] = np.empty((b, c, size, size), dtype=np.float32)
    np.multiply(rows[..., x0], 1 - fx, out=res)
    res += rows[..., x1] * fx
    return res


def _integer_reduce(tiles: NDArray[np.uint8], size: int) -> NDArray[np.float32] | None:
    """Exact bilinear downsampling by an integer factor k, on uint8 (before normalising).

    With half-pixel centres, output pixel i samples source position k*i + (k-1)/2: one source
    pixel when k is odd, the mean of two neighbours per axis (a 2x2 box) when k is even.
    Returns float32 [B,size,size,3] in 0..255, or None when the factor is not an integer.
    """
    _, h, w, _ = tiles.shape
    if h != w or h % size or h == size:
        return None
    k = h // size
    a = (k - 1) // 2
    if k % 2:
        return tiles[:, a::k, a::k].astype(np.float32)
    out = tiles[:, a::k, a::k].astype(np.float32)
    out += tiles[:, a + 1 :: k, a::k]
    out += tiles[:, a::k, a + 1 :: k]
    out += tiles[:, a + 1 :: k, a + 1 :: k]
    out *= np.float32(0.25)
    return out


def _scale_bias(spec: EncoderSpec) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    inv_std = np.float32(1) / np.asarray(spec.std, dtype=np.float32)
    scale = (np.float32(1 / 255) * inv_std).astype(np.float32)
    bias = (-np.asarray(spec.mean, dtype=np.float32) * inv_std).astype(np.float32)
    return scale, bias


def normalise_nchw(tiles: NDArray[Any], spec: EncoderSpec) -> NDArray[np.float32]:
    """[B,H,W,3] 0..255 -> normalised float32 [B,3,H,W] (one layout copy, one FMA pass)."""
    b, h, w, c = tiles.shape
    scale, bias = _scale_bias(spec)
    out = np.empty((b, c, h, w), dtype=np.float32)
    out[...] = np.moveaxis(tiles, 3, 1)
    out *= scale[None, :, None, None]
    out += bias[None, :, None, None]
    return out


def preprocess_tiles(tiles: NDArray[Any], spec: EncoderSpec) -> NDArray[Any]:
    """Validate and convert one request's TILES to the encoder's PIXELS."""
    check_tensor("TILES", tiles, dtype=np.uint8, shape=(None, None, None, 3))
    if tiles.shape[1] < 8 or tiles.shape[2] < 8:
        raise RequestError(f"TILES must be at least 8x8 pixels, got shape {tiles.shape}")
    size = spec.input_px
    reduced = _integer_reduce(tiles, size)
    if reduced is not None:
        return normalise_nchw(reduced, spec)
    x = normalise_nchw(tiles, spec)
    if x.shape[2] == size and x.shape[3] == size:
        return x
    return _resize_planes(x, size)
