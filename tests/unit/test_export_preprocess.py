"""The fast tile preprocessing agrees with the straightforward reference implementation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from histoprompt.core.modelspec import EncoderSpec
from histoprompt.serving.errors import RequestError
from histoprompt.serving.preprocess import preprocess_tiles, resize_bilinear


def _reference(tiles: NDArray[Any], spec: EncoderSpec) -> NDArray[Any]:
    """The previous implementation: float /255, gather-based bilinear resize, normalise, NCHW."""
    x = tiles.astype(np.float32) * np.float32(1 / 255)
    b, h, w, c = x.shape
    size = spec.input_px
    if (h, w) != (size, size):

        def weights(src: int) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
            pos = (np.arange(size, dtype=np.float64) + 0.5) * (src / size) - 0.5
            pos = np.clip(pos, 0, src - 1)
            lo = np.floor(pos).astype(np.int64)
            return lo, np.minimum(lo + 1, src - 1), (pos - lo).astype(np.float32)

        y0, y1, fy = weights(h)
        x0, x1, fx = weights(w)
        rows = x[:, y0] * (1 - fy)[None, :, None, None] + x[:, y1] * fy[None, :, None, None]
        x = (
            rows[:, :, x0] * (1 - fx)[None, None, :, None]
            + rows[:, :, x1] * fx[None, None, :, None]
        )
    mean = np.asarray(spec.mean, dtype=np.float32)
    inv_std = np.float32(1) / np.asarray(spec.std, dtype=np.float32)
    x = (x - mean) * inv_std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def _spec(tile_px: int, input_px: int) -> EncoderSpec:
    return EncoderSpec(
        name="synthetic",
        tile_px=tile_px,
        input_px=input_px,
        target_mpp=0.5,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        embed_dim=8,
        untrained=True,
    )


@pytest.mark.parametrize(
    ("tile_px", "input_px"),
    [(32, 32), (64, 32), (96, 32), (128, 32), (40, 32), (24, 32), (70, 32), (33, 17)],
)
def test_matches_reference_on_random_tiles(tile_px: int, input_px: int) -> None:
    rng = np.random.default_rng(tile_px * 100 + input_px)
    tiles = rng.integers(0, 256, (5, tile_px, tile_px, 3), dtype=np.uint8)
    spec = _spec(tile_px, input_px)
    got = preprocess_tiles(tiles, spec)
    want = _reference(tiles, spec)
    assert got.shape == (5, 3, input_px, input_px)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert float(np.abs(got - want).max()) <= 1e-5


def test_non_square_tiles_resize_like_the_reference() -> None:
    rng = np.random.default_rng(7)
    tiles = rng.integers(0, 256, (2, 48, 20, 3), dtype=np.uint8)
    spec = _spec(48, 16)
    assert float(np.abs(preprocess_tiles(tiles, spec) - _reference(tiles, spec)).max()) <= 1e-5


def test_resize_bilinear_keeps_nhwc_and_constant_images() -> None:
    images = np.full((2, 30, 30, 3), 0.25, dtype=np.float32)
    out = resize_bilinear(images, 12)
    assert out.shape == (2, 12, 12, 3)
    np.testing.assert_allclose(out, 0.25, atol=1e-6)
    assert resize_bilinear(images, 30) is images


def test_tiny_tiles_are_rejected() -> None:
    with pytest.raises(RequestError):
        preprocess_tiles(np.zeros((1, 4, 4, 3), dtype=np.uint8), _spec(4, 4))
