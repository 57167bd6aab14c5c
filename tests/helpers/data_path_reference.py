"""The data path's parts as they were before issue 15's CPU work, for the tests that check
the faster parts give the same results."""

from __future__ import annotations

from typing import Any

import numpy as np

from histoprompt.core.modelspec import EncoderSpec
from histoprompt.wsi import tissue

NULL_SPEC = EncoderSpec(
    name="null",
    tile_px=224,
    input_px=224,
    target_mpp=0.5,
    embed_dim=16,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
)
"""The data-path benchmark's null encoder: 224 px tiles at 0.5 um/px."""


def reference_mask(rgb: Any) -> Any:
    """The per-pixel float formula tissue_mask replaced."""
    sat = tissue.saturation(rgb)
    return sat > max(tissue.otsu_threshold(sat), tissue.MIN_SATURATION)


def reference_fractions(mask: Any, boxes: Any) -> Any:
    """The whole integral image, as area_fractions computed it before."""
    h, w = mask.shape
    integral = np.zeros((h + 1, w + 1), dtype=np.int64)
    integral[1:, 1:] = np.cumsum(np.cumsum(mask.astype(np.int64), axis=0), axis=1)
    x0, y0 = np.clip(boxes[:, 0], 0, w), np.clip(boxes[:, 1], 0, h)
    x1 = np.maximum(np.clip(boxes[:, 2], 0, w), x0)
    y1 = np.maximum(np.clip(boxes[:, 3], 0, h), y0)
    inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    area = (x1 - x0) * (y1 - y0)
    return np.where(area > 0, inside / np.maximum(area, 1), 0.0)
