"""Heatmap PNGs: per-tile values over the slide thumbnail, at the slide's aspect ratio.

No matplotlib: a five-stop viridis ramp is interpolated with numpy and blended with Pillow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from numpy.typing import NDArray
    from PIL import Image

__all__ = ["SlideGeometry", "colormap", "grid_step", "render_heatmap"]

# viridis at 0, .25, .5, .75, 1
_STOPS = (
    (68, 1, 84),
    (59, 82, 139),
    (33, 145, 140),
    (94, 201, 98),
    (253, 231, 37),
)


@dataclass(frozen=True)
class SlideGeometry:
    """Level-0 width and height in pixels, and where they came from."""

    width: int
    height: int
    source: str


def colormap(values: NDArray[Any]) -> NDArray[Any]:
    """uint8 RGB [n, 3] for values in [0, 1]."""
    import numpy as np

    stops = np.asarray(_STOPS, dtype=np.float64)
    pos = np.clip(values, 0.0, 1.0) * (len(stops) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(stops) - 2)
    frac = (pos - lo)[:, None]
    rgb = stops[lo] * (1 - frac) + stops[lo + 1] * frac
    return np.asarray(rgb.round(), dtype=np.uint8)


def grid_step(tiles: pd.DataFrame) -> int:
    """The tile grid's step in level-0 px: the smallest gap between distinct x (or y)."""
    import numpy as np

    steps: list[int] = []
    for col in ("x", "y"):
        uniq = np.unique(tiles[col].to_numpy())
        if len(uniq) > 1:
            steps.append(int(np.diff(uniq).min()))
    return min(steps) if steps else 0


def render_heatmap(
    tiles: pd.DataFrame,
    values: NDArray[Any],
    geometry: SlideGeometry,
    thumbnail: Image.Image | None,
    max_side: int = 1024,
    alpha: float = 0.55,
    value_range: tuple[float, float] | None = None,
) -> Image.Image:
    """An RGB image of the slide's aspect ratio, tiles coloured by `values` scaled to
    `value_range` (default: their min and max); only tiles are coloured, alpha-blended
    over the thumbnail, so tissue stays visible and background stays as scanned."""
    import numpy as np
    from PIL import Image, ImageDraw

    scale = max_side / max(geometry.width, geometry.height)
    size = (max(1, round(geometry.width * scale)), max(1, round(geometry.height * scale)))
    if thumbnail is not None:
        base = thumbnail.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    else:
        base = Image.new("RGB", size, (240, 240, 240))
    vals = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = np.isfinite(vals)
    lo, hi = (float(vals[finite].min()), float(vals[finite].max())) if finite.any() else (0, 1)
    if value_range is not None:
        lo, hi = value_range
    norm = (vals - lo) / (hi - lo) if hi > lo else np.full_like(vals, 0.5)
    colours = colormap(np.nan_to_num(norm, nan=0.0))
    step = grid_step(tiles) or max(geometry.width, geometry.height)
    overlay = Image.new("RGB", size, (0, 0, 0))
    mask = Image.new("L", size, 0)
    draw_o, draw_m = ImageDraw.Draw(overlay), ImageDraw.Draw(mask)
    xs, ys = tiles["x"].to_numpy(), tiles["y"].to_numpy()
    for x, y, rgb, ok in zip(xs, ys, colours, finite, strict=True):
        if not ok:
            continue
        box = (
            int(x * scale),
            int(y * scale),
            max(int(x * scale), int((x + step) * scale) - 1),
            max(int(y * scale), int((y + step) * scale) - 1),
        )
        draw_o.rectangle(box, fill=(int(rgb[0]), int(rgb[1]), int(rgb[2])))
        draw_m.rectangle(box, fill=int(255 * alpha))
    return Image.composite(overlay, base, mask)
