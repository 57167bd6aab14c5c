"""SVS / pyramidal TIFF: tiffslide over the ranged-read file object; cuCIM when installed.

Only the pyramid levels are read; tiffslide exposes label and macro images as separate
associated images, which this module never touches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from histoprompt.core.units import Mpp
from histoprompt.wsi.errors import SlideError
from histoprompt.wsi.ranged import RangedFile
from histoprompt.wsi.slide import BACKGROUND, Level, Region, paste


class TiffSlideReader:
    """tiffslide (tifffile + zarr) reading tiles through RangedFile, so no full download."""

    format = "tiff"

    def __init__(self, fileobj: RangedFile, max_pixels: int, require_mpp: bool = True) -> None:
        import tiffslide

        try:
            self._slide: Any = tiffslide.TiffSlide(fileobj)
        except Exception as err:  # tifffile raises many types on corrupt files
            raise SlideError(
                f"TIFF does not open: {type(err).__name__}", code="corrupt_tiff"
            ) from err
        props = self._slide.properties
        mpp0 = props.get("tiffslide.mpp-x")
        if not mpp0 and not require_mpp:
            mpp0 = 0.0  # unknown: fine for geometry and thumbnails, never for tiling
        elif not mpp0:
            raise SlideError("TIFF has no microns-per-pixel metadata", code="no_mpp")
        w0, h0 = self._slide.dimensions
        if w0 * h0 > max_pixels:
            raise SlideError(
                f"slide is {w0}x{h0} px, over the limit of {max_pixels} px", code="too_large"
            )
        self.levels = [
            Level(int(w), int(h), Mpp(float(mpp0) * float(ds)))
            for (w, h), ds in zip(
                self._slide.level_dimensions, self._slide.level_downsamples, strict=True
            )
        ]
        self._ds = list(self._slide.level_downsamples)

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
                try:
                    arr = self._slide.read_region(loc, level, (x1 - x0, y1 - y0), as_array=True)
                except Exception as err:
                    raise SlideError(
                        f"TIFF tile does not read: {type(err).__name__}", code="corrupt_frame"
                    ) from err
                paste(canvas, np.asarray(arr)[..., :3], x0 - reg.x, y0 - reg.y)
            out.append(canvas)
        return out

    def close(self) -> None:
        self._slide.close()


class CucimReader:
    """cuCIM on GPU nodes (`histoprompt-ingest[gpu]`); it needs a local path."""

    format = "tiff"

    def __init__(self, path: str) -> None:
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
