"""Tissue mask at low resolution: Otsu's threshold on HSV saturation, with a floor.

Background on H&E is bright and grey (low saturation); stained tissue is saturated. The floor
keeps a blank slide from getting a threshold inside its own noise.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

MIN_SATURATION = 0.08
"""Below this saturation nothing is tissue, whatever Otsu picks."""


def _max_and_spread(rgb: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """uint8 channel-wise max and max - min of uint8 [h, w, 3] (no float copy)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx = np.maximum(np.maximum(r, g), b)
    return mx, mx - np.minimum(np.minimum(r, g), b)


def _saturation_of(mx: NDArray[Any], spread: NDArray[Any]) -> NDArray[np.float32]:
    """HSV saturation (float32) from channel max and spread: the one formula both the
    per-pixel `saturation` and the mask's lookup table use."""
    sat: NDArray[np.float32] = np.where(
        mx > 0, spread.astype(np.float32) / np.maximum(mx, 1).astype(np.float32), np.float32(0.0)
    )
    return sat


def saturation(rgb: NDArray[Any]) -> NDArray[Any]:
    """HSV saturation in [0, 1] of uint8 [h, w, 3]."""
    return _saturation_of(*_max_and_spread(rgb))


def otsu_threshold(
    values: NDArray[Any], bins: int = 256, weights: NDArray[Any] | None = None
) -> float:
    """Otsu's threshold of values in [0, 1] (maximises the between-class variance); with
    `weights`, each value counts that many times."""
    hist, edges = np.histogram(values.ravel(), bins=bins, range=(0.0, 1.0), weights=weights)
    hist = hist.astype(np.float64)
    total = hist.sum()
    if total == 0:
        return 1.0
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = total - w0
    m0 = np.cumsum(hist * centers)
    mean_all = m0[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        mu0 = m0 / w0
        mu1 = (mean_all - m0) / w1
        between = w0 * w1 * (mu0 - mu1) ** 2
    between = np.nan_to_num(between)
    return float(edges[int(np.argmax(between)) + 1])


@lru_cache(maxsize=1)
def _saturation_table() -> NDArray[np.float32]:
    """`saturation` of every (max, max - min) pair of channel values, flat [256 * 256]: a
    pixel's saturation depends on nothing else, so the mask looks it up."""
    mx = np.repeat(np.arange(256, dtype=np.uint8), 256)
    sat = _saturation_of(mx, np.tile(np.arange(256, dtype=np.uint8), 256))
    sat.setflags(write=False)
    return sat


def tissue_mask(rgb: NDArray[Any], min_saturation: float = MIN_SATURATION) -> NDArray[Any]:
    """bool [h, w]: True where there is tissue (saturation above Otsu's threshold and the
    floor).

    Computed on (max, spread) pair codes rather than per-pixel floats: the saturation
    histogram is the pair counts weighted onto `_saturation_table`, and the mask a lookup in
    that table compared with the threshold; the same float32 values and comparison as
    `saturation(rgb) > thr`, so the same mask, at a fraction of the passes over the pixels.
    """
    mx, spread = _max_and_spread(rgb)
    code = mx.astype(np.uint16) << 8
    code |= spread
    table = _saturation_table()
    counts = np.bincount(code.ravel(), minlength=table.size)
    thr = max(otsu_threshold(table, weights=counts), min_saturation)
    above = table > thr
    mask: NDArray[Any] = np.take(above, code)
    return mask


def area_fractions(mask: NDArray[Any], boxes: NDArray[Any]) -> NDArray[Any]:
    """Fraction of True pixels in each box [n, 4] = (x0, y0, x1, y1) in mask pixels (clipped).

    Uses an integral image, so any number of boxes costs O(mask + boxes).
    """
    h, w = mask.shape
    x0 = np.clip(boxes[:, 0], 0, w)
    y0 = np.clip(boxes[:, 1], 0, h)
    x1 = np.clip(boxes[:, 2], 0, w)
    y1 = np.clip(boxes[:, 3], 0, h)
    x1 = np.maximum(x1, x0)
    y1 = np.maximum(y1, y0)
    # The integral image only at the box edges (a tile grid has few distinct ones): one
    # pass over the mask sums its rows between consecutive edges, the rest is small.
    ys, yi = np.unique(np.concatenate([y0, y1]), return_inverse=True)
    xs, xi = np.unique(np.concatenate([x0, x1]), return_inverse=True)
    rows = np.zeros((ys.size, w + 1), dtype=np.int64)
    prev = 0
    for k, y in enumerate(ys.tolist()):
        band = mask[prev:y].sum(axis=0, dtype=np.int64) if y > prev else 0
        rows[k, 1:] = (rows[k - 1, 1:] if k else 0) + band
        prev = y
    integral = np.cumsum(rows, axis=1)[:, xs]
    n = boxes.shape[0]
    (ry0, ry1), (cx0, cx1) = yi.reshape(2, n), xi.reshape(2, n)
    inside = integral[ry1, cx1] - integral[ry0, cx1] - integral[ry1, cx0] + integral[ry0, cx0]
    area = (x1 - x0) * (y1 - y0)
    return np.where(area > 0, inside / np.maximum(area, 1), 0.0)
