"""SVS / pyramidal TIFF: tiffslide over the ranged-read file object; cuCIM when installed
(over S3 through histoprompt.wsi.rangecache's sparse local file).

Only the pyramid levels are read; tiffslide exposes label and macro images as separate
associated images, which this module never touches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from histoprompt.core.units import Mpp
from histoprompt.wsi.errors import SlideError, parse_guard
from histoprompt.wsi.limits import ReadLimits
from histoprompt.wsi.ranged import RangedFile
from histoprompt.wsi.slide import BACKGROUND, Level, Region, paste


class TiffSlideReader:
    """tiffslide (tifffile + zarr) reading tiles through RangedFile, so no full download."""

    format = "tiff"

    def __init__(self, fileobj: RangedFile, limits: ReadLimits) -> None:
        import tiffslide

        # tifffile parses lazily: a corrupt IFD raises (any type) when a property is first
        # read, so every header read happens here, inside the guard.
        with parse_guard("TIFF does not open", "corrupt_tiff"):
            self._slide: Any = tiffslide.TiffSlide(fileobj)
            props = dict(self._slide.properties)
            dims = [(int(w), int(h)) for w, h in self._slide.level_dimensions]
            self._ds = [float(d) for d in self._slide.level_downsamples]
            series = self._slide.ts_tifffile.series[props["tiffslide.series-index"]]
            pages = [_PageShape.of(level.keyframe) for level in series.levels]
        if not dims or len(dims) != len(self._ds):
            raise SlideError("TIFF has no pyramid levels", code="corrupt_tiff")
        _check_sizes(dims, pages, limits)
        mpp0 = props.get("tiffslide.mpp-x")
        if not mpp0 and not limits.require_mpp:
            mpp0 = 0.0  # unknown: fine for geometry and thumbnails, never for tiling
        elif not mpp0:
            raise SlideError("TIFF has no microns-per-pixel metadata", code="no_mpp")
        try:
            self.levels = [
                Level(w, h, Mpp(float(mpp0) * ds))
                for (w, h), ds in zip(dims, self._ds, strict=True)
            ]
        except (TypeError, ValueError) as err:
            raise SlideError("TIFF has a bad microns-per-pixel value", code="no_mpp") from err

    def read_regions(
        self, level: int, regions: Sequence[Region], cache: bool = True
    ) -> list[NDArray[Any]]:
        out = []
        lw, lh = self.levels[level].width, self.levels[level].height
        for reg in regions:
            canvas = np.full((reg.h, reg.w, 3), BACKGROUND, dtype=np.uint8)
            x0, y0 = max(reg.x, 0), max(reg.y, 0)
            x1, y1 = min(reg.x + reg.w, lw), min(reg.y + reg.h, lh)
            if x0 < x1 and y0 < y1:
                loc = (int(round(x0 * self._ds[level])), int(round(y0 * self._ds[level])))
                with parse_guard("TIFF tile does not read", "corrupt_frame"):
                    arr = self._slide.read_region(loc, level, (x1 - x0, y1 - y0), as_array=True)
                paste(canvas, _rgb(np.asarray(arr), y1 - y0, x1 - x0), x0 - reg.x, y0 - reg.y)
            out.append(canvas)
        return out

    def close(self) -> None:
        self._slide.close()


@dataclass(frozen=True)
class _PageShape:
    """What a level's first page says of the arrays its reads allocate."""

    samples: int
    itemsize: int
    chunk_elements: int

    @classmethod
    def of(cls, page: Any) -> _PageShape:
        chunk = math.prod(int(n) for n in page.chunks)  # int(): corrupt tags read as tuples
        return cls(int(page.samplesperpixel), int(page.dtype.itemsize), chunk)


def _rgb(arr: NDArray[Any], h: int, w: int) -> NDArray[Any]:
    """A region as uint8 [h, w, 3]: grey (with or without alpha) replicated, RGBA cut to RGB;
    any other shape is a corrupt tile (a damaged IFD can describe 2 or 0 samples)."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[:2] != (h, w) or arr.shape[2] not in (1, 2, 3, 4):
        raise SlideError(f"TIFF region reads as {arr.shape}, not {h}x{w}", code="corrupt_frame")
    if arr.shape[2] < 3:
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    return arr[:, :, :3]


def _check_sizes(dims: list[tuple[int, int]], pages: list[_PageShape], limits: ReadLimits) -> None:
    """Decompression-bomb guard before any pixel is read: every level within max_pixels (a
    corrupt IFD can make a coarser level larger than level 0), 8-bit samples, at most four
    per pixel, and every tile (or strip) within max_frame_pixels."""
    for i, (w, h) in enumerate(dims):
        if w <= 0 or h <= 0:
            raise SlideError(f"TIFF level {i} is empty", code="corrupt_tiff")
        if w * h > limits.max_pixels:
            raise SlideError(
                f"slide is {w}x{h} px, over the limit of {limits.max_pixels} px", code="too_large"
            )
    for page in pages:
        if page.itemsize != 1 or not 1 <= page.samples <= 4:
            raise SlideError(
                f"TIFF has {page.samples} samples of {8 * page.itemsize} bits; 8-bit RGB(A) or "
                "grey is supported",
                code="unsupported",
            )
        if page.chunk_elements > limits.max_frame_pixels * page.samples:
            raise SlideError(
                f"a TIFF tile or strip of {page.chunk_elements} values is over the limit of "
                f"{limits.max_frame_pixels} px",
                code="too_large",
            )


class CucimReader:
    """cuCIM on GPU nodes (`histoprompt-wsi[gpu]`); it needs a local path. `prepare(level,
    regions)` runs before each read: over S3 it is TiffRangeCache.ensure_regions, which
    fetches the tiles those regions cover into the sparse local file cuCIM reads."""

    format = "tiff"

    def __init__(
        self, path: str, prepare: Callable[[int, Sequence[Region]], object] | None = None
    ) -> None:
        self._prepare = prepare
        try:
            from cucim import CuImage
        except ImportError as err:
            raise ImportError(
                "cuCIM is not installed: pip install 'histoprompt-ingest[gpu]'"
            ) from err
        self._img: Any = CuImage(path)
        res = self._img.resolutions
        spacing = self._img.spacing()
        mpp0 = float(spacing[0]) if spacing else 0.0
        if not mpp0:
            raise SlideError("TIFF has no microns-per-pixel metadata", code="no_mpp")
        self.levels = [
            Level(int(w), int(h), Mpp(mpp0 * float(ds)))
            for (w, h), ds in zip(res["level_dimensions"], res["level_downsamples"], strict=True)
        ]
        self._ds = list(res["level_downsamples"])

    def read_regions(
        self, level: int, regions: Sequence[Region], cache: bool = True
    ) -> list[NDArray[Any]]:
        if self._prepare is not None:
            self._prepare(level, regions)
        out = []
        for reg in regions:
            loc = (int(reg.x * self._ds[level]), int(reg.y * self._ds[level]))
            arr = np.asarray(self._img.read_region(loc, (reg.w, reg.h), level))[..., :3]
            out.append(np.ascontiguousarray(arr))
        return out

    def close(self) -> None:
        self._img.close()


def cucim_available() -> bool:
    try:
        import cucim  # noqa: F401
    except ImportError:
        return False
    return True
