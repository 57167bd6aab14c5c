"""Tissue mask at low resolution: Otsu's threshold on HSV saturation, with a floor.

Background on H&E is bright and grey (low saturation); stained tissue is saturated. The floor
keeps a blank slide from getting a threshold inside its own noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

MIN_SATURATION = 0.08
"""Below this saturation nothing is tissue, whatever Otsu picks."""


def saturation(rgb: NDArray[Any]) -> NDArray[Any]:
    """HSV saturation in [0, 1] of uint8 [h, w, 3] (channel-wise max/min: no float copy)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    spread = (mx - mn).astype(np.float32)
    return np.where(mx > 0, spread / np.maximum(mx, 1).astype(np.float32), np.float32(0.0))


def otsu_threshold(values: NDArray[Any], bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1] (maximises the between-class variance)."""
    hist, edges = np.histogram(values.ravel(), bins=bins, range=(0.0, 1.0))
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


def tissue_mask(rgb: NDArray[Any], min_saturation: float = MIN_SATURATION) -> NDArray[Any]:
    """bool [h, w]: True where there is tissue."""
    sat = saturation(rgb)
    thr = max(otsu_threshold(sat), min_saturation)
    return sat > thr


def area_fractions(mask: NDArray[Any], boxes: NDArray[Any]) -> NDArray[Any]:
    """Fraction of True pixels in each box [n, 4] = (x0, y0, x1, y1) in mask pixels (clipped).

    Uses an integral image, so any number of boxes costs O(mask + boxes).
    """
    h, w = mask.shape
    integral = np.zeros((h + 1, w + 1), dtype=np.int64)
    integral[1:, 1:] = np.cumsum(np.cumsum(mask.astype(np.int64), axis=0), axis=1)
    x0 = np.clip(boxes[:, 0], 0, w)
    y0 = np.clip(boxes[:, 1], 0, h)
    x1 = np.clip(boxes[:, 2], 0, w)
    y1 = np.clip(boxes[:, 3], 0, h)
    x1 = np.maximum(x1, x0)
    y1 = np.maximum(y1, y0)
    inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    area = (x1 - x0) * (y1 - y0)
    return np.where(area > 0, inside / np.maximum(area, 1), 0.0)
