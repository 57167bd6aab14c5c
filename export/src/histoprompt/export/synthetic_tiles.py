"""SYNTHETIC slide pictures: tile generators `(level, x, y, w, h) -> uint8 [h, w, 3]`.

The writers (`synthetic_wsi` for DICOM-WSI, `synthetic_tiff` for TIFF/SVS) pull pixels from
one of these a frame at a time, so a 50k x 50k px slide never sits in memory.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["SYNTHETIC", "TileFn", "blank_tiles", "needle_biopsy", "synthetic_tissue"]

SYNTHETIC = "SYNTHETIC"
TileFn = Callable[[int, int, int, int, int], np.ndarray]
"""(level, x, y, w, h) -> uint8 [h, w, 3] in that level's pixel coordinates."""


def _relative_grid(
    width0: int, height0: int, level: int, x: int, y: int, w: int, h: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's position as a fraction of the level-0 slide (levels are power-of-two
    downsamples), so every level shows the same picture."""
    scale = 2**level
    xs = (x + np.arange(w, dtype=np.float32)) * scale / max(width0, 1)
    ys = (y + np.arange(h, dtype=np.float32)) * scale / max(height0, 1)
    gx, gy = np.meshgrid(xs, ys)
    return gx, gy


def _paint(inside: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Textured pink where `inside`, near-white background elsewhere (uint8 [h, w, 3])."""
    h, w = inside.shape
    texture = (np.sin(gx * 400.0) * np.cos(gy * 300.0) * 30.0).astype(np.float32)
    out = np.full((h, w, 3), 242, dtype=np.float32)
    pink = np.stack([200 + texture, 110 + texture, 170 + 0.5 * texture], axis=-1)
    out[inside] = pink[inside]
    return np.clip(out, 0, 255).astype(np.uint8)


def synthetic_tissue(width0: int, height0: int, seed: int = 0) -> TileFn:
    """Pink elliptical 'tissue' blobs with texture on a white background (level-0 size given).

    The pattern is a function of the relative slide position, so every pyramid level shows
    the same picture; levels are taken as power-of-two downsamples of level 0.
    """
    rng = np.random.default_rng(seed)
    blobs = [
        (rng.uniform(0.25, 0.75), rng.uniform(0.25, 0.75), rng.uniform(0.12, 0.3)) for _ in range(3)
    ]

    def tile(level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        gx, gy = _relative_grid(width0, height0, level, x, y, w, h)
        inside = np.zeros((h, w), dtype=bool)
        for cx, cy, r in blobs:
            inside |= (gx - cx) ** 2 + (gy - cy) ** 2 < r * r
        return _paint(inside, gx, gy)

    return tile


def blank_tiles(level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
    """An all-background (no tissue) slide."""
    return np.full((h, w, 3), 245, dtype=np.uint8)


def needle_biopsy(width0: int, height0: int, seed: int = 0, cores: int = 2) -> TileFn:
    """Thin horizontal tissue cores with wavy edges on a white background, like a needle
    biopsy: about 3 % of the slide's area per core (each 4 % of the height thick, 75 % of
    the width long), so sparse slides exercise reads of only the frames under tissue."""
    rng = np.random.default_rng(seed)
    rows = [(k + 1) / (cores + 1) + rng.uniform(-0.05, 0.05) for k in range(cores)]
    phases = rng.uniform(0, 2 * np.pi, cores)

    def tile(level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        gx, gy = _relative_grid(width0, height0, level, x, y, w, h)
        inside = np.zeros((h, w), dtype=bool)
        for cy, phase in zip(rows, phases, strict=True):
            centre = cy + 0.01 * np.sin(gx * 12.0 + phase)
            inside |= (np.abs(gy - centre) < 0.02) & (gx > 0.1) & (gx < 0.85)
        return _paint(inside, gx, gy)

    return tile
