"""Slide geometry and a thumbnail from the slide's source object in S3 (ranged reads only).

The slide is opened by histoprompt.wsi, the reader ingest uses (DICOM-WSI series or instance,
SVS/TIFF): level 0 gives the geometry, the smallest level the thumbnail. Whatever cannot be
read falls back to the extent of the tile grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from histoprompt.client.heatmap_render import SlideGeometry, grid_step

if TYPE_CHECKING:
    import pandas as pd
    from minio import Minio
    from PIL import Image

    from histoprompt.core.schemas import SourceRef

__all__ = ["slide_view"]

_MAX_THUMB_PIXELS = 32 * 1024 * 1024


@dataclass(frozen=True)
class _SourceObject:
    bucket: str
    key: str

    @property
    def kind(self) -> Literal["series", "single"]:
        from histoprompt.core import names

        return "series" if self.key.rsplit("/", 1)[-1] == names.SERIES_MANIFEST else "single"


def _view(client: Minio, source: SourceRef) -> tuple[SlideGeometry, Image.Image | None]:
    from PIL import Image

    from histoprompt.wsi.limits import ReadLimits
    from histoprompt.wsi.slide import Region
    from histoprompt.wsi.sources import open_slide

    limits = ReadLimits(require_mpp=False, tiff_backend="tiffslide")
    with open_slide(client, _SourceObject(source.bucket, source.key), limits) as opened:
        reader = opened.reader
        level0, last = reader.levels[0], reader.levels[-1]
        what = "source DICOM" if reader.format.startswith("dicom") else "source TIFF"
        geom = SlideGeometry(level0.width, level0.height, what)
        if last.width * last.height > _MAX_THUMB_PIXELS:
            return geom, None
        (pixels,) = reader.read_regions(
            len(reader.levels) - 1, [Region(0, 0, last.width, last.height)], cache=False
        )
        return geom, Image.fromarray(pixels[..., :3])


def grid_geometry(tiles: pd.DataFrame) -> SlideGeometry:
    step = grid_step(tiles) or 1
    return SlideGeometry(
        int(tiles["x"].max()) + step, int(tiles["y"].max()) + step, "tile grid extent"
    )


def slide_view(
    client: Minio, source: SourceRef, tiles: pd.DataFrame
) -> tuple[SlideGeometry, Image.Image | None]:
    """Geometry and thumbnail for `source`; falls back to the tile grid."""
    try:
        return _view(client, source)
    except Exception:  # noqa: BLE001 - the source may be gone or unreadable; still draw
        return grid_geometry(tiles), None
