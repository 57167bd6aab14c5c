"""A heatmap figure a pathologist can read: the map beside a legend panel.

The map is the tissue thumbnail with tile scores alpha-blended over the tissue tiles only
(background stays as scanned). The panel holds the title (gene set, method, model version,
slide id, SYNTHETIC where it applies), a vertical colour bar with its units and ticks, and a
legend line for the outlined regions. The same texts go into the PNG's text chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from numpy.typing import NDArray
    from PIL import Image

__all__ = ["REFERENCE_UNITS", "UNITS", "Legend", "compose", "percentiles", "png_info"]

UNITS = "percentile of this slide's tiles"
REFERENCE_UNITS = "percentile vs the reference cohort"
PANEL_BG = (255, 255, 255)
TEXT = (20, 20, 20)


@dataclass(frozen=True)
class Legend:
    """What the panel says; `lines` are drawn in order under the title."""

    title: str
    units: str = UNITS
    lines: tuple[str, ...] = ()
    ticks: tuple[int, ...] = (0, 25, 50, 75, 100)
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Layout:
    """Where things landed (px, in the composed image): for tests and callers."""

    map_box: tuple[int, int, int, int]
    colour_bar: tuple[int, int, int, int]  # left, top, right, bottom; top = 100th percentile


def percentiles(values: NDArray[Any]) -> NDArray[Any]:
    """Rank-based percentile in [0, 100] of each finite value among the finite values."""
    import numpy as np

    vals = np.asarray(values, dtype=np.float64).reshape(-1)
    out = np.full(vals.shape, np.nan)
    finite = np.isfinite(vals)
    n = int(finite.sum())
    if n == 1:
        out[finite] = 50.0
    elif n > 1:
        from scipy.stats import rankdata

        out[finite] = (rankdata(vals[finite]) - 1) / (n - 1) * 100.0
    return out


def _font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def compose(map_img: Image.Image, legend: Legend) -> tuple[Image.Image, Layout]:
    """The map on the left, the legend panel on the right, on a white canvas."""
    import numpy as np
    from PIL import Image, ImageDraw

    from histoprompt.client.heatmap_render import colormap

    w, h = map_img.size
    fs = max(11, min(22, h // 28))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    texts = [(legend.title, int(fs * 1.2)), (legend.units, fs)] + [(t, fs) for t in legend.lines]
    widest = max(measure.textlength(t, font=_font(size)) for t, size in texts)
    panel_w = max(fs * 8, int(widest) + 2 * fs)
    height = max(h, fs * 24)
    img = Image.new("RGB", (w + panel_w, height), PANEL_BG)
    img.paste(map_img.convert("RGB"), (0, 0))
    draw = ImageDraw.Draw(img)
    x0, y = w + fs, fs
    draw.text((x0, y), legend.title, fill=TEXT, font=_font(int(fs * 1.2)))
    y += int(fs * 1.9)
    for line in legend.lines:
        draw.text((x0, y), line, fill=TEXT, font=_font(fs))
        y += int(fs * 1.4)
    y += fs // 2
    draw.text((x0, y), legend.units, fill=TEXT, font=_font(fs))
    y += int(fs * 1.6)
    bar_h = max(60, height - y - fs * 2)
    bar = (x0, y, x0 + fs * 2, y + bar_h)
    ramp = colormap(np.linspace(1.0, 0.0, bar_h))
    strip = np.repeat(ramp[:, None, :], bar[2] - bar[0], axis=1)
    img.paste(Image.fromarray(np.ascontiguousarray(strip)), (bar[0], bar[1]))
    draw.rectangle((bar[0] - 1, bar[1] - 1, bar[2], bar[3]), outline=TEXT)
    for tick in legend.ticks:
        ty = bar[3] - 1 - round(tick / 100 * (bar_h - 1))
        draw.line((bar[2], ty, bar[2] + fs // 2, ty), fill=TEXT)
        draw.text((bar[2] + fs, ty - fs // 2), f"{tick}", fill=TEXT, font=_font(fs))
    return img, Layout(map_box=(0, 0, w, h), colour_bar=bar)


def png_info(legend: Legend, layout: Layout) -> Any:
    """PNG text chunks: Title, Units, Legend lines, MapBox and ColourBar (left,top,right,
    bottom px) and any extra key/values."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Title", legend.title)
    info.add_text("Units", legend.units)
    info.add_text("Legend", "\n".join(legend.lines))
    info.add_text("MapBox", ",".join(map(str, layout.map_box)))
    info.add_text("ColourBar", ",".join(map(str, layout.colour_bar)))
    for key, value in legend.extra.items():
        info.add_text(key, value)
    return info
